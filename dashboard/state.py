"""What the dashboard knows: nodes, reputation per entity, errors; bounded, in memory.

Everything here comes from MQTT, so nothing is trusted: payloads may be malformed
JSON, have unknown or missing fields, or carry odd strings. :meth:`DashboardState.ingest`
never raises on bad input; it counts what it had to ignore. The live minute buckets use
the dashboard's receipt time (one clock for every node, and a redelivered old record
still shows up where it arrived); the persisted history (:mod:`dashboard.history`, fed
through ``recorder``) buckets by the tweet's own time instead. A record whose
``timestamp`` is more than :data:`LIVE_WINDOW_S` off the dashboard's clock (redelivered
after an outage, or from a node with a broken clock) is counted as late or ahead and
leaves the ingest lag alone, so one old batch cannot show "ingest lag 1971 s".

Two views of the state serve the pages: :meth:`snapshot` (everything, for a late
browser or ``dashboard top``) and :meth:`take_delta` (only what changed since the last
call, for live pushes). Both are plain JSON-ready dicts.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from common import topics as wire
from dashboard.settings import DashboardSettings

if TYPE_CHECKING:
    from dashboard.history import HistoryRecorder

SENTIMENT = "sentiment"  # where tweets without an entity are grouped
STANDARD_LABELS = ("negative", "neutral", "positive")
OTHER = "other"
# Bounds that keep a hostile or buggy publisher from growing memory without limit.
MAX_TEXT = 120  # characters kept of any string from MQTT
MAX_ENTITIES = 200
MAX_NODES = 200
MAX_REASONS = 32
RECENT_ERRORS = 20
# Entities whose alert state is kept (the monitor publishes for at most its own cap).
MAX_ALERT_ENTITIES = 500
LIVE_WINDOW_S = 120.0  # a label timestamp further off than this is not "live" lag


def clip(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A display string from an untrusted value; None for missing."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def number(value: Any) -> float | None:
    """A finite number, or None (bool is an int subclass, and not a measurement)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        as_float = float(value)  # JSON integers are unbounded; 10**400 is no float
    except OverflowError:
        return None
    return as_float if math.isfinite(as_float) else None


def first_number(data: dict[str, Any], *paths: str) -> float | None:
    """The first of dotted ``paths`` that holds a number: flat fields win over nested ones."""
    for path in paths:
        value: Any = data
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        found = number(value)
        if found is not None:
            return found
    return None


def model_of(value: Any) -> dict[str, str | None] | None:
    if not isinstance(value, dict):
        return None
    return {k: clip(value.get(k)) for k in ("name", "version", "variant", "sha256")}


def label_key(value: Any) -> str:
    """Label names the charts know; anything else is counted, as "other"."""
    return value if value in STANDARD_LABELS else OTHER


@dataclass
class NodeCard:
    node_id: str
    state: str = "unknown"
    since: float | None = None  # epoch seconds the state began, as best known
    since_retained: bool = False  # from a retained status: "since" is the publisher's clock
    reason: str | None = None
    model: dict[str, str | None] | None = None
    telemetry: dict[str, float | None] = field(default_factory=dict)
    telemetry_at: float | None = None
    last_event: dict[str, Any] | None = None
    labels: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "state": self.state,
            "since": self.since,
            "since_retained": self.since_retained,
            "reason": self.reason,
            "model": self.model,
            "telemetry": dict(self.telemetry),
            "telemetry_at": self.telemetry_at,
            "last_event": self.last_event,
            "labels": self.labels,
        }


def _empty_split() -> dict[str, dict[str, int]]:
    return {"all": {}, "related": {}, "unrelated": {}}


@dataclass
class EntityView:
    name: str
    recent: deque[dict[str, Any]]
    # epoch minute -> {"all"|"related"|"unrelated": {label: count}}
    minutes: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)
    total: int = 0
    last_seen: float = 0.0

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "minutes": {str(m): b for m, b in self.minutes.items()},
            "recent": list(self.recent),
            "total": self.total,
        }


def parse_iso(value: Any) -> float | None:
    """Epoch seconds of an ISO-8601 timestamp such as the node's ``...Z``; None if not one."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):  # not a date, or out of the clock's range
        return None


class DashboardState:
    """Thread-safe: paho's thread ingests, the web and terminal views read."""

    def __init__(
        self,
        history_minutes: int = DashboardSettings.history,
        recent: int = DashboardSettings.recent,
        clock: Callable[[], float] = time.time,
        recorder: HistoryRecorder | None = None,
    ) -> None:
        self.history_minutes = history_minutes
        self.recorder = recorder  # persists every label record, when history is on
        self.recent = recent
        self.clock = clock
        self.lock = threading.Lock()
        self.nodes: OrderedDict[str, NodeCard] = OrderedDict()
        self.entities: OrderedDict[str, EntityView] = OrderedDict()
        self.error_minutes: dict[int, dict[str, int]] = {}
        self.recent_errors: deque[dict[str, Any]] = deque(maxlen=RECENT_ERRORS)
        self.received = 0
        self.labels_total = 0
        self.errors_total = 0
        self.ignored = 0
        self.last_ignored: str | None = None
        self.last_lag_ms: float | None = None  # receipt time - record timestamp
        self.late_records = 0  # timestamps more than LIVE_WINDOW_S in the past
        self.ahead_records = 0  # ... or in the future
        self._seq = 0  # numbers recent items, so deltas carry only new ones
        self._reasons: set[str] = set()  # error reasons within the history
        self._pruned_minute = 0
        self._dirty_nodes: set[str] = set()
        self._dirty_entities: dict[str, set[int]] = {}
        self._new_recent: dict[str, list[dict[str, Any]]] = {}
        self._dirty_error_minutes: set[int] = set()
        self._new_errors: list[dict[str, Any]] = []
        self._removed_entities: set[str] = set()
        self.broker = ""
        self.broker_connected = False
        self.broker_error: str | None = None
        self._dirty_meta = False
        # Spike alerts per entity as published (retained) on repedge/alerts/<entity> by a
        # dashboard serve or collect (dashboard/alert_monitor.py): what the banners show.
        self.alert_states: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Evaluates the alerts from the label records, when this process does (serve,
        # collect): an AlertMonitor.
        self.alert_monitor: Any = None

    def set_broker(self, url: str, connected: bool, error: str | None = None) -> None:
        """The subscriber's connection, shown so a stale view is never taken for live."""
        with self.lock:
            self.broker, self.broker_connected, self.broker_error = url, connected, error
            self._dirty_meta = True

    # -- ingest ---------------------------------------------------------------------------

    def ingest(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """One MQTT message; unknown topics and bad payloads are counted and ignored."""
        levels = topic.split("/")
        now = self.clock()
        with self.lock:
            self.received += 1
            self._prune(now)
            try:
                if topic == wire.HA_STATUS:
                    # Home Assistant's birth message: the alerts' discovery configs again.
                    if payload.strip() == b"online" and self.alert_monitor is not None:
                        self.alert_monitor.rediscover()
                elif len(levels) >= 3 and levels[-3] == "nodes":
                    self._node_message(levels[-2], levels[-1], payload, retain, now)
                elif levels[-1] == "labels":
                    self._label(_json_object(payload), now)
                elif levels[-1] == "errors":
                    self._error(_json_object(payload), now)
                elif len(levels) >= 2 and levels[-2] == "alerts":
                    self._alert(levels[-1], payload)
                else:
                    self._ignore(f"topic {clip(topic)} is not shown")
            except BadMessage as exc:
                self._ignore(f"{clip(topic)}: {exc}")

    def _alert(self, level: str, payload: bytes) -> None:
        if not payload:  # a cleared retained alert
            self.alert_states.pop(level, None)
            self._dirty_meta = True
            return
        data = _json_object(payload)
        state = data.get("state")
        if state not in ("none", "open", "closed"):
            raise BadMessage("alert without a state of none, open or closed")
        evidence = data.get("evidence") if isinstance(data.get("evidence"), dict) else {}
        self.alert_states[level] = {
            "entity": clip(data.get("entity"), 80) or clip(level, 80),
            "state": state,
            "start": clip(data.get("start"), 40),
            "end": clip(data.get("end"), 40),
            "size": number(data.get("size")),
            "negative": number(evidence.get("negative")),
            "related": number(evidence.get("related")),
            "baseline_share": number(evidence.get("baseline_share")),
        }
        self.alert_states.move_to_end(level)
        while len(self.alert_states) > MAX_ALERT_ENTITIES:
            self.alert_states.popitem(last=False)
        self._dirty_meta = True

    def mark_changed(self) -> None:
        """Something outside the records changed (an alert): send the views a delta."""
        with self.lock:
            self._dirty_meta = True

    def open_alerts(self) -> list[dict[str, Any]]:
        """Entities whose alert is open now, oldest first (for the banners)."""
        with self.lock:
            return self._open_alerts_locked()

    def _open_alerts_locked(self) -> list[dict[str, Any]]:
        found = [a for a in self.alert_states.values() if a["state"] == "open"]
        return sorted(found, key=lambda a: a["start"] or "")

    def _ignore(self, why: str) -> None:
        self.ignored += 1
        self.last_ignored = why

    def _node(self, node_id: str) -> NodeCard:
        node_id = clip(node_id) or "?"
        card = self.nodes.get(node_id)
        if card is None:
            if len(self.nodes) >= MAX_NODES:
                # Offline nodes go first; a full table of online ones drops the oldest.
                victim = next(
                    (k for k, c in self.nodes.items() if c.state != "online"),
                    next(iter(self.nodes)),
                )
                del self.nodes[victim]
            card = self.nodes[node_id] = NodeCard(node_id)
        self._dirty_nodes.add(node_id)
        return card

    def _node_message(
        self, node_id: str, leaf: str, payload: bytes, retain: bool, now: float
    ) -> None:
        if leaf not in ("status", "telemetry", "events"):
            raise BadMessage(f"unknown node topic {clip(leaf)!r}")
        if leaf == "status" and not payload:
            # An empty retained payload clears the topic: the node is gone for good.
            self.nodes.pop(clip(node_id) or "?", None)
            self._dirty_nodes.add(clip(node_id) or "?")
            return
        data = _json_object(payload)
        card = self._node(node_id)
        if isinstance(data.get("model"), dict):
            card.model = model_of(data["model"])
        if leaf == "status":
            state = data.get("state")
            if state not in ("online", "offline"):
                raise BadMessage("status without state online/offline")
            if state != card.state or card.since is None:
                # A live message is news now; a retained one is as old as it says.
                stamp = parse_iso(data.get("timestamp")) if retain else None
                card.since = stamp if stamp is not None else now
                card.since_retained = retain and stamp is not None
            card.state = state
            card.reason = clip(data.get("reason"))
        elif leaf == "telemetry":
            card.telemetry = _telemetry_fields(data)
            card.telemetry_at = now
            events = data.get("provisioning")
            if isinstance(events, list) and events and isinstance(events[-1], dict):
                card.last_event = _event(events[-1])
        else:
            card.last_event = _event(data)

    def _label(self, record: dict[str, Any], now: float) -> None:
        label = record.get("label")
        if not isinstance(label, str):
            raise BadMessage("label record without a label")
        entity = record.get("entity")
        name = clip(entity) if isinstance(entity, str) and entity else SENTIMENT
        view = self._entity(name or SENTIMENT, now)
        related = record.get("related")
        split = None if not isinstance(related, bool) else ("related" if related else "unrelated")
        minute = int(now // 60)
        bucket = view.minutes.setdefault(minute, _empty_split())
        key = label_key(label)
        bucket["all"][key] = bucket["all"].get(key, 0) + 1
        if split:
            bucket[split][key] = bucket[split].get(key, 0) + 1
        view.total += 1
        self.labels_total += 1
        if self.recorder is not None:
            self.recorder.add(view.name, record, key, related if split else None)
        if self.alert_monitor is not None and isinstance(entity, str) and entity:
            self.alert_monitor.add(view.name, record)
        self._dirty_entities.setdefault(view.name, set()).add(minute)

        scores = record.get("scores")
        self._seq += 1
        item = {
            "seq": self._seq,
            "at": now,
            "id": clip(record.get("id"), 40),
            "label": clip(label, 20),
            "scores": (
                {clip(k, 20): number(v) for k, v in list(scores.items())[:5]}
                if isinstance(scores, dict)
                else {}
            ),
            "related": related if isinstance(related, bool) else None,
            "related_score": number(record.get("related_score")),
            "node_id": clip(record.get("node_id"), 60),
            "latency_ms": number(record.get("latency_ms")),
        }
        view.recent.append(item)
        self._new_recent.setdefault(view.name, []).append(item)
        node_id = record.get("node_id")
        if isinstance(node_id, str) and node_id in self.nodes:
            self.nodes[node_id].labels += 1
            self._dirty_nodes.add(node_id)
        stamp = parse_iso(record.get("timestamp"))
        if stamp is not None:
            if now - stamp > LIVE_WINDOW_S:
                self.late_records += 1
            elif stamp - now > LIVE_WINDOW_S:
                self.ahead_records += 1
            else:
                self.last_lag_ms = round((now - stamp) * 1000, 1)

    def _entity(self, name: str, now: float) -> EntityView:
        view = self.entities.get(name)
        if view is None:
            if len(self.entities) >= MAX_ENTITIES:
                oldest = min(self.entities.values(), key=lambda v: v.last_seen)
                del self.entities[oldest.name]
                self._removed_entities.add(oldest.name)
                self._dirty_entities.pop(oldest.name, None)
                self._new_recent.pop(oldest.name, None)
            view = self.entities[name] = EntityView(name, deque(maxlen=self.recent))
            self._removed_entities.discard(name)
        view.last_seen = now
        return view

    def _error(self, record: dict[str, Any], now: float) -> None:
        reason = clip(record.get("reason"), 40) or "unknown"
        minute = int(now // 60)
        bucket = self.error_minutes.setdefault(minute, {})
        if reason not in self._reasons:
            if len(self._reasons) >= MAX_REASONS:
                reason = OTHER
            self._reasons.add(reason)
        bucket[reason] = bucket.get(reason, 0) + 1
        self.errors_total += 1
        self._dirty_error_minutes.add(minute)
        self._seq += 1
        item = {
            "seq": self._seq,
            "at": now,
            "reason": reason,
            "detail": clip(record.get("detail")),
            "id": clip(record.get("id"), 40),
            "node_id": clip(record.get("node_id"), 60),
        }
        self.recent_errors.append(item)
        self._new_errors.append(item)

    def _prune(self, now: float) -> None:
        """Drop minute buckets older than the history (checked once a minute)."""
        minute = int(now // 60)
        if minute == self._pruned_minute:
            return
        self._pruned_minute = minute
        horizon = minute - self.history_minutes
        for view in self.entities.values():
            for m in [m for m in view.minutes if m <= horizon]:
                del view.minutes[m]
        for m in [m for m in self.error_minutes if m <= horizon]:
            del self.error_minutes[m]
        self._reasons = {r for b in self.error_minutes.values() for r in b}

    # -- views ----------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "now": now,
            "horizon_minute": int(now // 60) - self.history_minutes,
            "history_minutes": self.history_minutes,
            "recent": self.recent,
            "received": self.received,
            "labels_total": self.labels_total,
            "errors_total": self.errors_total,
            "ignored": self.ignored,
            "last_ignored": self.last_ignored,
            "lag_ms": self.last_lag_ms,
            "late_records": self.late_records,
            "ahead_records": self.ahead_records,
            "history": self.recorder.status() if self.recorder is not None else None,
            "broker": self.broker,
            "broker_connected": self.broker_connected,
            "broker_error": self.broker_error,
            "alerts": self._open_alerts_locked(),
        }

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            **self._meta(),
            "nodes": [c.view() for c in self.nodes.values()],
            "entities": [v.view() for v in self.entities.values()],
            "errors": {
                "minutes": {str(m): dict(b) for m, b in self.error_minutes.items()},
                "recent": list(self.recent_errors),
            },
        }

    def take_delta(self) -> dict[str, Any] | None:
        """What changed since the previous call; None when nothing did."""
        with self.lock:
            return self._take_delta_locked()

    def _take_delta_locked(self) -> dict[str, Any] | None:
        if not (
            self._dirty_nodes
            or self._dirty_entities
            or self._dirty_error_minutes
            or self._removed_entities
            or self._dirty_meta
        ):
            return None
        nodes = {n: (self.nodes[n].view() if n in self.nodes else None) for n in self._dirty_nodes}
        entities = {}
        for name, minutes in self._dirty_entities.items():
            view = self.entities.get(name)
            if view is None:
                continue
            entities[name] = {
                "minutes": {str(m): view.minutes[m] for m in minutes if m in view.minutes},
                "recent": self._new_recent.get(name, [])[-self.recent :],
                "total": view.total,
            }
        delta = {
            "type": "delta",
            **self._meta(),
            "nodes": nodes,
            "entities": entities,
            "removed_entities": sorted(self._removed_entities),
            "errors": {
                "minutes": {
                    str(m): dict(self.error_minutes[m])
                    for m in self._dirty_error_minutes
                    if m in self.error_minutes
                },
                "recent": self._new_errors[-RECENT_ERRORS:],
            },
        }
        self._dirty_nodes.clear()
        self._dirty_entities.clear()
        self._new_recent.clear()
        self._dirty_error_minutes.clear()
        self._new_errors.clear()
        self._removed_entities.clear()
        self._dirty_meta = False
        return delta

    def snapshot_and_delta(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Atomically: a snapshot for a new viewer, and the pending delta for the others."""
        with self.lock:
            return self._snapshot_locked(), self._take_delta_locked()


class BadMessage(ValueError):
    """A payload the dashboard cannot use; counted, never raised past ingest."""


def _int_or_none(digits: str) -> int | None:
    """Python refuses integer strings of over 4,300 digits (ValueError, CVE-2020-10735):
    such a number from MQTT is no count anyone can show, so it is missing, like a number
    too large for a float, and the rest of the message is still used."""
    try:
        return int(digits)
    except ValueError:
        return None


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload, parse_int=_int_or_none)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadMessage("not JSON") from None
    except RecursionError:
        raise BadMessage("JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise BadMessage("JSON is not an object")
    return data


def _telemetry_fields(data: dict[str, Any]) -> dict[str, float | None]:
    """The numbers a card shows; flat fields (``latency_p99_ms``) or the nested ones."""
    return {
        "tweets_per_s": first_number(data, "tweets_per_s", "throughput_per_s"),
        "p50_ms": first_number(data, "latency_p50_ms", "latency_ms.p50"),
        "p99_ms": first_number(data, "latency_p99_ms", "latency_ms.p99"),
        "queue_depth": first_number(data, "queue_depth"),
        "queue_size": first_number(data, "queue_size"),
        "cpu_percent": first_number(data, "cpu_percent"),
        "rss_bytes": first_number(data, "rss_bytes"),
        "temperature_c": first_number(data, "cpu_temperature_c", "temperature_c"),
        "processed": first_number(data, "processed"),
        "errors": first_number(data, "errors"),
    }


def _event(data: dict[str, Any]) -> dict[str, Any]:
    """A provisioning event, reduced to a few display strings."""
    kind = data.get("event", data.get("type", data.get("kind")))
    skip = ("event", "type", "kind", "timestamp", "time")
    detail = {k: v for k, v in data.items() if k not in skip}
    return {
        "event": clip(kind, 40),
        "timestamp": clip(data.get("timestamp", data.get("time")), 40),
        "detail": clip(detail) if detail else None,
    }
