"""When does a free run differ from another? A rule on ensembles of scores, and a check that it may be used.

**The rule.** Each run is an ensemble of members (initial-condition members, or runs of the same
method with different ML seeds grouped by ``free_runs.runs.<name>.ensemble``); each member has one
scalar score per variable (the RMSE of its time mean against the truth). Two ensembles differ
significantly when

* both have at least ``MIN_MEMBERS`` members (otherwise the comparison is *not testable*),
* their score ranges do not overlap (every member of one scores below every member of the other), and
* a Welch t-test (unequal variances) on the two sets of scores gives p < ``ALPHA``.

Both conditions together: the range condition alone is met by chance with few members, the t-test
alone by two tight ensembles whose difference is tiny against the run-to-run variability.

The former test compared |Δ score| with the *field-to-field* floor (the RMSE between two members'
time-mean fields). By the triangle inequality |RMSE(a, truth) - RMSE(b, truth)| <= RMSE(a, b), so
two members' scores can never differ by more than that floor: it is a bound, not the scores' spread,
and the test was several times too strict. The floor is still reported, labelled, as a second figure.

**Saturation.** The rule is only as good as the members' spread: members that have not diverged
(a 0.01 K perturbation after two weeks) give tight, identical-looking ensembles and every difference
passes. The check compares the field-to-field floor of the control's members (mean pairwise RMSE of
their time means) with what two *independent* time means of the same length differ by in the truth
itself: sqrt(2) x the standard deviation of window means, estimated from the truth's whole series
by overlapping batch means (Meketon & Schmeiser 1984), area-weighted like the RMSE. The spread has
saturated when the ratio reaches ``SATURATION_RATIO``; below it, nothing is concluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nudgeml.metrics import area_weights

ALPHA = 0.05
MIN_MEMBERS = 2
# Members' time means must differ at least half as much as two independent stretches of the truth of
# the same length: the estimate of either side is noisy (few members, few truth windows) and the model's
# variability need not equal the truth's, so half is a margin, not a tuned value. Members that have not
# diverged sit orders of magnitude below it.
SATURATION_RATIO = 0.5

BETTER, WORSE, NOT_SIGNIFICANT, NOT_TESTABLE, NOT_CONCLUDED = "better", "worse", "not significant", "not testable", "not concluded"

RULE_TEXT = (
    f"Two ensembles of scores (each member's RMSE of the time mean) differ significantly when each has at least {MIN_MEMBERS} members, "
    f"their score ranges do not overlap, and a Welch t-test gives p < {ALPHA:g}; nothing is concluded while the control members' "
    f"spread has not saturated (their time means differ less than {SATURATION_RATIO:g} x as much as two independent time means "
    "of the same length within the truth). Precipitation's distribution is judged the same way on each member's 1 - Perkins skill "
    "score (precip_pdf) and Wasserstein distance (precip_w1) of daily precipitation to the truth's, with precipitation's saturation."
)


@dataclass(frozen=True)
class Comparison:
    """One ensemble of scores against a reference ensemble (lower scores are better)."""

    verdict: str  # better | worse | not significant | not testable | not concluded
    n: tuple[int, int]  # members of (ensemble, reference)
    delta: float | None = None  # mean score minus the reference's mean score
    p: float | None = None  # Welch t-test p-value
    ranges_overlap: bool | None = None
    reason: str = ""

    @property
    def significant(self) -> bool | None:
        """True (better/worse), False (not significant), None (not testable / not concluded)."""
        if self.verdict in (BETTER, WORSE):
            return True
        return False if self.verdict == NOT_SIGNIFICANT else None

    def text(self) -> str:
        """The verdict in words, with what decided it."""
        if self.verdict in (NOT_TESTABLE, NOT_CONCLUDED):
            return f"{self.verdict} ({self.reason})"
        p = "p < 0.001" if self.p is not None and self.p < 1e-3 else f"p = {self.p:.3f}"
        overlap = "ranges overlap" if self.ranges_overlap else "ranges apart"
        return f"{self.verdict} ({self.delta:+.3g}, {overlap}, {p})"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "significant": self.significant, "n": list(self.n), "delta": self.delta, "p": self.p, "ranges_overlap": self.ranges_overlap, "reason": self.reason, "text": self.text()}


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value. Two constant samples (no spread at all) give p = 0 when their
    values differ and 1 when equal, the limit scipy leaves undefined."""
    from scipy.stats import ttest_ind

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.ptp(a) == 0.0 and np.ptp(b) == 0.0:
        return 1.0 if a[0] == b[0] else 0.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def compare_scores(scores: Sequence[float], reference: Sequence[float], *, alpha: float = ALPHA, min_members: int = MIN_MEMBERS) -> Comparison:
    """The rule on two ensembles of scores (lower is better): better, worse, not significant or not testable."""
    a = [float(x) for x in scores if math.isfinite(float(x))]
    b = [float(x) for x in reference if math.isfinite(float(x))]
    n = (len(a), len(b))
    if min(n) < min_members:
        return Comparison(NOT_TESTABLE, n, reason=f"{n[0]} vs {n[1]} members, need {min_members} each")
    delta = float(np.mean(a) - np.mean(b))
    overlap = not (max(a) < min(b) or max(b) < min(a))
    p = welch_p(a, b)
    if overlap or not p < alpha:
        return Comparison(NOT_SIGNIFICANT, n, delta, p, overlap)
    return Comparison(BETTER if delta < 0 else WORSE, n, delta, p, overlap)


def not_concluded(c: Comparison, reason: str) -> Comparison:
    """The same comparison, its verdict withheld (the spread has not saturated); one that was not testable
    anyway stays so, the reason added."""
    if c.verdict == NOT_TESTABLE:
        return Comparison(NOT_TESTABLE, c.n, reason=f"{c.reason}; {reason}")
    return Comparison(NOT_CONCLUDED, c.n, c.delta, c.p, c.ranges_overlap, reason)


# --------------------------------------------------------------------------------------------------
# Saturation of the members' spread
# --------------------------------------------------------------------------------------------------


def window_mean_variance(series: np.ndarray, window: int, *, chunk: int = 8192) -> np.ndarray:
    """Variance of a ``window``-step time mean at each point of ``series`` ``(time, ...)``, by overlapping
    batch means: n / ((n - b)(n - b + 1)) * sum_j (mean_j - mean)^2 over all n - b + 1 windows (for
    b = 1 the sample variance). Needs n >= 2b (at least two disjoint windows)."""
    x = np.asarray(series)
    n, b = x.shape[0], int(window)
    if b < 1 or n < 2 * b:
        raise ValueError(f"window_mean_variance: {n} times hold fewer than two windows of {b}")
    flat = x.reshape(n, -1)
    out = np.empty(flat.shape[1], np.float64)
    for s in range(0, flat.shape[1], chunk):  # chunks over space bound the float64 copies' memory
        c = flat[:, s : s + chunk].astype(np.float64)
        c -= c.mean(axis=0)
        cs = np.concatenate([np.zeros((1, c.shape[1])), np.cumsum(c, axis=0)])
        means = (cs[b:] - cs[:-b]) / b
        out[s : s + chunk] = n / ((n - b) * (n - b + 1)) * (means**2).sum(axis=0)
    return out.reshape(x.shape[1:])


def independent_mean_spread(series: np.ndarray, window: int, lat_deg: np.ndarray) -> float:
    """Expected area-weighted RMSE between two independent ``window``-step time means of ``series``
    ``(time, ..., lat, lon)``: sqrt(mean over levels and cells (area-weighted) of 2 x variance)."""
    var = window_mean_variance(series, window)
    w = area_weights(lat_deg, var.shape[-1])
    return float(np.sqrt((2.0 * var * w).sum(axis=(-2, -1)).mean()))


@dataclass(frozen=True)
class Saturation:
    member_spread: float | None  # field-to-field floor of the control members (report units)
    truth_spread: float | None  # RMSE between two independent same-length means within the truth
    saturated: bool | None  # None: not assessable
    reason: str = ""

    @property
    def ratio(self) -> float | None:
        if self.member_spread is None or not self.truth_spread:
            return None
        return self.member_spread / self.truth_spread

    def to_json(self) -> dict[str, Any]:
        return {"member_spread": self.member_spread, "truth_spread": self.truth_spread, "ratio": self.ratio, "saturated": self.saturated, "reason": self.reason}


def saturation(member_spread: float | None, truth_spread: float | None, *, threshold: float = SATURATION_RATIO, why_missing: str = "") -> Saturation:
    """Whether the members' spread of time means has reached ``threshold`` x that of independent truth means."""
    if member_spread is None or truth_spread is None:
        return Saturation(member_spread, truth_spread, None, why_missing or "not assessable")
    if not (math.isfinite(truth_spread) and math.isfinite(member_spread)):
        return Saturation(member_spread, truth_spread, None, "a spread is not finite (missing values)")
    if truth_spread <= 0.0:
        return Saturation(member_spread, truth_spread, None, "the truth does not vary")
    ok = member_spread >= threshold * truth_spread
    ratio = member_spread / truth_spread
    return Saturation(member_spread, truth_spread, ok, f"members' spread {ratio:.2f} x the truth's" + ("" if ok else f" (< {threshold:g})"))


