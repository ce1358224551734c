"""A click on a point of the history chart lists the tweets behind it, in headless Chromium,
against a real Mosquitto, a real node keeping texts and `dashboard serve` relaying the
click over the teach protocol. Skipped where Chromium is missing."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.timestamps import to_wire
from dashboard.headless import missing_reason, open_browser
from edgemodel.inference import Classifier
from harness import WAIT_S, Collector, DashboardProcess, embedded_node, publish, wait_until

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))

HOSTILE = "<img src=x onerror=window.pwned=1> brakes failed"
# The canvas position of the Kia volume point whose value is ``arguments[0]``.
POINT = """
const chart = Chart.getChart('hist-volume-chart');
if (!chart) return null;
const d = chart.data.datasets.findIndex((s) => s.label === 'Kia');
if (d < 0) return null;
const i = chart.data.datasets[d].data.indexOf(arguments[0]);
if (i < 0) return null;
const p = chart.getDatasetMeta(d).data[i];
const box = chart.canvas.getBoundingClientRect();
return {x: p.x - box.width / 2, y: p.y - box.height / 2};
"""
LISTED = "return [...document.querySelectorAll('#hist-tweets-list li')].map((li) => li.textContent)"


def at(epoch: float) -> str:
    return to_wire(datetime.fromtimestamp(epoch, UTC))


def test_a_click_on_a_point_lists_its_tweets(mosquitto, tiny_bundle, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    service, topics = embedded_node(mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1))
    watcher = Collector(mosquitto, [topics.labels])
    service.start()
    board = DashboardProcess(mosquitto.url, [topics.labels, "repedge/nodes/+/+"],
                             tmp_path / "dashboard.log")  # fmt: skip
    driver = open_browser(tmp_path / "chromium")
    driver.set_page_load_timeout(WAIT_S)
    minute = (time.time() // 60) * 60
    clicked, other = minute - 600, minute - 1200  # two buckets of the last hour
    texts = [HOSTILE, "kia dealer was great", "my kia is fine"]
    tweets = [{"id": f"c{i}", "text": t, "entity": "Kia", "created_at": at(clicked + 5 * i)}
              for i, t in enumerate(texts)]  # fmt: skip
    tweets += [{"id": f"o{i}", "text": f"older kia tweet {i}", "entity": "Kia",
                "created_at": at(other + i)} for i in range(2)]  # fmt: skip
    try:
        assert service.wait_connected(WAIT_S)
        publish(mosquitto, topics.tweets, [json.dumps(t) for t in tweets])
        watcher.wait_count(topics.labels, len(tweets))
        assert service.teach_store is not None
        wait_until(lambda: service.teach_store.span("Kia")[0] == len(tweets), what="texts kept")

        driver.get(board.url)
        driver.execute_script("document.querySelector('#hist-ranges [data-range=\"1h\"]').click()")
        wait_until(
            lambda: (
                driver.execute_script("return (window.repedgeHistory.last || {}).range") == "1h"
            ),
            what="the 1-hour range on the charts",
        )
        canvas = driver.find_element(By.ID, "hist-volume-chart")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)

        def click() -> None:
            point = driver.execute_script(POINT, len(texts))
            if point:  # a few pixels below the point, as a hand would: inside the plot area
                ActionChains(driver).move_to_element_with_offset(
                    canvas, round(point["x"]), round(point["y"]) + 4
                ).click().perform()

        def listed() -> list[str] | None:
            items = driver.execute_script(LISTED)
            if len(items) == len(texts):
                return items
            # Not clicked yet, or the chart redrew (its 10 s refresh) under the pointer.
            if driver.execute_script("return document.getElementById('hist-tweets').hidden"):
                click()
            return None

        shown = wait_until(
            listed,
            interval=0.2,
            what=lambda: f"the 3 tweets listed; list {driver.execute_script(LISTED)!r}",
        )
        assert [item.split(": ", 1)[1] for item in shown] == texts  # that bucket's, in order
        assert "older kia" not in " ".join(shown)
        title = driver.find_element(By.ID, "hist-tweets-title").text
        assert title.startswith("Kia")
        # The hostile text is text: no element was made from it, no script ran.
        assert driver.execute_script("return document.querySelectorAll('#hist-tweets img')"
                                     ".length") == 0  # fmt: skip
        assert driver.execute_script("return window.pwned") is None
        driver.save_screenshot(str(tmp_path / "history-tweets.png"))
    finally:
        driver.quit()
        board.stop()
        service.stop()
        watcher.close()
