"""The README's demo command works as written: broker, node, sample tweets, live labels."""

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]


def test_demo_script_labels_every_sample_tweet(tmp_path):
    env = {
        **os.environ,
        "REPEDGE_DEMO_PORT": str(free_port()),
        "REPEDGE_DEMO_STATE": str(tmp_path / "demo"),
    }
    run = subprocess.run(
        ["bash", "scripts/demo.sh", "--once"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    records = [
        (topic, json.loads(payload))
        for topic, _, payload in (line.partition(" ") for line in run.stdout.splitlines())
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
