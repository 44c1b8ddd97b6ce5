"""The significance rule on ensembles of scores, the saturation check, and the grouping of runs into ensembles."""

import numpy as np
import pytest
from scipy import stats

from nudgeml.errors import ConfigError
from nudgeml.naming import ensembles, run_names
from nudgeml.report import noise_floor
from nudgeml.significance import (
    BETTER,
    NOT_CONCLUDED,
    NOT_SIGNIFICANT,
    NOT_TESTABLE,
    WORSE,
    compare_scores,
    independent_mean_spread,
    not_concluded,
    saturation,
    window_mean_variance,
)

LAT = np.array([-60.0, -20.0, 20.0, 60.0])


def test_clearly_separated_ensembles_differ():
    control = [2.10, 2.15, 2.20, 2.12, 2.18]
    method = [1.70, 1.74, 1.72]
    c = compare_scores(method, control)
    assert c.verdict == BETTER and c.significant is True
    assert c.ranges_overlap is False and c.p < 0.001
    assert c.delta == pytest.approx(np.mean(method) - np.mean(control))
    assert compare_scores(control, method).verdict == WORSE


def test_overlapping_ranges_are_not_significant_even_with_a_small_p():
    a = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 2.05]
    b = [2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7]
    assert stats.ttest_ind(a, b, equal_var=False).pvalue < 0.05  # the t-test alone would pass it
    c = compare_scores(a, b)
    assert c.ranges_overlap is True
    assert c.verdict == NOT_SIGNIFICANT and c.significant is False


def test_ranges_apart_but_welch_p_too_large_with_two_members_each():
    a, b = [1.0, 1.5], [1.6, 2.4]
    c = compare_scores(a, b)
    assert c.ranges_overlap is False  # the range condition alone would pass it
    assert c.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert c.p >= 0.05
    assert c.verdict == NOT_SIGNIFICANT


def test_touching_ranges_overlap():
    assert compare_scores([1.0, 1.1, 1.2], [1.2, 1.3, 1.4]).ranges_overlap is True


def test_one_member_is_not_testable_and_says_so():
    c = compare_scores([1.0], [2.0, 2.1, 2.2])
    assert c.verdict == NOT_TESTABLE and c.significant is None
    assert c.n == (1, 3)
    assert "1 vs 3 members" in c.text()
    assert compare_scores([1.0, float("nan")], [2.0, 2.1]).verdict == NOT_TESTABLE  # a failed member does not count


def test_members_without_any_spread():
    # members that never diverged: identical scores; scipy's t statistic is undefined there
    assert compare_scores([1.0, 1.0], [2.0, 2.0]).verdict == BETTER
    assert compare_scores([1.0, 1.0], [1.0, 1.0]).verdict == NOT_SIGNIFICANT


def test_not_concluded_keeps_the_numbers_and_withholds_the_verdict():
    c = not_concluded(compare_scores([1.0, 1.01], [2.0, 2.01]), "spread not saturated")
    assert c.verdict == NOT_CONCLUDED and c.significant is None
    assert c.text() == "not concluded (spread not saturated)"
    assert c.delta == pytest.approx(-1.0)
    nt = not_concluded(compare_scores([1.0], [2.0, 2.1]), "spread not saturated")
    assert nt.verdict == NOT_TESTABLE and nt.text() == "not testable (1 vs 2 members, need 2 each; spread not saturated)"


def test_window_mean_variance_matches_the_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    np.testing.assert_allclose(window_mean_variance(x, 1), x.var(axis=0, ddof=1))  # b = 1: the sample variance
    n, b = 40, 7
    means = np.array([x[j : j + b].mean(axis=0) for j in range(n - b + 1)])
    expect = n / ((n - b) * (n - b + 1)) * ((means - x.mean(axis=0)) ** 2).sum(axis=0)
    np.testing.assert_allclose(window_mean_variance(x, b, chunk=2), expect)
    with pytest.raises(ValueError, match="fewer than two windows"):
        window_mean_variance(x, 21)


def test_window_mean_variance_of_white_noise_is_variance_over_length():
    rng = np.random.default_rng(1)
    x = rng.normal(scale=2.0, size=(20000, 4))
    np.testing.assert_allclose(window_mean_variance(x, 50), 4.0 / 50, rtol=0.15)


def _truth_and_members(rng, diverged: bool):
    """White-noise 'weather' (time, lev, lat, lon); members' 30-step time means either from independent
    stretches (diverged) or from one stretch plus a tiny perturbation (members that never diverged)."""
    n, b = 3000, 30
    truth = rng.normal(size=(n, 2, LAT.size, 6))
    if diverged:
        members = [rng.normal(size=(b, 2, LAT.size, 6)).mean(axis=0) for _ in range(4)]
    else:
        base = rng.normal(size=(b, 2, LAT.size, 6)).mean(axis=0)
        members = [base + 1e-3 * rng.normal(size=base.shape) for _ in range(4)]
    floor = noise_floor([{"u": m} for m in members], LAT)["u"]
    return floor, independent_mean_spread(truth, b, LAT)


def test_saturated_members_pass_the_check():
    floor, truth_spread = _truth_and_members(np.random.default_rng(2), diverged=True)
    assert truth_spread == pytest.approx(np.sqrt(2.0 / 30), rel=0.15)
    s = saturation(floor, truth_spread)
    assert s.saturated is True and s.ratio == pytest.approx(1.0, abs=0.3)


def test_members_that_have_not_diverged_fail_the_check():
    floor, truth_spread = _truth_and_members(np.random.default_rng(3), diverged=False)
    s = saturation(floor, truth_spread)
    assert s.saturated is False and s.ratio < 0.05
    assert "< 0.5" in s.reason


def test_saturation_not_assessable_without_a_floor():
    s = saturation(None, 1.0, why_missing="the control has 1 complete member, needs 2")
    assert s.saturated is None and "1 complete member" in s.reason
    assert saturation(0.3, float("nan")).saturated is None  # missing values in the truth: no verdict either way


def test_runs_group_into_ensembles_by_members_and_by_key():
    runs = {
        "control": {"correction": "none", "members": 3},
        "mean": {"correction": "mean", "climatology": "annual"},
        "ml-a": {"correction": "ml", "model": "mlp", "mean_residual": True, "ensemble": "ml-seeds"},
        "ml-a-s1": {"correction": "ml", "model": "mlp-s1", "mean_residual": True, "ensemble": "ml-seeds", "members": 2},
        "ml-b": {"correction": "ml", "model": "cnn", "ensemble": "ml-b"},
    }
    got = ensembles(runs, run_names(runs))
    assert got == {"control": ["control", "control.m1", "control.m2"], "mean": ["mean"], "ml-seeds": ["ml-a", "ml-a-s1", "ml-a-s1.m1"], "ml-b": ["ml-b"]}


def test_an_ensemble_of_different_methods_is_rejected_naming_the_key():
    runs = {"ml-a": {"correction": "ml", "model": "mlp", "ensemble": "s"}, "ml-b": {"correction": "ml", "model": "mlp", "scale": 0.5, "ensemble": "s"}}
    with pytest.raises(ConfigError, match=r"free_runs\.runs\.ml-a\.ensemble.*'ml-b'"):
        ensembles(runs, run_names(runs))


def test_an_ensemble_named_after_a_run_of_another_ensemble_is_rejected():
    runs = {"control": {"correction": "none", "ensemble": "ctl"}, "other": {"correction": "none", "ensemble": "control"}}
    with pytest.raises(ConfigError, match=r"free_runs\.runs\.other\.ensemble.*'control'"):
        ensembles(runs, run_names(runs))
