"""The spike detector (dashboard/alerts.py): pure, fed per-minute counts, no broker."""

from __future__ import annotations

import math

import pytest

from dashboard.alerts import (
    CusumDetector,
    CusumRule,
    SpikeDetector,
    SpikeRule,
    beta_binomial_sf,
    make_detector,
)

T0 = 1_355_000_000 - 1_355_000_000 % 60  # a minute boundary in December 2012
HOUR, DAY = 3600, 86400
# Fixed here, so the tests do not move when the tuned defaults do.
RULE = SpikeRule(window_s=2 * HOUR, baseline_s=7 * DAY, alpha=1e-4, min_negative=5)


def exact_sf(k: int, n: int, a: float, b: float) -> float:
    def beta(x: float, y: float) -> float:
        return math.exp(math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y))

    return sum(math.comb(n, j) * beta(j + a, n - j + b) / beta(a, b) for j in range(k, n + 1))


def full_log_sum_sf(k: int, n: int, a: float, b: float) -> float:
    """Every term, in log space (for n too large for math.comb as a float)."""

    def lbeta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    lc = math.lgamma(n + 1) - lbeta(a, b)
    return math.fsum(
        math.exp(lc - math.lgamma(j + 1) - math.lgamma(n - j + 1) + lbeta(j + a, n - j + b))
        for j in range(k, n + 1)
    )


@pytest.mark.parametrize(
    ("k", "n", "a", "b"),
    [
        (0, 5, 1, 1),
        (1, 5, 2, 2),
        (5, 10, 3, 17),
        (11, 22, 10, 90),
        (3, 100, 3, 17),
        (60, 60, 3, 17),
    ],
)
def test_beta_binomial_tail_matches_the_sum_of_its_terms(k, n, a, b) -> None:
    assert beta_binomial_sf(k, n, a, b) == pytest.approx(exact_sf(k, n, a, b), rel=1e-9, abs=1e-15)
    assert beta_binomial_sf(n + 1, n, a, b) == 0.0


def test_tail_of_a_large_window_stops_early_and_stays_exact() -> None:
    # 100,000 tweets in a window (a busy brand at full rate): only terms near k count.
    for k in (12_000, 15_000, 25_000):
        assert beta_binomial_sf(k, 100_000, 30, 170) == pytest.approx(
            full_log_sum_sf(k, 100_000, 30, 170), rel=1e-6, abs=1e-15
        )


def feed_steady(
    det: SpikeDetector, entity: str, start: int, end: int, every_s: int, neg_every: int
):
    """One related tweet every ``every_s``; every ``neg_every``-th one negative."""
    events = []
    for i, t in enumerate(range(start, end, every_s)):
        det.add(entity, t, int(i % neg_every == 0), 1)
        events += det.advance(t + 59)
    return events


def test_low_volume_never_alarms_however_lopsided() -> None:
    det = SpikeDetector(RULE)
    # A quiet brand: every tweet of the day negative, but only four of them in the window.
    events = []
    for minute in range(4):
        det.add("Quiet", T0 + minute * 600, 1, 1)
        events += det.advance(T0 + minute * 600 + 59)
    assert events == [] and det.alerts() == {}
    assert det.evaluate("Quiet", T0 + 2000).p_value == 1.0


def test_the_same_share_alarms_only_with_enough_volume() -> None:
    rule = RULE
    small, large = SpikeDetector(rule), SpikeDetector(rule)
    for det in (small, large):
        feed_steady(det, "B", T0, T0 + 7 * DAY, 15 * 60, neg_every=10)  # 10 % negative
    end = T0 + 7 * DAY
    small.add("B", end, 5, 10)  # 50 % of 10 tweets: could be chance at this baseline
    large.add("B", end, 30, 60)  # 50 % of 60 tweets: cannot
    assert small.advance(end + 59) == []
    (event,) = large.advance(end + 59)
    assert event.kind == "open" and event.alert.entity == "B"


def test_a_clear_burst_opens_an_alert_with_its_evidence_and_it_closes_after() -> None:
    det = SpikeDetector(RULE)
    # A week of one tweet every 15 min, 10 % negative: its own baseline.
    assert feed_steady(det, "BMW", T0, T0 + 7 * DAY, 15 * 60, neg_every=10) == []
    burst = T0 + 7 * DAY
    opened = []
    for i in range(12):  # 12 negative tweets in an hour, on top of the usual traffic
        det.add("BMW", burst + i * 300, 1, 1)
        opened += det.advance(burst + i * 300 + 59)
    assert [e.kind for e in opened] == ["open"]
    alert = opened[0].alert
    assert alert.state == "open" and alert.end is None and burst <= alert.start < burst + HOUR
    # Evidence: the window's counts, the baseline's (a week, about 10 % negative).
    ev = alert.evidence
    assert ev.negative >= 5 and ev.p_value < det.rule.alpha
    assert ev.baseline_related == pytest.approx(7 * 24 * 4 - 8, abs=8)
    assert 0.08 < ev.baseline_share < 0.13
    assert alert.size > 4
    # Usual traffic resumes: once the burst has left the window the alert closes.
    after = feed_steady(det, "BMW", burst + HOUR, burst + HOUR + 6 * HOUR, 15 * 60, neg_every=10)
    assert [e.kind for e in after] == ["close"]
    closed = det.alerts()["BMW"]
    assert closed.state == "closed" and closed.start < closed.end <= burst + HOUR + 3 * HOUR
    body = closed.to_json()
    assert body["state"] == "closed" and body["end"] == closed.end
    assert body["evidence"]["negative"] == closed.evidence.negative >= ev.negative


def test_an_alert_closes_when_time_passes_without_tweets() -> None:
    det = SpikeDetector(RULE)
    feed_steady(det, "Fiat", T0, T0 + 3 * DAY, 20 * 60, neg_every=10)
    start = T0 + 3 * DAY
    det.add("Fiat", start, 12, 14)
    assert [e.kind for e in det.advance(start + 59)] == ["open"]
    # No more tweets at all: the window empties when the burst minute leaves it.
    (event,) = det.advance(start + 10 * HOUR)
    assert event.kind == "close" and event.alert.end == start + det.rule.window_s


def test_entities_are_independent() -> None:
    det = SpikeDetector(RULE)
    feed_steady(det, "Calm", T0, T0 + 2 * DAY, 10 * 60, neg_every=2)  # always 50 % negative
    feed_steady(det, "Spiky", T0, T0 + 2 * DAY, 10 * 60, neg_every=20)
    end = T0 + 2 * DAY
    det.add("Calm", end, 10, 12)
    det.add("Spiky", end, 10, 12)
    events = det.advance(end + 59)
    assert [(e.kind, e.alert.entity) for e in events] == [("open", "Spiky")]


def test_late_minutes_count_as_if_they_came_in_order() -> None:
    in_order, shuffled = SpikeDetector(RULE), SpikeDetector(RULE)
    counts = [(T0 + i * 60, i % 3 == 0, 1 + i % 2) for i in range(300)]
    for m, n, r in counts:
        in_order.add("E", m, int(n), r)
    for m, n, r in counts[::-1]:
        shuffled.add("E", m, int(n), r)
    for at in (T0 + 3000, T0 + 9000, T0 + 18000):
        assert in_order.evaluate("E", at) == shuffled.evaluate("E", at)


@pytest.mark.parametrize(
    "bad",
    [
        {"alpha": 0.1, "close_alpha": 0.05},
        {"alpha": 0.0},
        {"window_s": 10},
        {"prior_share": 1.0},
        {"min_negative": 0},
    ],
)
def test_bad_rules_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        SpikeRule(**bad)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative <= related"):
        SpikeDetector().add("E", T0, 3, 2)


# -- the CUSUM ------------------------------------------------------------------------------

CUSUM = CusumRule(odds_ratio=5.0, threshold=4.0, min_negative=4)


def test_cusum_needs_negatives_close_together() -> None:
    det = CusumDetector(CUSUM)
    # A quiet entity: six negative tweets a day apart, nothing else. S climbs, but the
    # window never holds four of them: no alert.
    events = []
    for day in range(6):
        det.add("Quiet", T0 + day * DAY, 1, 1)
        events += det.advance(T0 + day * DAY + 59)
    assert events == [] and det.alerts() == {}


def test_cusum_alarms_on_a_burst_and_closes_when_the_share_recovers() -> None:
    det = make_detector(CUSUM)
    assert isinstance(det, CusumDetector)
    assert feed_steady(det, "BMW", T0, T0 + 7 * DAY, 15 * 60, neg_every=10) == []
    burst = T0 + 7 * DAY
    opened = []
    for i in range(10):
        det.add("BMW", burst + i * 300, 1, 1)
        opened += det.advance(burst + i * 300 + 59)
    assert [e.kind for e in opened] == ["open"]
    alert = opened[0].alert
    assert alert.evidence.statistic >= CUSUM.threshold and alert.evidence.p_value is None
    assert alert.evidence.negative >= 4 and alert.to_json()["evidence"]["statistic"] > 0
    after = feed_steady(det, "BMW", burst + HOUR, burst + 3 * DAY, 15 * 60, neg_every=10)
    assert [e.kind for e in after] == ["close"]
    assert det.alerts()["BMW"].end > alert.start


def test_cusum_counts_a_late_minute_at_the_next_step() -> None:
    det = CusumDetector(CUSUM)
    feed_steady(det, "E", T0, T0 + 2 * DAY, 30 * 60, neg_every=10)
    now = T0 + 2 * DAY + 3600
    det.add("E", now, 0, 1)
    det.advance(now + 59)
    det.add("E", now - 600, 8, 8)  # late: a minute before the last one folded in
    (event,) = det.advance(now + 120)
    assert event.kind == "open" and det.counts("E", now - 3600, now + 60) == (8, 9)
