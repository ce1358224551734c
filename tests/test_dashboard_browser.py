"""`dashboard serve` in headless Chromium, against a real Mosquitto and a real node.

Skipped, with the reason, where Chromium, chromedriver or Selenium are missing
(scripts/setup.sh installs them).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from dashboard.headless import missing_reason, open_browser
from harness import WAIT_S, Collector, DashboardProcess, publish, wait_until

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))

HOSTILE_NODE = "<img src=x onerror=alert(1)>"
HOSTILE_ENTITY = "<script>window.pwned=1</script>Brand & Co"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = open_browser(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture
def dashboard(mosquitto, topics, tmp_path) -> Iterator[Callable[[], DashboardProcess]]:
    made: list[DashboardProcess] = []

    def start() -> DashboardProcess:
        filters = [topics.labels, topics.errors, "repedge/nodes/+/+"]
        made.append(DashboardProcess(mosquitto.url, filters, tmp_path / "dashboard.log"))
        return made[-1]

    yield start
    for process in made:
        process.stop()


def wait_js(driver, script: str, predicate: Callable[[Any], bool], what: str) -> Any:
    """Poll a script in the page until ``predicate`` holds for its result."""
    seen: list = [None]

    def holds():
        seen[0] = driver.execute_script(script)
        return predicate(seen[0]) and (seen[0],)

    return wait_until(holds, interval=0.1, what=lambda: f"{what}; last value {seen[0]!r}")[0]


CARD = """
const card = [...document.querySelectorAll('.node-card')]
  .find((c) => c.querySelector('.node-id').textContent === arguments[0]);
const text = (sel) => card.querySelector(sel).textContent;
return card ? {state: card.dataset.state, labels: text('.f-labels'), model: text('.f-model'),
  badge: text('.badge')} : null;
"""


def card(driver, node_id: str) -> dict | None:
    return driver.execute_script(CARD, node_id)


def wait_card(driver, node_id: str, predicate: Callable[[dict], bool], what: str) -> dict:
    seen: list = [None]

    def holds():
        seen[0] = card(driver, node_id)
        return seen[0] is not None and predicate(seen[0]) and (seen[0],)

    def said() -> str:
        state = driver.execute_script("return fetch('/api/state').then(r => r.text())")
        return f"{what}; card {seen[0]!r}; server {state}"

    return wait_until(holds, interval=0.1, what=said)[0]


def tweets(start: int, count: int, entity: str = "Volvo") -> list[str]:
    texts = ["I love this car", "worst service ever, never again", "the dealer opens at nine"]
    return [
        json.dumps({"id": f"b{i}", "text": texts[i % 3], "entity": entity})
        for i in range(start, start + count)
    ]


def test_node_card_goes_online_counts_labels_and_goes_offline_when_killed(
    browser, dashboard, node_factory, mosquitto, topics, tmp_path
):
    board = dashboard()
    node = node_factory(extra=["--telemetry-interval", "1"])
    watcher = Collector(mosquitto, [node.status_topic(), topics.labels])
    try:
        browser.get(board.url)
        node.start_and_wait_online(watcher)
        online = wait_card(browser, node.node_id, lambda c: c["state"] == "online", "online")
        assert online["badge"] == "online" and "tiny" in online["model"]

        publish(mosquitto, topics.tweets, tweets(0, 5))
        watcher.wait_count(topics.labels, 5)  # the node's side first: a failure says whose
        wait_card(browser, node.node_id, lambda c: c["labels"] == "5", "5 labels")
        publish(mosquitto, topics.tweets, tweets(5, 7))
        wait_card(browser, node.node_id, lambda c: c["labels"] == "12", "12 labels")
        watcher.wait_count(topics.labels, 12)
        wait_js(
            browser,
            "return document.getElementById('labels-total').textContent",
            lambda v: int(v) >= 12,
            "header label count",
        )
        rows = wait_js(
            browser,
            "return [...document.querySelectorAll('#entities tbody tr')]"
            ".map(r => r.dataset.entity)",
            lambda v: "Volvo" in v,
            "the Volvo row",
        )
        assert "Volvo" in rows
        recent = browser.execute_script(
            "return document.querySelectorAll('#recent tbody tr').length"
        )
        assert recent >= 12 or recent == 50

        node.kill()  # SIGKILL: no goodbye; the broker publishes the Last Will
        offline = wait_card(browser, node.node_id, lambda c: c["state"] == "offline", "offline")
        assert offline["badge"] == "offline"
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        stats = browser.execute_script("return window.repedgeStats")
        assert stats["errors"] == 0 and stats["snapshots"] >= 1
    finally:
        watcher.close()


def test_hostile_and_malformed_messages_show_as_text_and_break_nothing(
    browser, dashboard, mosquitto, topics, tmp_path
):
    status_topic = f"repedge/nodes/{HOSTILE_NODE}/status"
    telemetry_topic = f"repedge/nodes/{HOSTILE_NODE}/telemetry"
    hostile_label = {
        "id": "<b>id</b>",
        "label": "<i>negative</i>",
        "scores": {"negative": "<u>1</u>", "x": [1]},
        "entity": HOSTILE_ENTITY,
        "node_id": HOSTILE_NODE,
        "related": "yes",
        "unknown": {"deep": [1, 2, 3]},
    }
    board = dashboard()
    # Before the page opens: these arrive with the snapshot a late browser gets.
    status = {"state": "online", "model": {"name": "<svg onload=alert(2)>", "version": 1}}
    publish(mosquitto, status_topic, [json.dumps(status)])
    publish(mosquitto, telemetry_topic, [b"{not json", b"[]", b"\xff", b'{"queue_depth": "x"}'])
    publish(mosquitto, topics.labels, [json.dumps(hostile_label), b"<html>"])
    publish(mosquitto, topics.errors, [json.dumps({"reason": "<svg onload=alert(3)>"})])
    browser.get(board.url)
    wait_card(browser, HOSTILE_NODE, lambda c: c["state"] == "online", "the hostile node's card")
    # After: the same through live deltas, then a good record to prove the page still updates.
    publish(mosquitto, telemetry_topic, [b'{"cpu_percent": {"a": 1}, "rss_bytes": 1e400}'])
    publish(mosquitto, topics.labels, [json.dumps(hostile_label)])
    good = {"id": "ok", "label": "positive", "entity": "Volvo", "scores": {"positive": 1.0}}
    publish(mosquitto, topics.labels, [json.dumps(good)])
    wait_js(
        browser,
        "return document.getElementById('labels-total').textContent",
        lambda v: v == "3",
        "three labels counted",
    )

    page = browser.execute_script(
        """
        return {
          imgs: document.querySelectorAll('img').length,
          svgs: document.querySelectorAll('svg').length,
          scripts: document.querySelectorAll('script').length,
          italics: document.querySelectorAll('i, u').length,
          pwned: window.pwned === 1,
          entities: [...document.querySelectorAll('#entities tbody tr td:first-child')]
            .map(td => td.textContent),
          errors: [...document.querySelectorAll('#errors tbody td')].map(td => td.textContent),
          ignored: document.getElementById('ignored').textContent,
          stats: window.repedgeStats,
        };
        """
    )
    assert page["imgs"] == 0 and page["svgs"] == 0 and page["italics"] == 0
    assert page["scripts"] == 3  # Chart.js, app.js and history.js, nothing injected
    assert not page["pwned"]
    assert HOSTILE_ENTITY in page["entities"] and "Volvo" in page["entities"]
    assert "<svg onload=alert(3)>" in page["errors"]
    assert page["stats"]["errors"] == 0
    assert not page["ignored"].startswith("0 ")  # the malformed ones were counted, not shown
    the_card = card(browser, HOSTILE_NODE)
    assert the_card["model"].startswith("<svg onload=alert(2)>")
    browser.save_screenshot(str(tmp_path / "hostile.png"))
    alerts = browser.execute_script("return typeof window.alert")  # page still scriptable
    assert alerts == "function"


HISTORY_TABLE = """
return [...document.querySelectorAll('#hist-table tbody tr')].map((r) =>
  [...r.children].map((td) => td.textContent));
"""


def history_rows(driver) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in driver.execute_script(HISTORY_TABLE)}


def test_history_survives_a_restart_and_shows_brands_side_by_side(
    browser, mosquitto, topics, tmp_path
):
    db = tmp_path / "history.sqlite3"
    extra = ["--db", str(db), "--flush-interval", "0.5"]
    log = tmp_path / "dashboard.log"

    def record(i: int, entity: str, label: str, related: bool) -> str:
        return json.dumps({"id": f"h{i}", "label": label, "entity": entity, "related": related})

    kia = [record(i, "Kia", ("negative", "positive")[i % 2], True) for i in range(6)]
    kia += [record(10 + i, "Kia", "positive", False) for i in range(2)]  # "kia" the word
    bmw = [record(20 + i, "BMW", "neutral", True) for i in range(4)]
    first = DashboardProcess(mosquitto.url, [topics.labels], log, extra)
    try:
        publish(mosquitto, topics.labels, kia + bmw)
        browser.get(first.url)
        wait_js(
            browser,
            "return document.getElementById('labels-total').textContent",
            lambda v: v == "12",
            "12 labels counted live",
        )
    finally:
        first.stop()  # SIGTERM: the last batch is flushed on the way out

    second = DashboardProcess(mosquitto.url, [topics.labels], log, extra)
    try:
        browser.get(second.url)
        rows = wait_js(
            browser,
            HISTORY_TABLE,
            lambda v: {r[0] for r in v} == {"Kia", "BMW"},
            "the history table after the restart",
        )
        by_name = {r[0]: r[1:] for r in rows}
        # Shares of the 6 related Kia tweets; the 2 unrelated ones counted apart.
        assert by_name["Kia"] == ["6", "50 %", "0 %", "50 %", "2"]
        assert by_name["BMW"] == ["4", "0 %", "100 %", "0 %", "0"]
        live = browser.execute_script("return document.getElementById('labels-total').textContent")
        assert live == "0"  # nothing live: the rows came from the database
        lines = browser.execute_script(
            "return Chart.getChart('hist-share-chart').data.datasets.map((d) => d.label)"
        )
        assert sorted(lines) == ["BMW", "Kia"]
        csv_link = browser.execute_script("return document.getElementById('hist-csv').href")
        assert "/api/history.csv?range=24h" in csv_link

        # Untick BMW: one line left, and the export follows what is on screen.
        browser.execute_script(
            "document.querySelector('#hist-brands input[data-entity=\"BMW\"]').click()"
        )
        wait_js(
            browser,
            "return Chart.getChart('hist-volume-chart').data.datasets.map((d) => d.label)",
            lambda v: v == ["Kia"],
            "BMW off the chart",
        )
        csv_link = browser.execute_script("return document.getElementById('hist-csv').href")
        assert csv_link.endswith("entities=Kia")
        browser.execute_script("document.querySelector('#hist-ranges [data-range=\"7d\"]').click()")
        wait_js(
            browser,
            "return window.repedgeHistory.last",
            lambda v: v and v["step"] == 3600 and v["chosen"] == ["Kia"],
            "the 7-day range, per hour",
        )
        assert browser.execute_script("return window.repedgeHistory.errors") == 0
        assert browser.save_screenshot(str(tmp_path / "history.png"))
    finally:
        second.stop()


def test_an_open_spike_alert_shows_as_a_banner(browser, mosquitto, topics, tmp_path):
    # An entity name that would run if it were ever parsed as HTML.
    entity = f"<i>Brand</i>{uuid.uuid4().hex[:6]}"
    t0 = 1_355_000_000 - 1_355_000_000 % 60

    def record(i: int, at: int, negative: bool) -> str:
        return json.dumps({
            "id": f"a{i}", "label": "negative" if negative else "neutral", "entity": entity,
            "related": True, "scores": {"negative": 0.9 if negative else 0.02},
            "created_at": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
        })  # fmt: skip

    week = [record(i, t0 + i * 900, i % 10 == 0) for i in range(7 * 96)]
    burst = [record(1000 + i, t0 + 7 * 86400 + i * 300, True) for i in range(12)]
    dash = DashboardProcess(
        mosquitto.url, [topics.labels, "repedge/alerts/+"], tmp_path / "dashboard.log"
    )
    try:
        browser.get(dash.url)
        assert browser.execute_script("return document.getElementById('alert-banner').hidden")
        publish(mosquitto, topics.labels, week)
        wait_js(
            browser,
            "return document.getElementById('labels-total').textContent",
            lambda v: v == str(len(week)),
            "the week counted",
        )
        publish(mosquitto, topics.labels, burst)
        text = wait_js(
            browser,
            "const b = document.getElementById('alert-banner');"
            "return b.hidden ? '' : b.textContent",
            lambda v: entity in v,
            "the alert banner",
        )
        assert text.startswith(f"Negative spike for {entity} since 12-")
        assert "related tweets negative" in text
        assert browser.execute_script("return document.querySelector('#alert-banner i')") is None
    finally:
        dash.stop()
