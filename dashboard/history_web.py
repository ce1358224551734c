"""The history routes of `dashboard serve`: range queries as JSON and CSV.

* ``GET /api/history?range=24h&entities=BMW,Kia`` (or ``from=EPOCH&to=EPOCH`` for a custom
  range; ``step=60|3600|86400`` to force the bucket): the series per entity on a dense
  time axis, each entity's totals over the range, and every entity the store knows.
* ``GET /api/history.csv?...``: the same series as CSV, one row per bucket and entity.
* ``GET /api/history/tweets?entity=BMW&from=..&to=..[&label=negative][&related=1]``: the
  tweets behind a point. Label records carry no text: `dashboard serve` asks the nodes'
  text stores over the teach protocol (dashboard/history_tweets.py); without a source, or
  when the broker user may not read texts, it answers an error the page shows.

A preset range ends now, unless everything recorded is older than the range: then it
ends at the newest minute recorded (``"anchor": "latest"``), so a replayed old feed shows.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from common.httpserver import Request, Response, Route
from common.text import inert_json
from dashboard.history import FIELDS, HistoryStore
from dashboard.history_sql import HistoryDatabaseError
from dashboard.history_tweets import TweetsSource, TweetsUnavailable

PRESETS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
DEFAULT_ENTITIES = 10  # busiest shown when the page names none
MAX_ENTITIES = 50
MAX_SPAN_S = 20 * 366 * 86400
MAX_POINTS = 50_000  # per entity, with a forced step (30 days per minute is 43,200)


class BadQuery(ValueError):
    pass


def json_response(data: Any, status: int = HTTPStatus.OK) -> Response:
    """As web.json_response: entity names came from MQTT, so every string is made inert."""
    body = json.dumps(inert_json(data), separators=(",", ":")).encode()
    return Response(status, body, "application/json")


def _number(params: dict[str, list[str]], key: str) -> float | None:
    values = params.get(key)
    if not values or values[0] == "":
        return None
    try:
        value = float(values[0])
    except ValueError:
        raise BadQuery(f"{key} must be a number (epoch seconds)") from None
    if value != value or abs(value) > 1e11:
        raise BadQuery(f"{key} is out of range")
    return value


def resolve_range(
    store: HistoryStore, params: dict[str, list[str]], now: float
) -> tuple[float, float, str, str]:
    """(start, end, the range's name, what the end is anchored to) from the query."""
    start, end = _number(params, "from"), _number(params, "to")
    if start is not None or end is not None:
        if start is None or end is None or not start < end:
            raise BadQuery("a custom range needs from < to (epoch seconds)")
        if end - start > MAX_SPAN_S:
            raise BadQuery("the range is longer than 20 years")
        return start, end, "custom", "custom"
    name = params.get("range", ["24h"])[0]
    if name not in PRESETS:
        raise BadQuery(f"range must be one of {', '.join(PRESETS)} (or from= and to=)")
    span = PRESETS[name]
    newest = store.newest()
    if newest is not None and newest < now - span:
        end = newest + 60
        return end - span, end, name, "latest"
    return now - span, now, name, "now"


def _entities(params: dict[str, list[str]]) -> list[str] | None:
    raw = params.get("entities")
    if not raw or not raw[0]:
        return None
    names = [n for n in raw[0].split(",") if n][:MAX_ENTITIES]
    return list(dict.fromkeys(names))


def history_view(
    store: HistoryStore, params: dict[str, list[str]], now: float | None = None
) -> dict[str, Any]:
    now = time.time() if now is None else now
    start, end, name, anchor = resolve_range(store, params, now)
    step = _number(params, "step")
    if step is not None and int(step) not in (60, 3600, 86400):
        raise BadQuery("step must be 60, 3600 or 86400")
    if step is not None and (end - start) / step > MAX_POINTS:
        raise BadQuery(f"more than {MAX_POINTS} buckets: choose a coarser bucket")
    chosen = _entities(params)
    totals = store.totals(chosen, start, end)
    if chosen is None:  # the busiest of the range, so the first screen shows something
        ranked = sorted(totals["entities"].items(), key=lambda kv: -sum(kv[1].values()))
        chosen = [entity for entity, _ in ranked[:DEFAULT_ENTITIES]]
    series = store.series(chosen, start, end, int(step) if step else None)
    return {
        "range": name,
        "anchor": anchor,
        "from": start,
        "to": end,
        "now": now,
        "newest": store.newest(),
        "db": store.kind,
        "chosen": chosen,
        "series": series,
        "totals": {e: totals["entities"].get(e, dict.fromkeys(FIELDS, 0)) for e in chosen},
        "known": store.entities(),
    }


def _safe_cell(text: str) -> str:
    # Entity names come from MQTT: a leading = + - @ would be a formula in a spreadsheet.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def history_csv(view: dict[str, Any]) -> bytes:
    """One row per bucket and entity: counts, related volume and negative share (%)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["time_utc", "entity", *FIELDS, "volume_related", "negative_share_pct", "bucket_s"]
    )
    series = view["series"]
    for entity, columns in series["entities"].items():
        for i, bucket in enumerate(series["t"]):
            counts = [columns[f][i] for f in FIELDS]
            volume = sum(counts[:-1])  # every label, not the unrelated column
            share = f"{100 * columns['negative'][i] / volume:.1f}" if volume else ""
            when = datetime.fromtimestamp(bucket, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            writer.writerow([when, _safe_cell(entity), *counts, volume, share, series["step"]])
    return out.getvalue().encode()


def history_routes(
    store: HistoryStore | None, flush: Callable[[], Any] = lambda: None
) -> dict[str, Route]:
    """Path -> route for the history API (run on the server's handler threads: they query)."""

    def answer(request: Request, csv_out: bool = False) -> Response:
        if store is None:
            return json_response({"error": "history is off (--no-history)"}, HTTPStatus.NOT_FOUND)
        try:
            flush()  # what the live view has counted, the history shows too
            view = history_view(store, request.query)
        except BadQuery as exc:
            return json_response({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except HistoryDatabaseError as exc:
            return json_response({"error": str(exc)}, HTTPStatus.SERVICE_UNAVAILABLE)
        if csv_out:
            return Response(HTTPStatus.OK, history_csv(view), "text/csv; charset=utf-8")
        return json_response(view)

    return {
        "/api/history": Route(answer),
        "/api/history.csv": Route(lambda request: answer(request, csv_out=True)),
        "/api/history/tweets": tweets_route(None),
    }


def tweets_route(source: TweetsSource | None) -> Route:
    """``/api/history/tweets`` answered from ``source`` (None: this dashboard has none)."""

    def handle(request: Request) -> Response:
        try:
            return json_response(_tweets(source, request.query))
        except BadQuery as exc:
            return json_response({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except TweetsUnavailable as exc:
            return json_response({"error": str(exc)}, exc.status)

    return Route(handle)


def _tweets(source: TweetsSource | None, params: dict[str, list[str]]) -> dict[str, Any]:
    entity = params.get("entity", [""])[0]
    start, end = _number(params, "from"), _number(params, "to")
    if not entity or start is None or end is None or not start < end:
        raise BadQuery("tweets need entity=, from= and to= (from < to, epoch seconds)")
    label = params.get("label", [""])[0] or None
    related_arg = params.get("related", [""])[0]
    if related_arg not in ("", "0", "1"):
        raise BadQuery("related must be 1 or 0")
    related = None if related_arg == "" else related_arg == "1"
    if source is None:
        raise TweetsUnavailable(
            "this dashboard has no broker user to ask the nodes for texts with "
            "(label records carry none; the nodes keep them)"
        )
    return source(entity, start, end, label, related)
