"""The README's demo command works as written: broker, node, sample tweets, live labels."""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]


def test_demo_script_labels_every_sample_tweet(tmp_path):
    dashboard_port = free_port()
    env = {
        **os.environ,
        "REPEDGE_DEMO_PORT": str(free_port()),
        "REPEDGE_DEMO_DASHBOARD_PORT": str(dashboard_port),
        "REPEDGE_DEMO_STATE": str(tmp_path / "demo"),
    }
    demo = subprocess.Popen(
        ["bash", "scripts/demo.sh", "--once"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    dashboard_state = None
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("(published"):  # the demo's dashboard is still up for ~3 s
                url = f"http://127.0.0.1:{dashboard_port}/api/state"
                with urllib.request.urlopen(url, timeout=10) as response:
                    dashboard_state = json.load(response)
        stderr = demo.stderr.read() if demo.stderr else ""
        assert demo.wait(300) == 0, stderr[-2000:]
    finally:
        if demo.poll() is None:
            demo.kill()
    assert f"dashboard: http://127.0.0.1:{dashboard_port}/" in "\n".join(lines)
    assert dashboard_state is not None and dashboard_state["labels_total"] > 0
    assert any(node["node_id"] == "demo" for node in dashboard_state["nodes"])
    records = [
        (topic, json.loads(payload))
        for topic, _, payload in (line.partition(" ") for line in lines)
        if topic in ("repedge/labels", "repedge/errors")
    ]
    samples = (REPO / "scripts" / "demo_tweets.txt").read_text().splitlines()
    labels = [r for t, r in records if t == "repedge/labels"]
    errors = [r for t, r in records if t == "repedge/errors"]
    assert len(labels) == len(samples) - 1  # one sample is malformed JSON on purpose
    assert [e["reason"] for e in errors] == ["malformed_json"]
    by_id = {r["id"]: r for r in labels}
    assert by_id["demo-2"]["label"] == "negative"  # "Volvo recalls 50,000 cars ..."
    assert all(r["model"]["name"] == "repedge-polarity" for r in labels)
