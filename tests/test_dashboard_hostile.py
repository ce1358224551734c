"""What a hostile feeder or forged record can put in front of an operator: terminal
escapes in every string `dashboard top`, the web JSON and the logs show, and numbers
Python refuses to convert (issue 20 items 3 and the 5,000-digit finding)."""

from __future__ import annotations

import io
import json
import logging
import socket

from rich.console import Console

from common.text import inert_log_handlers
from dashboard.state import DashboardState
from dashboard.top import render
from dashboard.web import DashboardServer, Hub

OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # sets the operator's clipboard
TITLE = "\x1b]0;owned\x07"
CLEAR = "\x1b[2J"
BIDI = "\u202e"
C1 = "\x9b31m"  # CSI as one C1 byte
RAW = ("\x1b", "\x07", "\x9b", BIDI)
BIG = "9" * 5000  # over Python's 4,300-digit int-string limit


def hostile_state() -> DashboardState:
    state = DashboardState()
    node = f"pi{TITLE}"
    status = {"state": "online", "model": {"version": f"1.0{CLEAR}", "variant": f"int8{C1}"}}
    state.ingest(f"repedge/nodes/{node}/status", json.dumps(status).encode())
    scores = {"negative": 0.9, "neutral": 0.05, "positive": 0.05}
    record = {"id": f"t1{BIDI}", "label": "negative", "entity": f"BMW{OSC52}",
              "node_id": node, "scores": scores}  # fmt: skip
    state.ingest("repedge/labels", json.dumps(record).encode())
    state.ingest("repedge/errors", json.dumps({"reason": f"bad{CLEAR}{OSC52}"}).encode())
    return state


def test_top_shows_escapes_as_text_and_writes_none_to_the_terminal():
    out = io.StringIO()
    console = Console(file=out, width=120, height=40, force_terminal=True, color_system=None)
    console.print(render(hostile_state().snapshot(), 120, 40))
    frame = out.getvalue()
    for raw in RAW:
        assert raw not in frame
    assert "BMW\\x1b]52;c;" in frame  # shown, visibly, as what it was
    assert "pi\\x1b]0;owned" in frame and "bad\\x1b[2J" in frame


def test_web_json_and_event_stream_carry_no_raw_control_characters():
    state = hostile_state()
    hub = Hub(state, push_interval=3600)
    server = DashboardServer(("127.0.0.1", 0), state, hub)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"GET /api/state HTTP/1.1\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        text = json.dumps(body, ensure_ascii=False)
        for raw in RAW:
            assert raw not in text
        assert any(e["name"].startswith("BMW\\x1b") for e in body["entities"])
    finally:
        hub.stop()
        server.close()


def test_log_lines_quote_outside_text_inertly():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    inert_log_handlers(handler)
    logger = logging.getLogger("test.inert.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("message on %s could not be shown", f"repedge/nodes/{TITLE}/status")
        try:
            raise ValueError(f"entity {OSC52}{BIDI}")
        except ValueError:
            logger.exception("handler for %s failed", CLEAR)
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    for raw in RAW:
        assert raw not in text
    assert "repedge/nodes/\\x1b]0;owned\\x07/status" in text
    assert "Traceback" in text and "ValueError: entity \\x1b]52;" in text
    assert len([line for line in text.splitlines() if line.startswith("WARNING")]) == 1


def test_a_5000_digit_integer_is_shown_as_missing_not_raised():
    state = DashboardState()
    scores = '{"negative":0.1,"neutral":0.1,"positive":' + BIG + "}"
    label = '{"id":"big","label":"positive","entity":"E","latency_ms":' + BIG
    label += ',"scores":' + scores + "}"
    state.ingest("repedge/labels", label.encode())
    state.ingest("repedge/nodes/n1/telemetry", f'{{"queue_depth":{BIG},"rss_bytes":5}}'.encode())
    state.ingest("repedge/nodes/n1/status", f'{{"state":"online","timestamp":{BIG}}}'.encode())
    state.ingest("repedge/errors", f'{{"reason":{BIG}}}'.encode())
    snap = state.snapshot()
    assert snap["labels_total"] == 1 and snap["errors_total"] == 1
    [card] = snap["nodes"]
    assert card["telemetry"]["queue_depth"] is None and card["state"] == "online"
    json.dumps(snap)  # what /api/state and the event stream send
    console = Console(file=io.StringIO(), width=80, height=24, color_system=None)
    console.print(render(snap, 80, 24))
