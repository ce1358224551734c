"""The README's demo command works as written: broker, node, sample tweets, live labels."""

import json
import os
import subprocess
import threading
import urllib.request

import pytest

from harness import REPO, free_port


@pytest.mark.slow
def test_demo_script_labels_every_sample_tweet(tmp_path):
    dashboard_port = free_port()
    env = {
        **os.environ,
        "REPEDGE_DEMO_PORT": str(free_port()),
        "REPEDGE_DEMO_DASHBOARD_PORT": str(dashboard_port),
        "REPEDGE_DEMO_STATE": str(tmp_path / "demo"),
    }
    stderr_path = tmp_path / "demo.stderr"
    with open(stderr_path, "w") as stderr:
        demo = subprocess.Popen(
            ["bash", "scripts/demo.sh", "--once"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
    # The demo's dashboard lives as long as the demo: read its state while it runs.
    seen: list[dict] = []
    done = threading.Event()

    def poll_dashboard() -> None:
        url = f"http://127.0.0.1:{dashboard_port}/api/state"
        while not done.wait(0.2):
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    seen.append(json.load(response))
            except OSError:
                continue  # not up yet, or already stopped

    poller = threading.Thread(target=poll_dashboard, daemon=True)
    poller.start()
    try:
        assert demo.stdout is not None
        lines = [line.rstrip("\n") for line in demo.stdout]
        assert demo.wait(300) == 0, stderr_path.read_text()[-2000:]
    finally:
        done.set()
        if demo.poll() is None:
            demo.kill()
    poller.join(10)
    assert f"dashboard: http://127.0.0.1:{dashboard_port}/" in "\n".join(lines)
    assert seen and max(state["labels_total"] for state in seen) > 0
    assert any(node["node_id"] == "demo" for node in seen[-1]["nodes"])
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
