"""Screenshots of the history views (docs/img/history*.png) from a real run.

A real Mosquitto, a real node serving models/default, and `dashboard serve` with a fresh
SQLite history. The RepLab 2013 test-period tweets of a few automotive brands
(../shared/data/replab2013/automotive_en.tsv) are published as tweets with their own time
(`created_at`, from the snowflake id), in time order; the node labels them and copies the
time into each record; the dashboard records them by it. Then headless Chromium shows
"Reputation over time" and `dashboard top --once` prints its frame.

    python scripts/history_screenshots.py [--brands BMW,Volvo,Ford,Fiat,Nissan]

Tweet texts never reach the images: label records carry none.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broker.config import BrokerConfig, find_program, write_config  # noqa: E402
from common.endpoint import BrokerEndpoint  # noqa: E402
from common.mqttclient import new_client  # noqa: E402
from dashboard.headless import open_browser  # noqa: E402
from harness import WAIT_S, free_port, wait_listening  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "replab2013" / "automotive_en.tsv"
TWITTER_EPOCH_MS = 1288834974657


def tweets(brands: list[str]) -> list[dict]:
    with open(DATA, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["entity"] in brands]
    out = [
        {
            "id": f"{r['entity']}-{r['tweet_id']}",
            "text": r["text"],
            "entity": r["entity"],
            "created_at": (int(r["tweet_id"]) >> 22) + TWITTER_EPOCH_MS,
        }
        for r in rows
    ]
    return sorted(out, key=lambda t: t["created_at"])


def publish(port: int, topic: str, items: list[dict]) -> None:
    client = new_client(BrokerEndpoint("127.0.0.1", port))
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, json.dumps(t), qos=1) for t in items]
        for info in infos:
            info.wait_for_publish(120)
    finally:
        client.disconnect()
        client.loop_stop()


def state(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10) as r:
        return json.load(r)


def wait_js(driver, script: str, predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{script}: {value!r}")
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brands", default="BMW,Volvo,Ford,Fiat,Nissan")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument(
        "--db", type=Path, help="a history database an earlier run filled: screenshots only"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not DATA.exists():
        print(f"needs {DATA}", file=sys.stderr)
        return 2
    brands = args.brands.split(",")
    work = Path(tempfile.mkdtemp(prefix="repedge-history-shots-"))
    mqtt_port, http_port = free_port(), free_port()
    db = args.db or work / "history.sqlite3"
    log = open(work / "processes.log", "ab")  # noqa: SIM115
    conf = write_config(BrokerConfig(data_dir=work / "broker", port=mqtt_port))
    procs = [subprocess.Popen([find_program("mosquitto"), "-c", str(conf)], stdout=log, stderr=log)]
    broker = f"mqtt://127.0.0.1:{mqtt_port}"
    try:
        wait_listening("127.0.0.1", mqtt_port, WAIT_S)
        serve = [sys.executable, "-m", "dashboard", "serve", "--broker", broker]
        serve += ["--port", str(http_port), "--db", str(db)]
        procs.append(subprocess.Popen(serve, cwd=REPO, stdout=log, stderr=log))
        wait_listening("127.0.0.1", http_port, WAIT_S)
        if args.db is None:
            fill(broker, mqtt_port, http_port, brands, work, procs, log)
        shots(work, http_port, args.out)
        top(broker, db, work)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        log.close()
    return 0


def fill(broker, mqtt_port, http_port, brands, work, procs, log) -> None:
    """A node labels the brands' tweets; the dashboard records them."""
    node = [sys.executable, "-m", "node", "start", "--broker", broker]
    node += ["--node-id", "replay-demo", "--state-dir", str(work / "node"), "--no-ha-discovery"]
    procs.append(subprocess.Popen(node, cwd=REPO, stdout=log, stderr=log))
    deadline = time.monotonic() + 120
    while not any(n["state"] == "online" for n in state(http_port)["nodes"]):
        if time.monotonic() > deadline:
            raise TimeoutError("the node did not come online")
        time.sleep(0.2)
    items = tweets(brands)
    print(f"publishing {len(items)} tweets of {', '.join(brands)} ...", flush=True)
    publish(mqtt_port, "repedge/tweets", items)
    deadline = time.monotonic() + 600
    while state(http_port)["labels_total"] < len(items):
        if time.monotonic() > deadline:
            raise TimeoutError("not every tweet was labelled")
        time.sleep(0.5)
    print("labelled", flush=True)


def shots(work: Path, http_port: int, out: Path) -> None:
    driver = open_browser(work / "chromium", width=1280, height=1100)
    try:
        driver.get(f"http://127.0.0.1:{http_port}/")
        section = driver.find_element("id", "hist-section")
        # 30 days per day (low-volume brands: an hour holds a handful of tweets), 7 per hour.
        for name, range_, step in (
            ("history-30d.png", "30d", 86400),
            ("history-7d.png", "7d", 3600),
        ):
            driver.execute_script(
                "const s = document.getElementById('hist-step'); s.value = arguments[0];"
                "s.dispatchEvent(new Event('change'));"
                f"document.querySelector('#hist-ranges [data-range=\"{range_}\"]').click()",
                str(step),
            )
            wait_js(
                driver,
                "return window.repedgeHistory.last",
                lambda v, step=step, range_=range_: (
                    bool(v) and (v["range"], v["step"]) == (range_, step) and len(v["chosen"]) > 0
                ),
            )
            driver.execute_script("arguments[0].scrollIntoView()", section)
            time.sleep(0.5)  # let Chart.js finish its layout for the PNG
            if not section.screenshot(str(out / name)):
                raise RuntimeError(f"could not write {out / name}")
            print(f"  {out / name}")
    finally:
        driver.quit()


def top(broker: str, db: Path, work: Path) -> None:
    command = [sys.executable, "-m", "dashboard", "top", "--broker", broker, "--db", str(db)]
    frame = subprocess.run(
        [*command, "--once", "--wait", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80", "LINES": "24"},
    )
    (work / "top.txt").write_text(frame.stdout)
    print(frame.stdout)
    print(f"work folder: {work}")

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
