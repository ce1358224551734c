"""`dashboard top`: the dashboard's view in a terminal (SSH on the device), 80x24 and up.

rich's Live on the alternate screen repaints in place (cursor home, overwrite), so the
screen never blanks between frames: no flicker. Keys are read in cbreak mode with
select(), so `q` quits at once without Enter.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from common.text import inert_json
from dashboard.history import HistoryStore
from dashboard.history_sql import HistoryDatabaseError
from dashboard.state import DashboardState

REFRESH_S = 0.5
DAY_REFRESH_S = 5.0  # the 24 h totals come from the database; they move slowly


def _num(value: Any, digits: int = 0, scale: float = 1.0) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value / scale:.{digits}f}"


def _ago(since: float | None, now: float) -> str:
    if since is None:
        return ""
    s = max(0.0, now - since)
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.0f}h"


def _lag(ms: float) -> str:
    return f"{ms:.0f}ms" if abs(ms) < 10_000 else f"{ms / 1000:.0f}s"


def _table(*columns: tuple[str, int, str]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=0, pad_edge=False, expand=False)
    for title, width, justify in columns:
        table.add_column(title, width=width, justify=justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
    return table


Day = tuple[dict[str, dict[str, int]] | None, float | None]


def day_totals(store: HistoryStore | None, now: float) -> Day:
    """(each entity's last 24 h from the history, where that day ends if not now).

    (None, None) without a history or if it fails. As on the web page, when nothing was
    recorded in the last 24 h (a replayed old feed) the day ends at the newest minute
    recorded, and the header names that time.
    """
    if store is None:
        return None, None
    newest = store.newest()
    end = newest + 60 if newest is not None and newest < now - 86400 else now
    try:
        totals = store.totals(None, end - 86400, end)["entities"]
    except HistoryDatabaseError:
        return None, None
    return totals, (end if end != now else None)


def render(
    snapshot: dict[str, Any],
    width: int = 80,
    height: int = 24,
    day: dict[str, dict[str, int]] | None = None,
    day_end: float | None = None,
) -> RenderableType:
    """One frame from a :meth:`DashboardState.snapshot`; fits ``width`` x ``height``.

    ``day``: per-entity totals of the last 24 h (:func:`day_totals`), ``day_end`` where
    that day ends when it is not now; without ``day`` the table shows the live hour.
    Shares are of the tweets not marked unrelated.
    """
    # Entity names, node ids, reasons, versions come from MQTT: escapes are shown, not run.
    snapshot = inert_json(snapshot)
    day = inert_json(day) if day else day
    now = snapshot["now"]
    minute = int(now // 60)
    broker = snapshot.get("broker") or "broker"
    state = "connected" if snapshot.get("broker_connected") else "NOT CONNECTED"
    lag = snapshot.get("lag_ms")
    late = snapshot.get("late_records") or 0
    header = Text.assemble(
        ("repedge top", "bold"),
        (" (q quits) ", "dim"),
        (f"{broker} {state}", "green" if snapshot.get("broker_connected") else "bold red"),
        f"  labels {snapshot['labels_total']}  errors {snapshot['errors_total']}",
        f"  lag {_lag(lag)}" if isinstance(lag, int | float) else "",
        (f"  {late} late", "yellow") if late else "",
        overflow="ellipsis",
        no_wrap=True,
    )

    errors: dict[str, int] = {}
    for bucket in snapshot["errors"]["minutes"].values():
        for reason, n in bucket.items():
            errors[reason] = errors.get(reason, 0) + n
    error_line = Text(
        "errors/h: "
        + (", ".join(f"{r} {n}" for r, n in sorted(errors.items(), key=lambda x: -x[1])) or "none"),
        overflow="ellipsis",
        no_wrap=True,
    )
    if day_end is not None:  # the newest history is older than a day: say which day is shown
        shown = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(day_end))
        error_line = Text.assemble((f"24h: to {shown} (newest recorded)  ", "cyan"), error_line)
        error_line.no_wrap, error_line.overflow = True, "ellipsis"

    alert_line = alert_banner(snapshot.get("alerts") or [])
    # Fixed lines: header, 2 tables x (title row + rule + "+N more" caption), errors, and
    # the alert banner when one is open.
    budget = max(2, height - 8 - (alert_line is not None))
    # Online nodes first, then the most recent changes: what an operator looks for.
    nodes = sorted(snapshot["nodes"], key=lambda c: (c["state"] != "online", -(c["since"] or 0)))
    live = {e["name"]: e for e in snapshot["entities"]}
    names = set(live) | set(day or {})

    def volume(name: str) -> int:
        if day is not None:
            return sum(day.get(name, {}).values())
        return live[name]["total"]

    entities = sorted(names, key=lambda n: (-volume(n), n))
    node_rows = min(len(nodes), max(1, budget // 2))
    entity_rows = min(len(entities), max(1, budget - node_rows))
    node_rows = min(len(nodes), budget - entity_rows)  # give back what entities don't use

    wide = width >= 100
    nt = _table(
        ("node", 22 if wide else 14, "left"),
        ("state", 11, "left"),
        ("model", 22 if wide else 11, "left"),
        ("tw/s", 7, "right"),
        ("p50", 6, "right"),
        ("p99", 6, "right"),
        ("q", 5, "right"),
        ("cpu%", 5, "right"),
        ("MiB", 5, "right"),
    )
    for card in nodes[:node_rows]:
        t = card.get("telemetry") or {}
        m = card.get("model") or {}
        online = card["state"] == "online"
        nt.add_row(
            Text(card["node_id"]),  # Text(): no console markup from MQTT strings
            Text(
                f"{card['state']} {_ago(card.get('since'), now)}",
                style="green" if online else "red",
            ),
            Text(" ".join(str(x) for x in (m.get("version"), m.get("variant")) if x) or "-"),
            _num(t.get("tweets_per_s"), 1),
            _num(t.get("p50_ms"), 0),
            _num(t.get("p99_ms"), 0),
            _num(t.get("queue_depth")),
            _num(t.get("cpu_percent")),
            _num(t.get("rss_bytes"), 0, 1048576),
        )
    if len(nodes) > node_rows:
        nt.caption = f"+{len(nodes) - node_rows} more nodes"
    if not nodes:
        nt.add_row(Text("no node yet", style="dim"), "", "", "", "", "", "", "", "")

    period = "24h" if day is not None else "1h"
    et = _table(
        ("entity", 30 if wide else 16, "left"),
        (period, 7, "right"),
        ("neg%", 5, "right"),
        ("neu%", 5, "right"),
        ("pos%", 5, "right"),
        ("unrel", 6, "right"),
        ("1h", 6, "right"),
        ("1min", 5, "right"),
        ("last", 9, "left"),
    )
    empty = {"all": {}, "related": {}, "unrelated": {}}
    for name in entities[:entity_rows]:
        entity = live.get(name, {"minutes": {}, "recent": []})
        hour: dict[str, int] = {}  # the live hour, tweets not marked unrelated
        hour_unrelated = 0
        for bucket in entity["minutes"].values():
            for label, n in bucket["all"].items():
                hour[label] = hour.get(label, 0) + n - bucket["unrelated"].get(label, 0)
            hour_unrelated += sum(bucket["unrelated"].values())
        counts = dict(day.get(name, {})) if day is not None else {**hour, "unrelated": 0}
        unrelated = counts.pop("unrelated", 0) if day is not None else hour_unrelated
        counts.pop("unrelated", None)
        shared = sum(counts.values())
        last_minute = entity["minutes"].get(str(minute), empty)["all"]
        recent = entity["recent"][-1]["label"] if entity["recent"] else ""

        def share(label: str, counts: dict[str, int] = counts, total: int = shared) -> str:
            return f"{100 * counts.get(label, 0) / total:.0f}" if total else "-"

        et.add_row(
            Text(name),
            str(shared),
            share("negative"),
            share("neutral"),
            share("positive"),
            str(unrelated) if unrelated else "-",
            str(sum(hour.values()) + hour_unrelated),
            str(sum(last_minute.values())),
            Text(recent or "", style={"negative": "red", "positive": "green"}.get(recent, "")),
        )
    if len(entities) > entity_rows:
        et.caption = f"+{len(entities) - entity_rows} more entities"
    if not entities:
        et.add_row(Text("no labels yet", style="dim"), "", "", "", "", "", "", "", "")
    if alert_line is not None:
        return Group(header, alert_line, nt, et, error_line)
    return Group(header, nt, et, error_line)


def alert_banner(alerts: list[dict[str, Any]]) -> Text | None:
    """One line for the open spike alerts (repedge/alerts/<entity>), or None."""
    if not alerts:
        return None
    parts = []
    for a in alerts:
        since = (a.get("start") or "")[5:16].replace("T", " ")
        evidence = ""
        if isinstance(a.get("negative"), int | float) and isinstance(a.get("related"), int | float):
            evidence = f" {a['negative']:.0f}/{a['related']:.0f} negative"
            if isinstance(a.get("baseline_share"), int | float):
                evidence += f", usual {a['baseline_share']:.0%}"
        parts.append(f"{a.get('entity')} since {since}{evidence}")
    return Text(
        "NEGATIVE SPIKE: " + "; ".join(parts),
        style="bold white on red",
        overflow="ellipsis",
        no_wrap=True,
    )


@contextlib.contextmanager
def _cbreak(stream) -> Iterator[bool]:
    """Single keypresses without echo, where stdin is a terminal; restores it after."""
    if not stream.isatty():
        yield False
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(
    state: DashboardState,
    console: Console | None = None,
    once: bool = False,
    store: HistoryStore | None = None,
) -> None:
    """Redraw every REFRESH_S until q (or Ctrl-C); ``once``: print one frame and return."""
    console = console or Console()
    if once:
        day, day_end = day_totals(store, time.time())
        console.print(render(state.snapshot(), console.width, console.height, day, day_end))
        return
    day, day_end, day_at = None, None, -DAY_REFRESH_S
    stdin = sys.stdin
    with (
        _cbreak(stdin) as keys,
        Live(console=console, screen=True, auto_refresh=False, transient=True) as live,
    ):
        while True:
            size = console.size
            if time.monotonic() - day_at >= DAY_REFRESH_S:
                if state.recorder is not None:
                    state.recorder.flush()
                (day, day_end), day_at = day_totals(store, time.time()), time.monotonic()
            frame = render(state.snapshot(), size.width, size.height, day, day_end)
            live.update(frame, refresh=True)
            deadline = time.monotonic() + REFRESH_S
            while (left := deadline - time.monotonic()) > 0:
                if not keys:
                    time.sleep(left)
                    break
                ready, _, _ = select.select([stdin], [], [], left)
                if ready:
                    key = os.read(stdin.fileno(), 32)
                    if b"q" in key.lower():
                        return
