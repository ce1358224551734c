"""Spike alerts in the running dashboard: label records in, alerts out on MQTT.

``dashboard serve`` and ``dashboard collect`` hand every label record to
:meth:`AlertMonitor.add` (paho's thread: a dict update). A ticker thread moves the counts
into the detector (dashboard/alerts.py, docs/alerts.md) every few seconds and publishes:

* ``repedge/alerts/<entity>`` (retained, QoS 1): the entity's alert state, ``none`` /
  ``open`` / ``closed``, with the alert's start, end, size and evidence counts, and the
  last hour's related and negative counts and share (what Home Assistant's sensors show).
  Sent when an alert opens or closes, and otherwise at most once a minute per entity.
* ``repedge/alerts/<entity>/events`` (QoS 1, not retained): one message as an alert opens
  and one as it closes.
* Home Assistant discovery (retained), once per entity: a ``problem`` binary_sensor that is
  on while the entity's alert is open, and sensors for its negative share and volume of the
  last hour, under ``homeassistant/<component>/repedge_alerts/...``.

Which entities. With ``entities`` given (``--alert-entity``), only those are watched; else
the first ``max_entities`` entities seen, so a feed of ever new names cannot grow the
topics, the discovery configs or memory without bound (the rest are counted, not watched).

Which time. Records are counted in the minute of their event time (``created_at``, else
the node's ``timestamp``; dashboard.history.event_time). The detector's clock is the
newest event time seen, or the wall clock when that is within ``LIVE_SLACK_S`` of it (a
live feed), so alerts of a live entity close on time even when its tweets stop, and a
replayed year is judged in its own time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from common import topics
from common.hass import object_id
from common.timestamps import to_wire
from dashboard.alerts import MINUTE, Alert, AlertEvent, Rule, make_detector
from dashboard.history import event_time

log = logging.getLogger("repedge.dashboard")

ALERTS = topics.ALERTS
DEFAULT_MAX_ENTITIES = 100
# Counted negative: a related tweet whose negative score reaches this (docs/alerts.md).
DEFAULT_NEGATIVE_BAR = 0.2
LIVE_SLACK_S = 15 * 60
STATUS_EVERY_S = 60.0
HA_NODE = "repedge_alerts"  # the discovery "node id" level; the dashboard role may write it

Publish = Callable[[str, str, bool], None]

# An entity name as one MQTT topic level: no '/', '+', '#' or control characters.
_UNSAFE_LEVEL = re.compile(r"[/+#\x00-\x1f\x7f]")


def entity_level(entity: str) -> str:
    """``entity`` as a topic level; one that needed cleaning gets 8 hex digits of its
    sha256 too, so two names never share a topic."""
    cleaned = _UNSAFE_LEVEL.sub("_", entity)
    if cleaned == entity and entity and not entity.startswith("$"):
        return entity
    digest = hashlib.sha256(entity.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned.lstrip('$') or '_'}_{digest}"


def status_topic(entity: str) -> str:
    return f"{ALERTS}/{entity_level(entity)}"


def events_topic(entity: str) -> str:
    return f"{status_topic(entity)}/events"


def _iso(epoch_s: int | None) -> str | None:
    return None if epoch_s is None else to_wire(datetime.fromtimestamp(epoch_s, UTC))


def alert_fields(alert: Alert | None) -> dict[str, Any]:
    """The alert part of a status or event message (times as wire timestamps)."""
    if alert is None:
        return {"state": "none", "start": None, "end": None, "size": None, "evidence": None}
    body = alert.to_json()
    body["start"], body["end"] = _iso(alert.start), _iso(alert.end)
    body["evidence"]["at"] = _iso(alert.evidence.at)
    body.pop("entity")
    return body


class AlertMonitor:
    def __init__(
        self,
        rule: Rule | None = None,
        entities: Iterable[str] | None = None,
        max_entities: int = DEFAULT_MAX_ENTITIES,
        negative_bar: float | None = DEFAULT_NEGATIVE_BAR,
        publish: Publish | None = None,
        ha_discovery: bool = True,
        clock: Callable[[], float] = time.time,
        tick_interval: float = 5.0,
    ) -> None:
        self.detector = make_detector(rule)
        self.configured = list(dict.fromkeys(entities)) if entities else None
        self.max_entities = len(self.configured) if self.configured else max_entities
        self.negative_bar = negative_bar
        self.publish = publish
        self.ha_discovery = ha_discovery
        self.clock = clock
        self.tick_interval = tick_interval
        self.ignored_entities = 0  # records of entities beyond the cap or not configured
        self.published = 0
        self._watched: dict[str, None] = dict.fromkeys(self.configured or ())
        self._pending: dict[tuple[str, int], list[int]] = {}
        self._watermark: float | None = None
        self._last_status: dict[str, float] = {}
        self._announced: set[str] = set()
        self._events: list[dict[str, Any]] = []  # the latest, for the views
        self._view: dict[str, Any] = {"open": [], "recent": [], "watched": 0, "ignored_records": 0}
        self.on_change: Callable[[], None] | None = None  # the views' cue to redraw
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-monitor", daemon=True)

    # -- input (paho's thread) -------------------------------------------------------------

    def add(self, entity: str, record: dict[str, Any]) -> None:
        """Count one label record of ``entity``."""
        if record.get("related") is False:
            return
        with self._lock:
            if entity not in self._watched:
                if self.configured is not None or len(self._watched) >= self.max_entities:
                    self.ignored_entities += 1
                    return
                self._watched[entity] = None
            when, believed = event_time(record, self.clock())
            if believed:
                self._watermark = when if self._watermark is None else max(self._watermark, when)
            key = (entity, int(when // MINUTE) * MINUTE)
            counts = self._pending.setdefault(key, [0, 0])
            counts[0] += self._is_negative(record)
            counts[1] += 1

    def _is_negative(self, record: dict[str, Any]) -> bool:
        if self.negative_bar is None:
            return record.get("label") == "negative"
        scores = record.get("scores")
        score = scores.get("negative") if isinstance(scores, dict) else None
        if isinstance(score, int | float) and not isinstance(score, bool):
            return score >= self.negative_bar
        return record.get("label") == "negative"

    # -- evaluation (the ticker's thread) ----------------------------------------------------

    def now(self) -> float | None:
        wall = self.clock()
        mark = self._watermark
        if mark is None:
            return None
        return wall if wall - mark <= LIVE_SLACK_S else mark

    def tick(self) -> list[AlertEvent]:
        """Move pending counts into the detector, advance it, publish what changed."""
        with self._tick_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
                watched = list(self._watched)
                now = self.now()
            for (entity, minute), (negative, related) in sorted(pending.items()):
                self.detector.add(entity, minute, negative, related)
            if now is None:
                return []
            events = self.detector.advance(int(now))
            for entity in watched:
                self._announce(entity)
            changed = {e.alert.entity for e in events}
            for event in events:
                self._send(events_topic(event.alert.entity), self._event_body(event), False)
                self._remember(event)
                log.warning(
                    "alert %s for %s: %s",
                    event.kind,
                    event.alert.entity,
                    json.dumps(alert_fields(event.alert)["evidence"]),
                )
            if events:
                self._refresh_view()
                if self.on_change is not None:
                    self.on_change()
            wall = self.clock()
            for entity in watched:
                due = wall - self._last_status.get(entity, -STATUS_EVERY_S) >= STATUS_EVERY_S
                if entity in changed or due:
                    self._send(status_topic(entity), json.dumps(self.status(entity, now)), True)
                    self._last_status[entity] = wall
            return events

    def status(self, entity: str, now: float | None = None) -> dict[str, Any]:
        """The retained message of one entity."""
        now = self.now() if now is None else now
        at = int(now) if now is not None else 0
        negative, related = self.detector.counts(entity, at - 3600, at)
        return {
            "entity": entity,
            **alert_fields(self.detector.alerts().get(entity)),
            "last_hour": {
                "related": related,
                "negative": negative,
                # null without tweets: Home Assistant shows unknown, not a made-up 0 %.
                "negative_share": round(negative / related, 4) if related else None,
            },
            "updated": _iso(at) if now is not None else None,
        }

    def _event_body(self, event: AlertEvent) -> str:
        return json.dumps(
            {"event": event.kind, "entity": event.alert.entity, **alert_fields(event.alert)}
        )

    def _remember(self, event: AlertEvent) -> None:
        with self._lock:
            self._events.append(
                {"event": event.kind, "entity": event.alert.entity, **alert_fields(event.alert)}
            )
            del self._events[:-20]

    def _send(self, topic: str, payload: str, retain: bool) -> None:
        if self.publish is None:
            return
        try:
            self.publish(topic, payload, retain)
            self.published += 1
        except Exception:  # a broker hiccup must not stop the ticker
            log.exception("could not publish %s", topic)

    def _announce(self, entity: str) -> None:
        if not self.ha_discovery or entity in self._announced or self.publish is None:
            return
        self._announced.add(entity)
        for topic, config in discovery_configs(entity):
            self._send(topic, json.dumps(config), True)

    def rediscover(self) -> None:
        """Home Assistant (re)started (``online`` on homeassistant/status): send the
        discovery configs again at the next tick, in case they were removed."""
        self._announced = set()

    # -- views --------------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """What the web page and ``top`` show: open alerts, then the latest events. Any
        thread may call it: it is a copy made by the ticker."""
        with self._lock:
            return {
                **self._view,
                "watched": len(self._watched),
                "ignored_records": self.ignored_entities,
            }

    def _refresh_view(self) -> None:
        alerts = self.detector.alerts()  # the ticker's own thread: the detector is its
        open_now = [
            {"entity": e, **alert_fields(a)} for e, a in alerts.items() if a.state == "open"
        ]
        with self._lock:
            self._view = {
                "open": sorted(open_now, key=lambda a: a["start"] or ""),
                "recent": list(reversed(self._events))[:10],
            }

    # -- thread ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.tick()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_interval):
            try:
                self.tick()
            except Exception:  # keep watching: one bad tick must not end the alerts
                log.exception("alert tick failed")


def discovery_configs(
    entity: str, prefix: str = topics.HA_DISCOVERY_PREFIX
) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant discovery for one entity: (topic, config) pairs."""
    obj = object_id(entity).removeprefix("repedge_")
    state = status_topic(entity)
    device = {
        "identifiers": [HA_NODE],
        "name": "repedge brand alerts",
        "manufacturer": "repedge",
        "model": "dashboard alerts",
    }
    common = {"state_topic": state, "device": device}
    spike = {
        **common,
        "name": f"{entity} negative spike",
        "unique_id": f"{HA_NODE}_{obj}_spike",
        "object_id": f"{HA_NODE}_{obj}_spike",
        "device_class": "problem",
        "value_template": "{{ 'ON' if value_json.state == 'open' else 'OFF' }}",
        "json_attributes_topic": state,
        "json_attributes_template": "{{ {'start': value_json.start, 'size': value_json.size,"
        " 'evidence': value_json.evidence} | tojson }}",
    }
    share = {
        **common,
        "name": f"{entity} negative share (1 h)",
        "unique_id": f"{HA_NODE}_{obj}_negative_share",
        "object_id": f"{HA_NODE}_{obj}_negative_share",
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "icon": "mdi:emoticon-sad-outline",
        # A null share (no tweets) renders "None": Home Assistant's "unknown".
        "value_template": "{{ (value_json.last_hour.negative_share * 100) | round(1)"
        " if value_json.last_hour.negative_share is not none else None }}",
    }
    volume = {
        **common,
        "name": f"{entity} tweets (1 h)",
        "unique_id": f"{HA_NODE}_{obj}_volume",
        "object_id": f"{HA_NODE}_{obj}_volume",
        "unit_of_measurement": "tweets",
        "state_class": "measurement",
        "icon": "mdi:message-text-outline",
        "value_template": "{{ value_json.last_hour.related }}",
    }
    return [
        (f"{prefix}/binary_sensor/{HA_NODE}/{obj}_spike/config", spike),
        (f"{prefix}/sensor/{HA_NODE}/{obj}_negative_share/config", share),
        (f"{prefix}/sensor/{HA_NODE}/{obj}_volume/config", volume),
    ]
