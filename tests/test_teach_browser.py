"""The Teach view in headless Chromium: a scripted annotator answers from gold labels with
the keyboard, undoes one answer, adapts, and exports; the labels are on the node.

Gold labels: RepLab 2013's automotive test tweets of one brand (../shared/data), or, where
that is absent, tweets whose label a rule decides. Skipped where Chromium is missing.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import pytest

from dashboard.headless import missing_reason, open_browser
from edgemodel.inference import Classifier
from harness import REPO, WAIT_S, Collector, DashboardProcess, embedded_node, publish, wait_until
from provisioning.local import LocalSlots

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))

REPLAB = REPO.parent / "shared" / "data" / "replab2013" / "automotive_en.tsv"
ENTITY = "BMW"
TWEETS = 40
ANSWERS = 24
KEYS = {"negative": "1", "neutral": "2", "positive": "3", "unrelated": "0"}


def gold_tweets() -> list[tuple[str, str]]:
    """(text, answer) pairs with distinct texts."""
    if REPLAB.exists():
        seen: dict[str, str] = {}
        with REPLAB.open(encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                if row["entity"] != ENTITY or row["text"] in seen:
                    continue
                related = row["filtering"] == "RELATED"
                seen[row["text"]] = row["polarity"].lower() if related else "unrelated"
                if len(seen) == TWEETS:
                    break
        return list(seen.items())
    kinds = [("positive", "love my new bmw"), ("negative", "hate this bmw"),
             ("unrelated", "rain in the mountains")]  # fmt: skip
    return [(f"{kinds[i % 3][1]} {i}", kinds[i % 3][0]) for i in range(TWEETS)]


def page(driver) -> dict[str, Any]:
    return driver.execute_script(
        "return {digest: document.body.dataset.digest || '', text: "
        "document.getElementById('text').textContent, count: "
        "document.getElementById('count').textContent, status: "
        "document.getElementById('status').textContent, cur: "
        "document.getElementById('cur-pol').textContent};"
    )


def wait_page(driver, predicate, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        value = page(driver)
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; page {value!r}")
        time.sleep(0.05)


def test_scripted_annotator_teaches_a_brand(mosquitto, tiny_bundle, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    gold = dict(gold_tweets())
    service, topics = embedded_node(mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1))
    service.model_slots = LocalSlots(tmp_path / "provisioning")
    watcher = Collector(mosquitto, [topics.labels])
    service.start()
    board = DashboardProcess(mosquitto.url, [topics.labels, "repedge/nodes/+/+"],
                             tmp_path / "dashboard.log")  # fmt: skip
    driver = open_browser(tmp_path / "chromium")
    driver.set_page_load_timeout(WAIT_S)
    try:
        assert service.wait_connected(WAIT_S)
        payloads = [json.dumps({"id": f"g{i}", "text": text, "entity": ENTITY})
                    for i, text in enumerate(gold)]  # fmt: skip
        publish(mosquitto, topics.tweets, payloads)
        watcher.wait_count(topics.labels, len(payloads))
        # Labels go out before their texts reach the store's writer: wait for the texts.
        wait_until(lambda: service.teach_store.span(ENTITY)[0] >= len(payloads), what="texts")

        node = service.config.node_id
        driver.get(f"{board.url}teach?node={node}&entity={ENTITY}")
        body = driver.find_element(By.TAG_NAME, "body")
        shown: list[str] = []
        for n in range(ANSWERS):
            now = wait_page(driver, lambda p, n=n: p["digest"] and p["count"] == str(n)
                            and p["digest"] not in shown, f"tweet {n + 1}")  # fmt: skip
            shown.append(now["digest"])
            body.send_keys(KEYS[gold[now["text"]]])
        wait_page(driver, lambda p: p["count"] == str(ANSWERS), "the last answer counted")

        body.send_keys("z")  # undo: the last tweet comes back
        back = wait_page(driver, lambda p: p["count"] == str(ANSWERS - 1), "undo")
        assert back["digest"] == shown[-1]
        body.send_keys(KEYS[gold[back["text"]]])
        wait_page(driver, lambda p: p["count"] == str(ANSWERS), "answered again")
        body.send_keys("s")  # skip one
        wait_page(driver, lambda p: "%" in p["cur"], "the current model's accuracy")

        # The page may already show an accuracy from before the skip: wait for the skip itself.
        wait_until(lambda: len(service.teach_store.answers(ENTITY, with_skips=True)) == ANSWERS + 1,
                   what="the skip recorded on the node")  # fmt: skip
        answers = service.teach_store.answers(ENTITY)
        assert len(answers) == ANSWERS
        assert all(gold[a.text] == a.answer for a in answers), "the node holds the gold labels"

        driver.find_element(By.ID, "adapt").click()
        deadline = time.monotonic() + 60
        while driver.execute_script("return document.body.dataset.adapted") is None:
            assert time.monotonic() < deadline, driver.find_element(By.ID, "adapt-result").text
            time.sleep(0.1)
        result = driver.find_element(By.ID, "adapt-result").text
        assert "polarity accuracy, current model on the labels" in result
        tsv = driver.execute_script(
            "return fetch('/api/teach/export.tsv?' + new URLSearchParams("
            "{node: arguments[0], entity: arguments[1]})).then(r => r.text())",
            node,
            ENTITY,
        )
        assert len(tsv.strip().splitlines()) == ANSWERS + 1
        # A page elsewhere cannot label through this one: POSTs need the custom header.
        status = driver.execute_script(
            "return fetch('/api/teach/answer', {method: 'POST', body: '{}'}).then(r => r.status)"
        )
        assert status == 403
    finally:
        driver.quit()
        board.stop()
        service.stop()
        watcher.close()
