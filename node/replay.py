"""`node replay`: publish a labelled tweet file in its own time order and spacing.

RepLab and SemEval tweet ids are Twitter snowflakes, so each tweet's creation time is in
its id (edgemodel.splits.tweet_time_ms). Replay sorts the tweets by that time and publishes
them as JSON tweets (``id``, ``text``, ``entity``, ``created_at``) with QoS 1, as a feeder
would, waiting the original gap divided by ``--speed`` between two tweets: months of a
brand pass in minutes, and the dashboard's history and alerts, which bucket by
``created_at``, show them in their own time. No TensorFlow: only the data readers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import paho.mqtt.client as mqtt
import typer

from common.cli import PasswordOption, UsernameOption
from common.endpoint import BrokerEndpoint, EndpointError
from common.mqttclient import new_client
from edgemodel.data import DataError, Example, read_labeled
from edgemodel.splits import tweet_time_ms
from node.event_time import format_utc

log = logging.getLogger("repedge.replay")

# Unacknowledged QoS 1 publishes at a time: enough to keep up at high --speed, bounded so a
# slow broker slows the replay instead of filling memory.
MAX_INFLIGHT = 200


class ReplayError(RuntimeError):
    """The file or the broker cannot be replayed to (one line, for the CLI)."""


@dataclass(frozen=True)
class Timed:
    at_ms: int  # creation time (Unix ms), from the snowflake id
    payload: str


@dataclass(frozen=True)
class Plan:
    tweets: list[Timed]
    skipped_no_time: int  # rows whose id carries no time: they cannot be placed

    @property
    def span_s(self) -> float:
        return (self.tweets[-1].at_ms - self.tweets[0].at_ms) / 1000 if self.tweets else 0.0


def plan(examples: Sequence[Example], entity: str | None = None) -> Plan:
    """The tweets to publish, in time order. ``entity``: with a file that names entities,
    only that entity's tweets; with one that does not (SemEval), the entity of every tweet."""
    named = any(e.entity for e in examples)
    if entity and named:
        known = {e.entity for e in examples}
        if entity not in known:
            raise ReplayError(f"entity {entity!r} is not in the file ({', '.join(sorted(known))})")
    timed, skipped = [], 0
    for e in examples:
        if entity and named and e.entity != entity:
            continue
        at_ms = tweet_time_ms(e.tweet_id)
        if at_ms is None:
            skipped += 1
            continue
        tweet = {
            "id": e.tweet_id,
            "text": e.text,
            "entity": e.entity or entity,
            "created_at": format_utc(datetime.fromtimestamp(at_ms / 1000, UTC)),
        }
        timed.append(Timed(at_ms, json.dumps(tweet, ensure_ascii=False)))
    timed.sort(key=lambda t: t.at_ms)  # stable: a file's order among equal times stays
    return Plan(timed, skipped)


def wall_offsets(tweets: Sequence[Timed], speed: float, max_wait_s: float | None) -> list[float]:
    """Seconds after the start at which each tweet goes out: the original gaps / speed, a
    gap longer than ``max_wait_s`` (after dividing) shortened to it."""
    offsets, now = [], 0.0
    for prev, cur in zip([None, *tweets[:-1]], tweets, strict=True):
        if prev is not None:
            gap = (cur.at_ms - prev.at_ms) / 1000 / speed
            now += gap if max_wait_s is None else min(gap, max_wait_s)
        offsets.append(now)
    return offsets


def publish(
    endpoint: BrokerEndpoint,
    tweets: Sequence[Timed],
    offsets: Sequence[float],
    topic: str,
    connect_timeout_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Publish on schedule with QoS 1; return how many the broker acknowledged."""
    client = new_client(endpoint, logger=log)  # credentials, TLS, failed connects logged
    client.max_inflight_messages_set(MAX_INFLIGHT)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code))
        connected.set()

    client.on_connect = on_connect
    host, port = endpoint.address
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise ReplayError(f"cannot reach the broker at {endpoint.url}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(connect_timeout_s) or refused:
            why = refused[0] if refused else f"no answer in {connect_timeout_s:.0f} s"
            raise ReplayError(f"broker {endpoint.url} refused the connection: {why}")
        start = time.monotonic()
        pending: deque[mqtt.MQTTMessageInfo] = deque()
        acked = 0
        for tweet, offset in zip(tweets, offsets, strict=True):
            delay = start + offset - time.monotonic()
            if delay > 0:
                sleep(delay)
            pending.append(client.publish(topic, tweet.payload, qos=1))
            # Keep the local queue bounded too: wait for the oldest once it is long.
            if len(pending) > 4 * MAX_INFLIGHT:
                acked += _acknowledged(pending.popleft())
        while pending:
            acked += _acknowledged(pending.popleft())
        return acked
    finally:
        client.loop_stop()
        client.disconnect()


def _acknowledged(info: mqtt.MQTTMessageInfo, timeout_s: float = 60.0) -> bool:
    try:
        info.wait_for_publish(timeout=timeout_s)
    except (RuntimeError, ValueError):  # paho: not queued (client gone, queue full)
        return False
    return info.is_published()


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
def replay(
    data: Annotated[
        Path,
        typer.Option(
            help="Labelled tweets: RepLab TSV (entity_id, entity, tweet_id, ...) or SemEval "
            "TSV (tweet_id, label, text); ids must be Twitter snowflakes (they carry the time).",
            exists=True,
            dir_okay=False,
        ),
    ],
    speed: Annotated[
        float, typer.Option(help="Divide the original gaps by this: 3600 plays an hour a second.")
    ] = 1.0,
    entity: Annotated[
        str | None,
        typer.Option(
            help="Only this entity's tweets (RepLab); for a file without entities, the "
            "entity given to every tweet.",
            show_default=False,
        ),
    ] = None,
    broker: Annotated[
        str, typer.Option(help="MQTT broker: mqtt://host:port or mqtts://host:port.")
    ] = "mqtt://localhost:1883",
    topic: Annotated[str, typer.Option(help="Topic the node reads tweets from.")] = (
        "repedge/tweets"
    ),
    max_wait: Annotated[
        float | None,
        typer.Option(
            help="Longest wait between two tweets, in seconds after --speed (quiet weeks "
            "pass quickly). Default: none, the spacing is kept.",
            show_default=False,
        ),
    ] = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    cafile: Annotated[
        Path | None, typer.Option(help="With mqtts://: the broker's CA certificate.")
    ] = None,
) -> None:
    """Publish a labelled tweet file in its time order and spacing / --speed (QoS 1).

    Each tweet goes out as JSON with id, text, entity and created_at, the time its
    snowflake id carries, so history and alerts place it where it happened.
    """
    if not speed > 0:
        raise typer.BadParameter("must be above 0", param_hint="--speed")
    if max_wait is not None and max_wait < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--max-wait")
    try:
        endpoint = BrokerEndpoint.parse(broker, username, password, cafile)
        the_plan = plan(read_labeled(data), entity)
    except (EndpointError, DataError, ReplayError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not the_plan.tweets:
        typer.echo(f"error: no tweet of {data} has a snowflake id (nothing to time)", err=True)
        raise typer.Exit(2)
    offsets = wall_offsets(the_plan.tweets, speed, max_wait)
    first = datetime.fromtimestamp(the_plan.tweets[0].at_ms / 1000, UTC)
    typer.echo(
        f"replaying {len(the_plan.tweets)} tweets from {first:%Y-%m-%d %H:%M} UTC over "
        f"{the_plan.span_s / 86400:.1f} days in {offsets[-1]:.0f} s to {endpoint.url} {topic}"
        + (
            f" ({the_plan.skipped_no_time} without a time skipped)"
            if the_plan.skipped_no_time
            else ""
        )
    )
    try:
        sent = publish(endpoint, the_plan.tweets, offsets, topic)
    except ReplayError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(f"published {sent} tweets")
    if sent != len(the_plan.tweets):
        raise typer.Exit(1)
