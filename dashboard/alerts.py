"""Negative-spike alerts per entity: a rise of the negative share against its own baseline.

Pure and streaming: no MQTT, no storage, no clock of its own. It is fed per-minute counts
(entity, minute, negative, related) in event time and told how far time has advanced;
it answers with the alerts that opened or closed. ``dashboard serve`` and ``dashboard
collect`` feed it from the label records they receive; benchmarks/alert_eval.py from a
replayed RepLab stream. docs/alerts.md says how the method and its parameters were chosen
and what they give.

The test. At time ``t`` the *window* holds the last ``window_s`` of related tweets of an
entity (``k`` negative out of ``n``), the *baseline* the ``baseline_s`` before that
(``k_b`` of ``n_b``). The baseline negative share is uncertain, more so for a quiet
entity, so it gets a Beta posterior: a weak prior (mean ``prior_share``, weight
``prior_weight`` tweets) updated with the baseline counts. Under "nothing changed" the
window's negative count is then beta-binomial(n, a, b), and the one-sided tail
``P(K >= k)`` is the p-value. An alert opens when p < ``alpha`` and the window has at
least ``min_negative`` negative tweets (low volume cannot alarm however lopsided), and
closes once p > ``close_alpha`` (hysteresis: no flapping around the threshold), i.e. when
the window's share is back near the baseline's.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MINUTE = 60


@dataclass(frozen=True)
class SpikeRule:
    """The detector's parameters (defaults: chosen on tuning brands, docs/alerts.md)."""

    window_s: int = 2 * 3600
    baseline_s: int = 7 * 86400
    alpha: float = 0.01
    close_alpha: float = 0.05
    min_negative: int = 4
    prior_share: float = 0.15
    prior_weight: float = 20.0

    def __post_init__(self) -> None:
        if self.window_s < MINUTE or self.baseline_s < MINUTE:
            raise ValueError("window_s and baseline_s must be at least a minute")
        if not 0 < self.alpha <= self.close_alpha < 1:
            raise ValueError("need 0 < alpha <= close_alpha < 1")
        if not 0 < self.prior_share < 1 or self.prior_weight <= 0:
            raise ValueError("need 0 < prior_share < 1 and prior_weight > 0")
        if self.min_negative < 1:
            raise ValueError("min_negative must be at least 1")


@dataclass(frozen=True)
class Evidence:
    """The counts behind one evaluation."""

    at: int  # evaluation time, epoch seconds (event time)
    negative: int  # window
    related: int
    baseline_negative: int
    baseline_related: int
    baseline_share: float  # posterior mean, prior included
    p_value: float | None  # the window test's; None for the CUSUM
    statistic: float | None = None  # the CUSUM's S; None for the window test

    @property
    def share(self) -> float:
        return self.negative / self.related if self.related else 0.0

    @property
    def excess(self) -> float:
        """Negative tweets above what the baseline share predicts for the window."""
        return self.negative - self.related * self.baseline_share


@dataclass
class Alert:
    entity: str
    start: int  # epoch seconds (event time) the alert opened
    evidence: Evidence  # at the peak (smallest p-value) so far
    end: int | None = None  # when it closed
    state: Literal["open", "closed"] = "open"

    @property
    def size(self) -> float:
        """Excess negative tweets at the peak."""
        return round(self.evidence.excess, 1)

    def to_json(self) -> dict[str, Any]:
        ev = asdict(self.evidence)
        ev["share"] = round(self.evidence.share, 4)
        ev["baseline_share"] = round(self.evidence.baseline_share, 4)
        if self.evidence.p_value is not None:
            ev["p_value"] = float(f"{self.evidence.p_value:.3g}")
        if self.evidence.statistic is not None:
            ev["statistic"] = round(self.evidence.statistic, 3)
        return {
            "entity": self.entity,
            "state": self.state,
            "start": self.start,
            "end": self.end,
            "size": self.size,
            "evidence": ev,
        }


@dataclass(frozen=True)
class AlertEvent:
    kind: Literal["open", "close"]
    alert: Alert


def beta_binomial_sf(k: int, n: int, a: float, b: float) -> float:
    """P(K >= k) for K ~ beta-binomial(n, a, b), summed in log space.

    The upper tail is summed from k up when k is above the mean, else the lower one from
    k - 1 down; terms fall monotonically away from the mode, so each sum stops once they
    are negligible: O(sqrt(n)) terms rather than n, which matters at thousands of tweets
    per window.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    const = math.lgamma(n + 1) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    const -= math.lgamma(n + a + b)

    def log_pmf(j: int) -> float:
        return (
            const
            - math.lgamma(j + 1)
            - math.lgamma(n - j + 1)
            + math.lgamma(j + a)
            + math.lgamma(n - j + b)
        )

    upper = k > n * a / (a + b)
    js = range(k, n + 1) if upper else range(k - 1, -1, -1)
    total, largest = 0.0, -math.inf
    for j in js:
        term = log_pmf(j)
        largest = max(largest, term)
        total += math.exp(term)
        if term < largest - 40:  # e^-40 of the largest term: nothing left that counts
            break
    return min(1.0, total) if upper else max(0.0, min(1.0, 1.0 - total))


@dataclass
class _Stream:
    """One entity's per-minute counts, with cumulative sums for range queries."""

    minutes: list[int] = field(default_factory=list)
    negative: list[int] = field(default_factory=list)
    related: list[int] = field(default_factory=list)
    cum_negative: list[int] = field(default_factory=lambda: [0])
    cum_related: list[int] = field(default_factory=lambda: [0])
    evaluated_to: int | None = None
    alert: Alert | None = None

    def add(self, minute: int, negative: int, related: int) -> None:
        i = bisect.bisect_left(self.minutes, minute)
        if i < len(self.minutes) and self.minutes[i] == minute:
            self.negative[i] += negative
            self.related[i] += related
            self._rebuild(i)
        elif i == len(self.minutes):  # the usual case: time moves forward
            self.minutes.append(minute)
            self.negative.append(negative)
            self.related.append(related)
            self.cum_negative.append(self.cum_negative[-1] + negative)
            self.cum_related.append(self.cum_related[-1] + related)
        else:  # a late minute (out-of-order delivery)
            self.minutes.insert(i, minute)
            self.negative.insert(i, negative)
            self.related.insert(i, related)
            self.cum_negative.insert(i + 1, 0)
            self.cum_related.insert(i + 1, 0)
            self._rebuild(i)

    def _rebuild(self, start: int) -> None:
        for i in range(start, len(self.minutes)):
            self.cum_negative[i + 1] = self.cum_negative[i] + self.negative[i]
            self.cum_related[i + 1] = self.cum_related[i] + self.related[i]

    def sums(self, after: int, upto: int) -> tuple[int, int]:
        """(negative, related) over minutes m with after < m <= upto."""
        lo = bisect.bisect_right(self.minutes, after)
        hi = bisect.bisect_right(self.minutes, upto)
        return (
            self.cum_negative[hi] - self.cum_negative[lo],
            self.cum_related[hi] - self.cum_related[lo],
        )

    def forget_before(self, minute: int) -> None:
        cut = bisect.bisect_left(self.minutes, minute)
        if cut < 1024:  # drop in chunks: rebuilding the sums is O(n)
            return
        del self.minutes[:cut], self.negative[:cut], self.related[:cut]
        base_n, base_r = self.cum_negative[cut], self.cum_related[cut]
        self.cum_negative = [c - base_n for c in self.cum_negative[cut:]]
        self.cum_related = [c - base_r for c in self.cum_related[cut:]]


class SpikeDetector:
    """Per-entity negative-spike detection over per-minute counts (module docstring).

    ``add`` counts; ``advance(now)`` evaluates every moment up to ``now`` at which an
    entity's window changed (a minute entering it, or leaving it ``window_s`` later) and
    returns the alerts that opened or closed, in time order per entity.
    """

    def __init__(self, rule: SpikeRule | None = None) -> None:
        self.rule = rule or SpikeRule()
        self._streams: dict[str, _Stream] = {}

    def add(self, entity: str, minute: int, negative: int, related: int) -> None:
        """Counts of related tweets in the minute starting at ``minute`` (epoch s)."""
        if negative < 0 or related < negative:
            raise ValueError(f"need 0 <= negative <= related, got {negative}, {related}")
        if related:
            minute -= minute % MINUTE
            self._streams.setdefault(entity, _Stream()).add(minute, negative, related)

    def advance(self, now: int) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for entity, stream in self._streams.items():
            events.extend(self._advance(entity, stream, now))
        return events

    def alerts(self) -> dict[str, Alert]:
        """Each entity's current alert, or its last one (closed); entities never alerted
        are absent."""
        return {e: s.alert for e, s in self._streams.items() if s.alert is not None}

    def entities(self) -> list[str]:
        return list(self._streams)

    def counts(self, entity: str, after: int, upto: int) -> tuple[int, int]:
        """(negative, related) of ``entity`` in minutes m with after < m <= upto (only
        what is still kept: the window and the baseline)."""
        stream = self._streams.get(entity)
        return stream.sums(after, upto) if stream is not None else (0, 0)

    def evaluate(self, entity: str, at: int) -> Evidence:
        """The test at time ``at`` for ``entity`` (no state change)."""
        stream = self._streams.get(entity) or _Stream()
        rule = self.rule
        negative, related = stream.sums(at - rule.window_s, at)
        base_neg, base_rel = stream.sums(at - rule.window_s - rule.baseline_s, at - rule.window_s)
        a = rule.prior_share * rule.prior_weight + base_neg
        b = (1 - rule.prior_share) * rule.prior_weight + (base_rel - base_neg)
        p = beta_binomial_sf(negative, related, a, b) if negative >= rule.min_negative else 1.0
        return Evidence(at, negative, related, base_neg, base_rel, a / (a + b), p)

    def _advance(self, entity: str, stream: _Stream, now: int) -> list[AlertEvent]:
        rule = self.rule
        last = stream.evaluated_to
        times: Iterable[int]
        if last is None or now - last > rule.window_s + rule.baseline_s:
            times = [now]
        else:
            # Moments a minute left the window: its state may change then, not only now.
            lo = bisect.bisect_right(stream.minutes, last - rule.window_s)
            hi = bisect.bisect_right(stream.minutes, now - rule.window_s)
            times = [m + rule.window_s for m in stream.minutes[lo:hi]] + [now]
        events = []
        for at in times:
            if last is not None and at < last:
                continue
            event = self._step(entity, stream, at)
            if event is not None:
                events.append(event)
        stream.evaluated_to = now if last is None else max(last, now)
        stream.forget_before(now - rule.window_s - rule.baseline_s)
        return events

    def _step(self, entity: str, stream: _Stream, at: int) -> AlertEvent | None:
        evidence = self.evaluate(entity, at)
        alert = stream.alert
        if alert is not None and alert.state == "open":
            assert evidence.p_value is not None and alert.evidence.p_value is not None
            if evidence.p_value < alert.evidence.p_value:
                alert.evidence = evidence
            if evidence.p_value > self.rule.close_alpha:
                alert.state, alert.end = "closed", at
                return AlertEvent("close", alert)
            return None
        if evidence.p_value is not None and evidence.p_value < self.rule.alpha:
            stream.alert = Alert(entity, at, evidence)
            return AlertEvent("open", stream.alert)
        return None


@dataclass(frozen=True)
class CusumRule:
    """A Bernoulli CUSUM's parameters (see :class:`CusumDetector`)."""

    odds_ratio: float = 5.0
    threshold: float = 4.0
    window_s: int = 2 * 3600  # the low-volume guard's span, and the gap before the baseline
    baseline_s: int = 7 * 86400
    min_negative: int = 4
    prior_share: float = 0.15
    prior_weight: float = 20.0

    def __post_init__(self) -> None:
        if self.odds_ratio <= 1 or self.threshold <= 0:
            raise ValueError("need odds_ratio > 1 and threshold > 0")
        if self.window_s < MINUTE or self.baseline_s < MINUTE:
            raise ValueError("window_s and baseline_s must be at least a minute")
        if not 0 < self.prior_share < 1 or self.prior_weight <= 0:
            raise ValueError("need 0 < prior_share < 1 and prior_weight > 0")
        if self.min_negative < 1:
            raise ValueError("min_negative must be at least 1")


class CusumDetector:
    """Per-entity Bernoulli CUSUM over per-minute counts; the interface of SpikeDetector.

    Each minute's related tweets (k negative of n) update, in time order,
    S = max(0, S + k ln(p1/p0) + (n - k) ln((1 - p1)/(1 - p0))): p0 is the entity's
    baseline share (the Beta posterior of the ``baseline_s`` before the last ``window_s``,
    prior as in the window test), p1 the share at ``odds_ratio`` times its odds. S grows
    with every negative tweet and shrinks with every other one, so it weighs volume by
    itself: one negative among fifty others does little. An alert opens when S reaches
    ``threshold`` while the last ``window_s`` hold at least ``min_negative`` negative
    tweets (a quiet entity's few negatives spread over days cannot alarm), and closes when
    S is back at 0. A minute that arrives after later ones were folded in counts in the
    sums at once and in S at the next :meth:`advance`.
    """

    def __init__(self, rule: CusumRule | None = None) -> None:
        self.rule = rule or CusumRule()
        self._streams: dict[str, _Stream] = {}
        self._s: dict[str, float] = {}
        self._done: dict[str, int] = {}  # the last minute folded into S
        self._late: dict[str, list[int]] = {}  # counts of minutes that came after that

    def add(self, entity: str, minute: int, negative: int, related: int) -> None:
        if negative < 0 or related < negative:
            raise ValueError(f"need 0 <= negative <= related, got {negative}, {related}")
        if not related:
            return
        minute -= minute % MINUTE
        self._streams.setdefault(entity, _Stream()).add(minute, negative, related)
        if minute <= self._done.get(entity, minute - 1):
            late = self._late.setdefault(entity, [0, 0])
            late[0] += negative
            late[1] += related

    def alerts(self) -> dict[str, Alert]:
        return {e: s.alert for e, s in self._streams.items() if s.alert is not None}

    def entities(self) -> list[str]:
        return list(self._streams)

    def counts(self, entity: str, after: int, upto: int) -> tuple[int, int]:
        stream = self._streams.get(entity)
        return stream.sums(after, upto) if stream is not None else (0, 0)

    def advance(self, now: int) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for entity, stream in self._streams.items():
            events.extend(self._advance(entity, stream, now))
        return events

    def _advance(self, entity: str, stream: _Stream, now: int) -> list[AlertEvent]:
        rule, events = self.rule, []
        done = self._done.get(entity)
        s = self._s.get(entity, 0.0)
        steps: list[tuple[int, int, int]] = []
        late = self._late.pop(entity, None)
        if late is not None and done is not None:
            steps.append((done, *late))
        start = 0 if done is None else bisect.bisect_right(stream.minutes, done)
        stop = bisect.bisect_right(stream.minutes, now)
        steps += [
            (stream.minutes[i], stream.negative[i], stream.related[i]) for i in range(start, stop)
        ]
        for minute, k, n in steps:
            base_k, base_n = stream.sums(
                minute - rule.window_s - rule.baseline_s, minute - rule.window_s
            )
            a = rule.prior_share * rule.prior_weight + base_k
            b = (1 - rule.prior_share) * rule.prior_weight + base_n - base_k
            p0 = a / (a + b)
            odds = p0 / (1 - p0) * rule.odds_ratio
            p1 = odds / (1 + odds)
            s = max(0.0, s + k * math.log(p1 / p0) + (n - k) * math.log((1 - p1) / (1 - p0)))
            at = minute + MINUTE - 1  # the minute's counts are complete at its end
            win_k, win_n = stream.sums(at - rule.window_s, at)
            evidence = Evidence(at, win_k, win_n, base_k, base_n, p0, None, s)
            alert = stream.alert
            if alert is not None and alert.state == "open":
                if s > (alert.evidence.statistic or 0.0):
                    alert.evidence = evidence
                if s == 0.0:
                    alert.state, alert.end = "closed", at
                    events.append(AlertEvent("close", alert))
            elif s >= rule.threshold and win_k >= rule.min_negative:
                stream.alert = Alert(entity, at, evidence)
                events.append(AlertEvent("open", stream.alert))
            done = minute if done is None else max(done, minute)
        if done is not None:
            self._done[entity] = done
        self._s[entity] = s
        stream.forget_before(now - rule.window_s - rule.baseline_s)
        return events


Rule = SpikeRule | CusumRule


def make_detector(rule: Rule | None = None) -> SpikeDetector | CusumDetector:
    """The detector for a rule: the window test or the CUSUM."""
    return CusumDetector(rule) if isinstance(rule, CusumRule) else SpikeDetector(rule)
