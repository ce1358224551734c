"""`dashboard top` in a real 80x24 terminal (tmux), read back with capture-pane."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from dashboard.history import HistoryRecorder, HistoryStore
from harness import REPO, WAIT_S, publish, wait_until

ENV_80x24 = {**os.environ, "COLUMNS": "80", "LINES": "24"}


class Tmux:
    """A private tmux server (its own socket), so nothing else's sessions are touched."""

    def __init__(self) -> None:
        self.socket = f"repedge-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        ).stdout

    def screen(self) -> list[str]:
        return self("capture-pane", "-p", "-t", "top").splitlines()

    def wait_screen(self, predicate, what: str) -> list[str]:
        seen: list[str] = []

        def holds():
            seen[:] = self.screen()
            return predicate("\n".join(seen)) and (list(seen),)

        said = lambda: f"{what}; screen:\n" + "\n".join(seen)  # noqa: E731
        return wait_until(holds, interval=0.2, what=said)[0]

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def entity_row(lines: list[str], name: str) -> list[str]:
    return next(line for line in lines if line.startswith(name)).split()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_top_shows_nodes_and_entities_in_80x24_and_quits_on_q(mosquitto, topics, tmp_path):
    tmux = Tmux()
    node_id = f"edge-{uuid.uuid4().hex[:4]}"
    command = (
        f"{sys.executable} -m dashboard top --broker {mosquitto.url} "
        f"--topic {topics.labels} --topic {topics.errors} --topic 'repedge/nodes/+/+'"
        f" --db {tmp_path / 'history.sqlite3'} --flush-interval 0.5"
        f" 2>>{tmp_path / 'top.log'}; echo TOP-EXITED $?; sleep 60"
    )
    tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", "-c", str(REPO), command)
    try:
        tmux.wait_screen(lambda s: "repedge top" in s and "connected" in s, "the first frame")
        status = {"node_id": node_id, "state": "online", "model": {"version": "1.1.0"}}
        telemetry = {"throughput_per_s": 42.0, "latency_ms": {"p50": 3.0, "p99": 17.0}}
        publish(mosquitto, f"repedge/nodes/{node_id}/status", [json.dumps(status)])
        publish(mosquitto, f"repedge/nodes/{node_id}/telemetry", [json.dumps(telemetry)])
        labels = [
            json.dumps({"id": str(i), "label": "negative", "entity": "Volvo", "node_id": node_id})
            for i in range(3)
        ]
        unrelated = {"id": "u", "label": "positive", "entity": "Volvo", "related": False}
        sentiment = {"id": "s", "label": "positive"}
        publish(mosquitto, topics.labels, [*labels, json.dumps(unrelated), json.dumps(sentiment)])
        publish(mosquitto, topics.errors, [json.dumps({"reason": "malformed_json"})])
        lines = tmux.wait_screen(
            lambda s: (
                node_id in s
                and "\nVolvo   " in s
                and "malformed" in s
                and "sentiment" in s
                and entity_row(s.splitlines(), "Volvo")[1] == "3"
            ),
            "the node, both entities (Volvo's 24 h from the history) and the error",
        )
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        text = "\n".join(lines)
        assert "42.0" in text and "online" in text and "1.1.0" in text and "24h" in text
        # 24 h: 3 related, 100 % negative, 1 unrelated apart; live: 4 in the hour and minute.
        assert entity_row(lines, "Volvo")[1:8] == ["3", "100", "0", "0", "1", "4", "4"]

        tmux("send-keys", "-t", "top", "q")
        lines = tmux.wait_screen(lambda s: "TOP-EXITED" in s, "top to quit on q")
        assert "TOP-EXITED 0" in "\n".join(lines)
    finally:
        tmux.kill()


def test_top_shows_the_last_24_hours_per_entity_from_the_history(mosquitto, topics, tmp_path):
    db = tmp_path / "history.sqlite3"
    store = HistoryStore(db)  # what an earlier dashboard recorded: 25 h ago, and this day
    recorder = HistoryRecorder(store)
    now = time.time()
    for i in range(6):
        kia = {
            "id": str(i),
            "label": "neutral",
            "entity": "Kia",
            "created_at": (now - 3600 * i) * 1000,
        }
        recorder.add("Kia", kia, "neutral", True)
    recorder.add("Kia", {"created_at": (now - 60) * 1000}, "positive", False)
    recorder.add(
        "Kia", {"created_at": (now - 25 * 3600) * 1000}, "negative", True
    )  # out of the day
    recorder.flush()
    store.close()
    command = [sys.executable, "-m", "dashboard", "top", "--broker", mosquitto.url]
    command += ["--topic", topics.labels, "--db", str(db), "--once", "--wait", "0"]
    shown = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=WAIT_S, env=ENV_80x24
    )
    assert shown.returncode == 0, shown.stderr
    # Nothing live: the row comes from the database. 6 related, all neutral; 1 unrelated.
    assert entity_row(shown.stdout.splitlines(), "Kia")[1:7] == ["6", "0", "100", "0", "1", "0"]
