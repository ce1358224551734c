"""docs/img/teach.png: the Teach view during a real session.

A private Mosquitto, a node serving models/default fed one brand's RepLab 2013 test tweets
(../shared/data/replab2013/automotive_en.tsv), `dashboard serve`, and headless Chromium
answering ``--answers`` tweets from the gold labels with the keyboard before the shot.

    python scripts/teach_screenshot.py [--brand BMW] [--answers 30] [--out docs/img/teach.png]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dashboard.headless import open_browser  # noqa: E402
from harness import Collector, free_port, publish, start_mosquitto, wait_listening  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "replab2013" / "automotive_en.tsv"
KEYS = {"negative": "1", "neutral": "2", "positive": "3", "unrelated": "0"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brand", default="BMW")
    parser.add_argument("--tweets", type=int, default=300)
    parser.add_argument("--answers", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "teach.png")
    args = parser.parse_args()
    gold: dict[str, str] = {}
    with DATA.open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["entity"] == args.brand and row["text"] not in gold:
                related = row["filtering"] == "RELATED"
                gold[row["text"]] = row["polarity"].lower() if related else "unrelated"
    texts = list(gold)[-args.tweets :]  # the latest: the brand's current tweets
    tmp = Path(tempfile.mkdtemp(prefix="teach-shot-"))
    broker = start_mosquitto(tmp / "broker")
    url = f"mqtt://{broker.host}:{broker.port}"
    node = subprocess.Popen(
        [sys.executable, "-m", "node", "start", "--node-id", "pi-showroom", "--broker", url,
         "--state-dir", str(tmp / "state"), "--model", str(REPO / "models" / "default"),
         "--no-ha-discovery", "--telemetry-interval", "1"], cwd=REPO,
    )  # fmt: skip
    port = free_port()
    board = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "serve", "--broker", url, "--port", str(port),
         "--db", str(tmp / "history.sqlite3")], cwd=REPO,
    )  # fmt: skip
    driver = None
    try:
        watcher = Collector(broker, ["repedge/labels", "repedge/nodes/pi-showroom/status"])
        watcher.wait_for(
            lambda msgs: any(
                m.topic.endswith("/status") and b'"online"' in m.payload for m in msgs
            ),
            timeout=120,
            what="the node online",
        )
        payloads = [json.dumps({"id": f"r{i}", "text": t, "entity": args.brand})
                    for i, t in enumerate(texts)]  # fmt: skip
        publish(broker, "repedge/tweets", payloads)
        watcher.wait_count("repedge/labels", len(payloads), timeout=300)
        wait_listening("127.0.0.1", port, 60)
        time.sleep(2)  # the last texts reach the store
        driver = open_browser(tmp / "chromium", width=1100, height=900)
        driver.get(f"http://127.0.0.1:{port}/teach?node=pi-showroom&entity={args.brand}")
        from selenium.webdriver.common.by import By

        body = driver.find_element(By.TAG_NAME, "body")
        for n in range(args.answers + 1):
            deadline = time.monotonic() + 30
            while driver.execute_script(
                "return document.getElementById('count').textContent"
            ) != str(n) or not driver.execute_script("return document.body.dataset.digest"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the page did not show tweet {n + 1}")
                time.sleep(0.05)
            if n == args.answers:
                break
            text = driver.execute_script("return document.getElementById('text').textContent")
            body.send_keys(KEYS[gold[text]])
        time.sleep(1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        if driver is not None:
            driver.quit()
        board.terminate()
        node.terminate()
        node.wait(30)
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
