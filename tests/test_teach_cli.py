"""The headless teach commands against a running node: `dashboard teach` (answers from a
pipe), `node adapt` and `node rollback` (exit status says whether the model changed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgemodel.inference import Classifier
from harness import REPO, WAIT_S, Collector, embedded_node, publish, wait_until
from provisioning.local import LocalSlots


def run(args: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], input=stdin, capture_output=True, text=True,
        cwd=REPO, timeout=WAIT_S * 2, check=False,
    )  # fmt: skip


def test_terminal_teach_then_adapt_and_rollback(mosquitto, tiny_bundle, tmp_path: Path) -> None:
    service, topics = embedded_node(mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1))
    service.model_slots = LocalSlots(tmp_path / "provisioning")
    watcher = Collector(mosquitto, [topics.labels])
    service.start()
    node = service.config.node_id
    try:
        assert service.wait_connected(WAIT_S)
        texts = [f"my volvo trip number {i}" for i in range(6)]
        publish(mosquitto, topics.tweets,
                [json.dumps({"id": str(i), "text": t, "entity": "Volvo"})
                 for i, t in enumerate(texts)])  # fmt: skip
        watcher.wait_count(topics.labels, 6)
        # Labels go out before their texts reach the store's writer: wait for the texts.
        wait_until(lambda: service.teach_store.span("Volvo")[0] >= 6, what="6 kept texts")

        broker = ["--broker", mosquitto.url]
        # negative, positive, undo (positive again), neutral, skip, quit
        done = run(["dashboard", "teach", "--node", node, "--entity", "Volvo", *broker],
                   "1\n3\nz\n2\ns\nq\n")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "2 labels given" in done.stdout and "my volvo trip number" in done.stdout
        answers = service.teach_store.answers("Volvo", with_skips=True)
        assert [a.answer for a in answers] == ["negative", "neutral", "skip"]

        kept = run(["node", "adapt", "--entity", "Volvo", "--node-id", node, *broker])
        assert kept.returncode == 1, kept.stderr
        assert "kept the current model" in kept.stdout
        back = run(["node", "rollback", "--node-id", node, *broker])
        assert back.returncode == 1 and "nothing installed" in back.stdout
        gone = run(["node", "adapt", "--entity", "Volvo", "--node-id", "nobody", *broker,
                    "--timeout", "1"])  # fmt: skip
        assert gone.returncode == 2 and "did not answer" in gone.stderr
    finally:
        service.stop()
        watcher.close()
