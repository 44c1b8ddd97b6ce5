"""The evaluation report: every free run against the ERA5(-like) truth on the model grid.

Over the evaluation window (the free runs' period after ``report.skip_days``):

* a conclusion block first: which ensembles of runs differ from the control and from the mean-tendency
  baseline under the rule of ``nudgeml.significance`` (score ranges apart and Welch p < 0.05, >= 2
  members each), whether the control members' spread has saturated (if not, nothing is concluded and a
  banner says so), the evaluation window, and for which variables the nudged run is a lower bound;
* a table of the area-weighted time-mean bias and RMSE of u, v, T, q, ps and precipitation for each run
  and member, and the change against the control and against the mean-tendency baseline with its
  verdict; the **field-to-field floor** (mean pairwise RMSE between the time means of the control's
  members) as a second, labelled figure (it bounds the members' score differences, see docs/evaluation.md);
* maps of the time-mean bias (u at an upper level, T at the lowest level, precipitation) and zonal-mean
  cross-sections of the u and T bias;
* the distribution of daily precipitation: PDFs on log bins, percentiles (p50, p90, p99, p99.9), the
  wet-day intensity (mean over cell-days of at least 1 mm) and the share of cell-days above the truth's
  p99, the Perkins skill score and the Wasserstein distance to the truth;
* offline skill (R^2 per level), guard counts, stability, configuration, software versions, git commit.

Everything is written into one self-contained HTML page (figures embedded as data URIs).
RMSE of a 3-D field is taken over all levels and grid points (levels weigh equally, cells by area).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import itertools
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nudgeml.conventions import PRECIP_CORRECTION_VAR, daily_totals_mm, read_histhf
from nudgeml.errors import ConfigError, InputError
from nudgeml.metrics import area_weights, weighted_bias, weighted_rmse, zonal_rmse
from nudgeml.precip_mapping import METHOD, QuantileMapping, run_rng
from nudgeml.regrid import check_on_truth_grid, open_forcing
from nudgeml.significance import (
    NOT_CONCLUDED,
    RULE_TEXT,
    SATURATION_RATIO,
    Comparison,
    Saturation,
    compare_scores,
    independent_mean_spread,
    not_concluded,
    saturation,
)

STATE_VARS = ("u", "v", "t", "q", "ps")
ALL_VARS = (*STATE_VARS, "precip")
# precipitation's distribution, judged by the same rule on one score per member (lower is better): the
# share of the daily-precipitation PDF that misses the truth's (1 - Perkins skill) and the Wasserstein
# distance to the truth's daily values; with precipitation's saturation (the same field and window)
DIST_SCORES = {"precip_pdf": ("perkins", lambda x: 1.0 - x), "precip_w1": ("wasserstein", lambda x: x)}
# with report.precip_mapping: the same three precipitation scores of every run's precipitation mapped
# onto the analysis' distribution (nudgeml.precip_mapping), judged by the same rule
MAPPED = "_mapped"
MAPPED_VARS = ("precip" + MAPPED, *(k + MAPPED for k in DIST_SCORES))
VERDICT_VARS = (*ALL_VARS, *DIST_SCORES, *MAPPED_VARS)
SATURATION_OF = {k: "precip" for k in (*DIST_SCORES, *MAPPED_VARS)}
UNITS = {"u": "m/s", "v": "m/s", "t": "K", "q": "g/kg", "ps": "hPa", "precip": "mm/day", "precip_pdf": "1 - Perkins", "precip_w1": "mm/day"}
UNITS |= {k + MAPPED: UNITS[k] for k in ("precip", *DIST_SCORES)}
SCALE = {"u": 1.0, "v": 1.0, "t": 1.0, "q": 1e3, "ps": 1e-2, "precip": 1.0, "precip" + MAPPED: 1.0}  # to the units above
PRECIP_BINS = np.logspace(-1, np.log10(500.0), 101)  # mm/day, as fv3net's online reports
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
# a wet day as ETCCDI counts it: the mean over wet cell-days is their simple daily intensity index
# (SDII), which separates "rains on too few days" from "rains too hard when it rains"
WET_DAY_MM = 1.0


# --------------------------------------------------------------------------------------------------
# Statistics (tested against independent computations in tests/test_report.py)
# --------------------------------------------------------------------------------------------------


def field_metrics(run_mean: Mapping[str, np.ndarray], truth_mean: Mapping[str, np.ndarray], lat: np.ndarray) -> dict[str, dict[str, float]]:
    """Bias and RMSE of time means (area-weighted, in report units) per variable."""
    return {
        v: {"bias": SCALE[v] * weighted_bias(run_mean[v], truth_mean[v], lat), "rmse": SCALE[v] * weighted_rmse(run_mean[v], truth_mean[v], lat)}
        for v in run_mean
        if v in truth_mean
    }


def noise_floor(member_means: Sequence[Mapping[str, np.ndarray]], lat: np.ndarray) -> dict[str, float]:
    """Mean pairwise RMSE between the members' time means, per variable (report units)."""
    if len(member_means) < 2:
        return {}
    out = {}
    for v in member_means[0]:
        pairs = [weighted_rmse(a[v], b[v], lat) for a, b in itertools.combinations(member_means, 2)]
        out[v] = SCALE[v] * float(np.mean(pairs))
    return out


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Quantiles (percent) of ``values`` with ``weights`` (inverse of the weighted empirical CDF, midpoints)."""
    v = np.asarray(values, np.float64).ravel()
    w = np.asarray(weights, np.float64).ravel()
    order = np.argsort(v)
    v, w = v[order], w[order]
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(np.asarray(q, np.float64) / 100.0, cdf, v)


def precip_pdf(daily_mm: np.ndarray, weights: np.ndarray, bins: np.ndarray = PRECIP_BINS) -> tuple[np.ndarray, float]:
    """Area-weighted fraction of (day, cell) samples per bin, and the fraction below the first bin (dry)."""
    d = np.asarray(daily_mm, np.float64).ravel()
    w = np.asarray(weights, np.float64).ravel()
    hist, _ = np.histogram(d, bins=bins, weights=w)
    dry = w[d < bins[0]].sum()
    total = w.sum()
    return hist / total, float(dry / total)


def perkins_skill_score(pdf_a: np.ndarray, pdf_b: np.ndarray) -> float:
    """Perkins et al. (2007): the overlap of two binned distributions, 1 for identical ones."""
    return float(np.minimum(pdf_a, pdf_b).sum())


def wasserstein(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(np.ravel(a), np.ravel(b), np.ravel(wa), np.ravel(wb)))


def daily_precip_from_history(precip_rate: xr.DataArray, window_hours: float = 6.0) -> xr.DataArray:
    """Daily totals (mm/day) from window-mean rates (kg m-2 s-1) labelled at each window's start."""
    per_window = precip_rate * window_hours * 3600.0  # kg m-2 = mm over the window
    grouped = per_window.resample(time="1D")
    total = grouped.sum()
    complete = (grouped.count() == round(24.0 / window_hours)).compute()
    complete = complete.all([d for d in complete.dims if d != "time"])
    return total.sel(time=complete.values)


def wet_day_intensity(daily_mm: np.ndarray, weights: np.ndarray, threshold: float = WET_DAY_MM) -> float | None:
    """Area-weighted mean of the cell-days with at least ``threshold`` mm (None when none is wet)."""
    d = np.asarray(daily_mm, np.float64).ravel()
    w = np.asarray(weights, np.float64).ravel()
    wet = d >= threshold
    return float(np.sum(d[wet] * w[wet]) / np.sum(w[wet])) if wet.any() else None


def share_above(daily_mm: np.ndarray, weights: np.ndarray, threshold: float) -> float:
    """Area-weighted fraction of the cell-days above ``threshold`` mm (the truth's p99: 1 % for the truth)."""
    d = np.asarray(daily_mm, np.float64).ravel()
    w = np.asarray(weights, np.float64).ravel()
    return float(np.sum(w[d > threshold]) / np.sum(w))


#: What a free run's precipitation is in the report (``report.precipitation``).
PRECIP_DEFINITIONS = {
    "total": "the physics' precipitation plus what the humidity correction implies (minus its column integral; "
    "window means, negative sums set to zero), as in fv3net's runs: the column water budget closes but for what "
    "the zero floor adds (the precipitation table's last column)",
    "physics": "the physics' own precipitation (LMDZ's precip), without what the humidity correction removes or adds",
}


def run_precipitation(h: xr.Dataset, path: str | Path, definition: str) -> tuple[xr.DataArray, dict[str, float] | None]:
    """A run's precipitation rate (kg m-2 s-1, per window) under ``definition`` (:data:`PRECIP_DEFINITIONS`),
    and, for ``total`` with a humidity correction, its size: the area-weighted mean of the implied rate
    and of what the zero floor took (mm/day), and the share of window-cells floored, over the whole run."""
    if definition not in PRECIP_DEFINITIONS:
        raise ConfigError(f"config key 'report.precipitation' is {definition!r}: one of {sorted(PRECIP_DEFINITIONS)}")
    rate = h["precip"].load()
    if definition == "physics":
        return rate, None
    name = PRECIP_CORRECTION_VAR[1]  # the canonical name read_histhf gives the record
    if name not in h:
        if "dq" in str(h.attrs.get("corrected", "")).split():
            raise InputError(
                f"{path}: the run corrects humidity (dq) but has no '{PRECIP_CORRECTION_VAR[0]}' (the precipitation the "
                "correction implies); rerun it, or set report.precipitation: physics"
            )
        return rate, None
    corr = h[name].load()
    raw = rate + corr
    total = raw.clip(min=0.0)
    w = area_weights(h["lat"].values, h["lon"].size)
    per_day = 86400.0  # kg m-2 s-1 -> mm/day
    size = {
        "implied_mm_day": float((corr.mean("time").values * w).sum() * per_day),
        "floored_mm_day": float(((total - raw).mean("time").values * w).sum() * per_day),
        "floored_share": float((((raw < 0).mean("time")).values * w).sum()),
    }
    return total, size


def truth_reference(daily: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
    """What every run's daily precipitation is compared with, computed once: the truth's values, weights,
    PDF and p99 (None without a day)."""
    pdf, _ = precip_pdf(daily, weights)
    p99 = float(weighted_quantiles(daily, weights, [99.0])[0]) if np.size(daily) else None
    return daily, weights, pdf, p99


def precip_summary(daily: np.ndarray, weights: np.ndarray, truth: tuple[np.ndarray, np.ndarray, np.ndarray, float | None] | None) -> dict[str, Any]:
    """One run's daily-precipitation statistics; against ``truth`` (:func:`truth_reference`) its scores too."""
    pdf, dry = precip_pdf(daily, weights)
    out: dict[str, Any] = {
        "mean": float(np.sum(daily * weights) / np.sum(weights)),
        "percentiles": {f"p{p:g}": float(v) for p, v in zip(PERCENTILES, weighted_quantiles(daily, weights, PERCENTILES))},
        "dry_fraction": dry,
        "wet_day_intensity": wet_day_intensity(daily, weights),
        "pdf": pdf.tolist(),
    }
    if truth is not None:
        t_daily, t_w, t_pdf, t_p99 = truth
        if t_p99 is not None:
            out["above_truth_p99"] = share_above(daily, weights, t_p99)
        out["perkins"] = perkins_skill_score(np.append(pdf, dry), np.append(t_pdf, 1.0 - t_pdf.sum()))
        out["wasserstein"] = wasserstein(daily, weights, t_daily, t_w)
    return out


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    name: str  # the run (member 0) or member name
    base: str  # the run it belongs to
    correction: str
    ensemble: str
    status: dict[str, Any]
    means: dict[str, np.ndarray] = field(default_factory=dict)
    zonal: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    precip: dict[str, Any] = field(default_factory=dict)
    n_times: int = 0


def _time_means(ds: xr.Dataset, times: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    sel = ds.sel(time=times)
    return {v: sel[v].mean("time").values.astype(np.float64) for v in names}


def truth_mean_spread(
    truth: xr.Dataset, truth_daily: xr.DataArray | None, lat: np.ndarray, n_steps: int, n_days: int
) -> tuple[dict[str, float], dict[str, str]]:
    """Per variable (report units): the RMSE expected between two independent time means as long as the
    evaluation window, within the truth's whole series (``n_steps`` analyses, ``n_days`` days of
    precipitation); and, for the variables where it cannot be estimated, why."""
    spread: dict[str, float] = {}
    why: dict[str, str] = {}
    tt = np.asarray(truth["time"].values, dtype="datetime64[s]")
    steps = np.unique(np.diff(tt))
    for v in STATE_VARS:
        if steps.size != 1:
            why[v] = "the truth's analyses are not evenly spaced"
        elif tt.size < 2 * n_steps:
            why[v] = f"the truth holds {tt.size} analyses, fewer than two windows of {n_steps}"
        else:
            spread[v] = SCALE[v] * independent_mean_spread(truth[v].values, n_steps, lat)
    if truth_daily is None or n_days == 0:
        why["precip"] = "no complete day of precipitation in the window"
    else:
        days = np.asarray(truth_daily["time"].values, dtype="datetime64[D]")
        if days.size > 1 and np.any(np.diff(days) != np.timedelta64(1, "D")):
            why["precip"] = "the truth's daily precipitation has gaps"
        elif days.size < 2 * n_days:
            why["precip"] = f"the truth holds {days.size} days of precipitation, fewer than two windows of {n_days}"
        else:
            spread["precip"] = independent_mean_spread(truth_daily.values, n_days, lat)
    return spread, why


def evaluate_runs(
    forcing_paths: Sequence[str | Path],
    precip_paths: Sequence[str | Path],
    nudged: str | Path,
    runs: Mapping[str, tuple[str | Path, str | Path]],
    *,
    start: np.datetime64,
    end: np.datetime64,
    skip_days: float,
    corrections: Mapping[str, str],
    ensembles: Mapping[str, Sequence[str]] | None = None,
    truth_paths: Sequence[str | Path] | None = None,
    truth_precip_paths: Sequence[str | Path] | None = None,
    precipitation: str = "total",
    mapping: QuantileMapping | None = None,
    mapping_seed: int = 0,
) -> dict[str, Any]:
    """Every statistic of the report (JSON-ready) plus the fields the figures need.

    ``precipitation`` (:data:`PRECIP_DEFINITIONS`): ``total`` scores each free run's physics
    precipitation plus what its humidity correction implies (:func:`run_precipitation`), ``physics``
    the physics' own; the nudged run's is its physics' in both.

    ``ensembles``: ensemble name -> its runs and members (``nudgeml.naming.ensembles``; default:
    each run with its own members). ``truth_paths``/``truth_precip_paths``: the truth's whole series
    (the period), for the saturation check (default: the free-run months). ``mapping``: every run's
    daily precipitation mapped onto the analysis' distribution too (:mod:`nudgeml.precip_mapping`;
    tie draws seeded by ``mapping_seed`` and the run's name), scored as ``precip_mapped``,
    ``precip_pdf_mapped``, ``precip_w1_mapped``."""
    truth = open_forcing(forcing_paths)
    lat = truth["lat"].values
    w_start = np.datetime64(start, "s") + np.timedelta64(int(skip_days * 86400), "s")
    tt = np.asarray(truth["time"].values, dtype="datetime64[s]")
    window = tt[(tt >= w_start) & (tt < np.datetime64(end, "s"))]
    if window.size == 0:
        raise InputError(f"no truth analysis in the evaluation window {w_start} - {end}")
    times = window.astype("datetime64[ns]")
    truth_means = _time_means(truth, times, STATE_VARS)
    tp = xr.open_mfdataset([str(p) for p in precip_paths], combine="by_coords")["tp"]
    truth_daily = daily_totals_mm(tp).sel(time=slice(np.datetime64(w_start, "ns"), np.datetime64(end, "ns") - np.timedelta64(1, "s")))
    days = truth_daily["time"].values
    nlon = truth["lon"].size
    wcell = area_weights(lat, nlon)
    t_daily = truth_daily.values
    t_w = np.broadcast_to(wcell, t_daily.shape)
    truth_ref = truth_reference(t_daily, t_w)
    truth_means["precip"] = t_daily.mean(axis=0) if t_daily.size else np.zeros_like(wcell)
    if mapping is not None:
        truth_means["precip" + MAPPED] = truth_means["precip"]
    truth_precip = precip_summary(t_daily, t_w, None) if t_daily.size else {}

    if ensembles is None:
        ensembles = {}
        for name in runs:
            ensembles.setdefault(name.split(".m")[0], []).append(name)
    ensemble_of = {m: e for e, ms in ensembles.items() for m in ms}
    missing = sorted(set(runs) - set(ensemble_of))
    if missing:
        raise InputError(f"runs {missing} belong to no ensemble")

    results: list[RunResult] = []
    for name, (hist_path, status_path) in {"nudged": (nudged, None), **runs}.items():
        h = read_histhf(hist_path)
        check_on_truth_grid(h, truth, hist_path)
        status = json.loads(Path(status_path).read_text()) if status_path else {"status": "ok"}
        have = np.asarray(h["time"].values, dtype="datetime64[s]")
        common = np.intersect1d(window, have)
        r = RunResult(
            name=name, base=name.split(".m")[0] if name != "nudged" else "nudged", correction=corrections.get(name, "nudging"),
            ensemble=ensemble_of.get(name, name), status=status, n_times=int(common.size),
        )
        if common.size == 0:
            r.status = {**status, "status": status.get("status", "failed"), "reason": status.get("reason", "no time in the evaluation window")}
            results.append(r)
            continue
        r.means = _time_means(h, common.astype("datetime64[ns]"), STATE_VARS)
        rate, implied = run_precipitation(h, hist_path, precipitation if name != "nudged" else "physics")
        run_daily = daily_precip_from_history(rate)
        daily = run_daily.sel(time=days) if days.size and np.isin(days, run_daily["time"].values).all() else None
        if daily is not None and daily.size:
            d = daily.values
            r.means["precip"] = d.mean(axis=0)
            r.precip = precip_summary(d, np.broadcast_to(wcell, d.shape), truth_ref)
            if implied is not None:
                r.precip["humidity_correction"] = implied
            if mapping is not None:
                mapped = mapping.apply(d, lat, run_rng(mapping_seed, name), where=str(hist_path))
                r.means["precip" + MAPPED] = mapped.mean(axis=0)
                r.precip["mapped"] = precip_summary(mapped, np.broadcast_to(wcell, d.shape), truth_ref)
        tm = truth_means if common.size == window.size else _time_means(truth, common.astype("datetime64[ns]"), STATE_VARS) | {k: v for k, v in truth_means.items() if k.startswith("precip")}
        r.metrics = field_metrics(r.means, tm, lat)
        r.zonal = {v: (r.means[v] - tm[v]).mean(axis=-1) for v in ("u", "t")}
        results.append(r)

    def complete(r: RunResult) -> bool:  # a member whose score counts: ran to the end of the window
        return bool(r.means) and r.status.get("status") == "ok" and r.n_times == window.size

    by_name = {r.name: r for r in results}
    # the ensembles' scores: each complete member's RMSE of the time mean, per variable
    ens: dict[str, dict[str, Any]] = {}
    for e, names in ensembles.items():
        used = [by_name[n] for n in names if n in by_name and complete(by_name[n])]
        scores = {v: [r.metrics[v]["rmse"] for r in used if v in r.metrics] for v in (*ALL_VARS, "precip" + MAPPED)}
        scores |= {k: [f(r.precip[key]) for r in used if r.precip and r.precip.get(key) is not None] for k, (key, f) in DIST_SCORES.items()}
        scores |= {
            k + MAPPED: [f(r.precip["mapped"][key]) for r in used if r.precip.get("mapped") and r.precip["mapped"].get(key) is not None]
            for k, (key, f) in DIST_SCORES.items()
        }
        ens[e] = {
            "runs": list(names), "used": [r.name for r in used], "correction": by_name[names[0]].correction if names[0] in by_name else "?",
            "scores": {v: x for v, x in scores.items() if x},
            "mean": {v: float(np.mean(x)) for v, x in scores.items() if x},
            "range": {v: [float(min(x)), float(max(x))] for v, x in scores.items() if x},
        }

    ref_ens = {"control": ensemble_of.get("control"), "mean": ensemble_of.get("mean")}
    control_members = [by_name[n] for n in ensembles.get(ref_ens["control"] or "", []) if n in by_name and complete(by_name[n])]
    floor = noise_floor([r.means for r in control_members], lat)

    # saturation: the control members' floor against independent same-length means within the truth
    t_series = open_forcing(truth_paths) if truth_paths else truth
    if truth_precip_paths:
        t_tp = xr.open_mfdataset([str(p) for p in truth_precip_paths], combine="by_coords")["tp"]
        t_series_daily: xr.DataArray | None = daily_totals_mm(t_tp)
    else:
        t_series_daily = daily_totals_mm(tp)
    t_spread, t_why = truth_mean_spread(t_series, t_series_daily, lat, int(window.size), int(len(days)))
    n_ctl = len(control_members)
    sat: dict[str, Saturation] = {}
    for v in ALL_VARS:
        why = t_why.get(v, "") if v not in t_spread else ""
        if v not in floor:
            why = f"the control has {n_ctl} complete member{'s' if n_ctl != 1 else ''}, needs 2" if ref_ens["control"] else "no control run"
        sat[v] = saturation(floor.get(v), t_spread.get(v), why_missing=why)
    states = [s.saturated for s in sat.values()]
    spread_saturated = False if False in states else (True if all(states) else None)

    # the verdicts: every ensemble against the control's and the mean baseline's
    verdicts: dict[str, dict[str, dict[str, Comparison]]] = {}
    for e, info in ens.items():
        for ref_name, ref in ref_ens.items():
            if ref is None or ref == e or (ref_name == "mean" and e == ref_ens["control"]):
                continue
            out = {}
            for v in VERDICT_VARS:
                if v not in info["scores"] and v not in ens[ref]["scores"]:
                    continue
                c = compare_scores(info["scores"].get(v, []), ens[ref]["scores"].get(v, []))
                st = sat[SATURATION_OF.get(v, v)]
                if st.saturated is False:
                    c = not_concluded(c, "spread not saturated")
                elif st.saturated is None:
                    c = not_concluded(c, f"spread saturation not assessable: {st.reason}")
                out[v] = c
            verdicts.setdefault(e, {})[f"vs_{ref_name}"] = out

    table = []
    for r in results:
        row: dict[str, Any] = {"run": r.name, "correction": r.correction, "ensemble": r.ensemble, "status": r.status.get("status", "ok"), "n_times": r.n_times, "metrics": r.metrics, "max_abs_u": r.status.get("max_abs_u")}
        guard = r.status.get("guard")
        if guard and guard.get("columns"):  # share of column-calls that fell back to the mean tendency
            row["fallback_share"] = guard["fallback_columns"] / guard["columns"]
        if r.status.get("level_gains"):  # a calibrated run (nudgeml.calibrate): its gains' range per tendency
            row["level_gains"] = r.status["level_gains"]
            row["correction"] += "; gains " + ", ".join(f"{k} {min(g):.2f}..{max(g):.2f}" for k, g in zip(r.status.get("corrected", []), r.status["level_gains"]))
        if r.zonal:  # the zonal-mean u bias (lat x level): jet shifts show here
            zu = r.zonal["u"]
            row["zonal_u_bias"] = {"rmse": zonal_rmse(zu, lat), "max_abs": float(np.abs(zu).max())}
        for ref_name, ref in ref_ens.items():
            got = verdicts.get(r.ensemble, {}).get(f"vs_{ref_name}")
            if got is None or not r.metrics or ref is None:
                continue
            # the change: this run's score minus the reference ensemble's mean score; the verdict is its ensemble's
            row[f"vs_{ref_name}"] = {
                v: {"delta_rmse": r.metrics[v]["rmse"] - ens[ref]["mean"][v], "significant": c.significant, "verdict": c.verdict}
                for v, c in got.items()
                if v in r.metrics and v in ens[ref]["mean"]
            }
        table.append(row)

    # the nudged run is a lower bound for a variable only where its RMSE is <= every free run's
    lower_bound = {}
    nudged_r = by_name.get("nudged")
    for v in ALL_VARS:
        free = [(r.name, r.metrics[v]["rmse"]) for r in results if r.name != "nudged" and v in r.metrics]
        if nudged_r is None or v not in nudged_r.metrics or not free:
            continue
        best = min(free, key=lambda x: x[1])
        lower_bound[v] = {"holds": nudged_r.metrics[v]["rmse"] <= best[1], "nudged": nudged_r.metrics[v]["rmse"], "best_free_run": best[0], "best_free_rmse": best[1]}

    member_rmse = {v: [m.metrics[v]["rmse"] for m in control_members if v in m.metrics] for v in ALL_VARS}
    return {
        "window": {"start": str(w_start), "end": str(end), "n_analyses": int(window.size), "n_days": int(len(days)), "skip_days": float(skip_days)},
        "rule": RULE_TEXT,
        "noise_floor": floor,  # the field-to-field floor (kept under its old key)
        "control_members": [m.name for m in control_members],
        "control_rmse_spread": {v: (float(max(x) - min(x)) if len(x) > 1 else None) for v, x in member_rmse.items()},
        "saturation": {v: s.to_json() for v, s in sat.items()},
        "spread_saturated": spread_saturated,
        "ensembles": ens,
        "verdicts": {e: {k: {v: c.to_json() for v, c in d.items()} for k, d in refs.items()} for e, refs in verdicts.items()},
        "lower_bound": lower_bound,
        "table": table,
        "precipitation": {"truth": truth_precip, **{r.name: r.precip for r in results if r.precip}},
        "precip_definition": {"name": precipitation, "text": PRECIP_DEFINITIONS[precipitation]},
        "precip_mapping": None if mapping is None else {"method": METHOD, "quantiles": int(mapping.levels.size), "first_day": mapping.first_day, "last_day": mapping.last_day, "n_days": mapping.n_days, "seed": int(mapping_seed)},
        "_fields": {"results": results, "truth_means": truth_means, "lat": lat, "lon": truth["lon"].values, "lev": truth["lev"].values},
    }


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _main_runs(results: Sequence[RunResult]) -> list[RunResult]:
    """Member 0 of every run with data, the nudged run first."""
    return [r for r in results if r.means and ".m" not in r.name]


def figure_maps(ev: Mapping[str, Any], upper_level_hpa: float, land_fraction: np.ndarray | None = None) -> bytes:
    """Bias maps of the main runs; ``land_fraction`` ``(lat, lon)`` of the model grid draws the coasts
    (its 0.5 contour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = ev["_fields"]
    runs = _main_runs(f["results"])
    lev_hpa = f["lev"] / 100.0
    k_up = int(np.argmin(np.abs(lev_hpa - upper_level_hpa)))
    panels = [
        (f"u bias at {lev_hpa[k_up]:.0f} hPa (m/s)", lambda r: r.means["u"][k_up] - f["truth_means"]["u"][k_up], "RdBu_r"),
        (f"T bias at {lev_hpa[0]:.0f} hPa (K)", lambda r: r.means["t"][0] - f["truth_means"]["t"][0], "RdBu_r"),
        ("precipitation bias (mm/day)", lambda r: r.means["precip"] - f["truth_means"]["precip"] if "precip" in r.means else None, "BrBG"),
    ]
    fig, axes = plt.subplots(len(runs), 3, figsize=(13, 2.3 * len(runs) + 0.6), squeeze=False, constrained_layout=True)
    for j, (title, get, cmap) in enumerate(panels):
        vals = [get(r) for r in runs]
        vmax = max([np.nanpercentile(np.abs(v), 99) for v in vals if v is not None] + [1e-9])
        for i, (r, v) in enumerate(zip(runs, vals)):
            ax = axes[i, j]
            if v is None:
                ax.set_axis_off()
                continue
            im = ax.pcolormesh(f["lon"], f["lat"], v, cmap=cmap, vmin=-vmax, vmax=vmax, shading="nearest")
            if land_fraction is not None:
                ax.contour(f["lon"], f["lat"], land_fraction, levels=[0.5], colors="k", linewidths=0.5)
            ax.set_title(f"{r.name}: {title}", fontsize=8)
            ax.set_xticks([0, 90, 180, 270])
            ax.set_yticks([-60, 0, 60])
            ax.set_xlabel("longitude (°E)", fontsize=7)
            ax.set_ylabel("latitude (°N)", fontsize=7)
            ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=axes[:, j], shrink=0.6, location="bottom", ticks=np.linspace(-vmax, vmax, 5), format="%.2g")
    return _png(fig)


def figure_zonal(ev: Mapping[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = ev["_fields"]
    runs = _main_runs(f["results"])
    lev_hpa = f["lev"] / 100.0
    fig, axes = plt.subplots(len(runs), 2, figsize=(9, 2.2 * len(runs) + 0.6), squeeze=False, constrained_layout=True)
    for j, (var, label) in enumerate((("u", "zonal-mean u bias (m/s)"), ("t", "zonal-mean T bias (K)"))):
        vmax = max(np.nanmax(np.abs(r.zonal[var])) for r in runs) or 1.0
        for i, r in enumerate(runs):
            ax = axes[i, j]
            cs = ax.contourf(f["lat"], lev_hpa, r.zonal[var], levels=np.linspace(-vmax, vmax, 17), cmap="RdBu_r", extend="both")
            ax.set_ylim(lev_hpa.max() + 20, 0)
            ax.set_title(f"{r.name}: {label}", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.colorbar(cs, ax=axes[:, j], shrink=0.6, location="bottom", ticks=np.linspace(-vmax, vmax, 5), format="%.2g")
    return _png(fig)


def figure_precip(ev: Mapping[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centers = np.sqrt(PRECIP_BINS[:-1] * PRECIP_BINS[1:])
    widths = np.diff(PRECIP_BINS)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for name, res in ev["precipitation"].items():
        if not res:
            continue
        density = np.asarray(res["pdf"]) / widths
        ax.plot(centers, np.where(density > 0, density, np.nan), lw=2.2 if name == "truth" else 1.2, color="k" if name == "truth" else None, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("daily precipitation (mm/day)")
    ax.set_ylabel("area-weighted density (per mm/day)")
    ax.set_title("distribution of daily precipitation")
    ax.legend(fontsize=7)
    return _png(fig)


def figure_offline(offline: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    if not offline:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(offline), figsize=(4 * len(offline), 3.6), squeeze=False, constrained_layout=True)
    for ax, (model, res) in zip(axes[0], offline.items()):
        for var, r in res["targets"].items():
            ax.plot(r["r2"], np.asarray(r["levels_pa"]) / 100.0, marker="o", label=f"{var} ({r['r2_overall']:.2f})")
        ax.axvline(0.0, color="0.6", lw=0.8)
        ax.set_ylim(1050, 0)
        ax.set_xlabel("R$^2$ (test split)")
        ax.set_ylabel("hPa")
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=7)
    return _png(fig)


def figure_guard(statuses: Mapping[str, Mapping[str, Any]], n_columns: int) -> bytes | None:
    ml = {k: s for k, s in statuses.items() if s.get("guard_per_window")}
    if not ml:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3), constrained_layout=True)
    for name, s in ml.items():
        fb = [g["fallback"] / n_columns for g in s["guard_per_window"]]
        ax.plot(np.arange(len(fb)) * 0.25, fb, label=name)
    ax.set_xlabel("days into the free run")
    ax.set_ylabel("fraction of columns falling back")
    ax.set_title("guard: out-of-range inputs or non-finite outputs")
    ax.legend(fontsize=7)
    return _png(fig)


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------


def software_versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform
    import shutil

    out = {"python": platform.python_version()}
    for pkg in ("nudgeml", "numpy", "xarray", "zarr", "torch", "lightning", "xgboost-cpu", "xgboost", "jcm", "jax", "snakemake", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    if shutil.which("cdo"):
        res = subprocess.run(["cdo", "--version"], capture_output=True, text=True)
        out["cdo"] = (res.stdout or res.stderr).splitlines()[0] if (res.stdout or res.stderr) else "?"
    return out


def git_commit(repo: str | os.PathLike[str]) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown (not a git checkout)"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
.better{color:#0a6e2e;font-weight:600}.worse{color:#a8161b;font-weight:600}.ns{color:#777}
.failed{background:#fde2e2}.banner{background:#fff3cd;border:2px solid #c99a06;padding:.7em 1em;margin:1em 0}.note{color:#555;font-size:.9em}img{max-width:100%}pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em}
"""


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return "<p class=note>(nothing to show)</p>"
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}"


_ABBREV = {"not significant": "ns", "not testable": "nt", "not concluded": "nc"}


def _names(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def _short(c: Mapping[str, Any]) -> str:
    """A verdict in a table cell (the reasons are stated once above it; the full text is the cell's tooltip)."""
    if c["verdict"] == "not testable":
        return f"not testable ({c['n'][0]} vs {c['n'][1]} members)"
    if c["verdict"] == NOT_CONCLUDED:
        return "not concluded"
    p = "p < 0.001" if c["p"] < 1e-3 else f"p = {c['p']:.3f}"
    return f"{c['verdict']} ({c['delta']:+.3g}, {p})"


def _conclusion_html(ev: Mapping[str, Any]) -> str:
    """The block the page opens with: what can and cannot be concluded."""
    w = ev["window"]
    sat = ev["saturation"]
    parts = []
    unsat = [v for v, s in sat.items() if s["saturated"] is False]
    unknown = [v for v, s in sat.items() if s["saturated"] is None]
    if unsat or unknown:
        detail = "; ".join(
            f"{v}: floor {_fmt(s['member_spread'])} vs {_fmt(s['truth_spread'])} {UNITS[v]} in the truth" if s["saturated"] is False else f"{v}: {s['reason']}"
            for v, s in sat.items()
            if s["saturated"] is not True
        )
        head = ("The control members' spread has not saturated" + (f" for {', '.join(unsat)}" if unsat else "")) if unsat else "Whether the control members' spread has saturated cannot be checked"
        if unsat and unknown:
            head += f", and cannot be checked for {', '.join(unknown)}"
        parts.append(
            f'<div class=banner><b>{html.escape(head)}.</b> Their time means differ far less than two independent stretches of the truth as long '
            f"as the window do ({html.escape(detail)}), so the members' scores are too close to judge by: no difference is concluded for "
            "these variables (marked <i>not concluded</i>). This run shows the machinery, not a result; a longer free run "
            "(or larger initial perturbations) lets the members diverge.</div>"
        )
    parts.append(
        f"<p><b>Evaluation window</b> {html.escape(w['start'])} – {html.escape(w['end'])}: {w['n_analyses']} six-hourly analyses, {w['n_days']} complete day{'s' if w['n_days'] != 1 else ''} "
        f"of precipitation, after the free runs' first {w.get('skip_days', 0):g} days (spin-in, <code>report.skip_days</code>).</p>"
    )
    parts.append(f"<p><b>Rule.</b> {html.escape(ev['rule'])} See docs/evaluation.md.</p>")

    verdicts = ev["verdicts"]
    lines = []
    for ref, label in (("vs_control", "the control"), ("vs_mean", "the mean-tendency baseline")):
        found = []
        for e, refs in verdicts.items():
            sig = [f"{v} {c['verdict']}" for v, c in refs.get(ref, {}).items() if c["significant"]]
            if sig:
                found.append(f"<b>{html.escape(e)}</b> ({', '.join(sig)})")
        withheld = sorted({e for e, refs in verdicts.items() for c in refs.get(ref, {}).values() if c["verdict"] == NOT_CONCLUDED})
        untestable = sorted({e for e, refs in verdicts.items() for c in refs.get(ref, {}).values() if c["verdict"] == "not testable"})
        if not any(ref in refs for refs in verdicts.values()):
            lines.append(f"<li>Against {label}: no such run in this configuration.</li>")
            continue
        text = f"<li>Differ significantly from {label}: {', '.join(found) if found else 'none'}."
        if withheld:
            text += f" Not concluded: {html.escape(_names(withheld))}."
        if untestable:
            text += f" Not testable (fewer than 2 complete members on a side): {html.escape(_names(untestable))}."
        lines.append(text + "</li>")
    lb = ev.get("lower_bound", {})
    holds = [v for v, x in lb.items() if x["holds"]]
    fails = [f"{v} (nudged {_fmt(x['nudged'])} &gt; {html.escape(x['best_free_run'])} {_fmt(x['best_free_rmse'])} {UNITS[v]})" for v, x in lb.items() if not x["holds"]]
    if lb:
        text = f"<li>The nudged run is a lower bound (its RMSE is at most every free run's) for: {_names(holds)}."
        if fails:
            text += f" It is not for: {', '.join(fails)}."
        lines.append(text + "</li>")
    parts.append(f"<ul>{''.join(lines)}</ul>")

    shown = [v for v in VERDICT_VARS if any(v in info["range"] for info in ev["ensembles"].values())]
    head = "".join(f"<th>{v}<br>({UNITS[v]})</th>" for v in shown)
    rows = []
    for e, refs in verdicts.items():
        info = ev["ensembles"][e]
        cells = []
        for v in shown:
            rng = info["range"].get(v)
            cell = f"{_fmt(info['mean'][v])} [{_fmt(rng[0])}, {_fmt(rng[1])}]" if rng else "–"
            for ref in ("vs_control", "vs_mean"):
                c = refs.get(ref, {}).get(v)
                if c is None:
                    continue
                tag = {"better": "better", "worse": "worse"}.get(c["verdict"], "ns")
                cell += f'<br><span class="{tag}" title="{html.escape(c["text"])}">{ref[3:]}: {html.escape(_short(c))}</span>'
            cells.append(f"<td>{cell}</td>")
        n = len(info["used"])
        rows.append(f"<tr><td>{html.escape(e)}<br><span class=note>{html.escape(info['correction'])}, {n} complete member{'s' if n != 1 else ''}</span></td>{''.join(cells)}</tr>")
    for e in (x for x in ev["ensembles"] if x not in verdicts):  # the control: the reference, no verdict of its own
        info = ev["ensembles"][e]
        cells = "".join(
            f"<td>{_fmt(info['mean'][v])} [{_fmt(info['range'][v][0])}, {_fmt(info['range'][v][1])}]</td>" if v in info["range"] else "<td>–</td>" for v in shown
        )
        rows.insert(0, f"<tr><td>{html.escape(e)}<br><span class=note>reference, {len(info['used'])} complete members</span></td>{cells}</tr>")
    parts.append(
        "<p class=note>Per ensemble: mean score and [min, max] over its complete members (RMSE of the time mean; for precip_pdf 1 - the Perkins skill "
        "score of daily precipitation, for precip_w1 its Wasserstein distance to the truth's), then the verdict against the control and "
        "the mean baseline (difference of mean scores, whether the ranges overlap, Welch p).</p>"
        f"<table><tr><th>ensemble</th>{head}</tr>{''.join(rows)}</table>"
    )
    srows = "".join(
        f"<tr><td>{v}</td><td>{_fmt(s['member_spread'])}</td><td>{_fmt(s['truth_spread'])}</td><td>{_fmt(s['ratio'], 2)}</td>"
        f"<td>{'yes' if s['saturated'] else ('no' if s['saturated'] is False else html.escape('not assessable: ' + s['reason']))}</td></tr>"
        for v, s in sat.items()
    )
    parts.append(
        "<p class=note>Saturation: the field-to-field floor (mean pairwise RMSE between the control members' time means) against the RMSE between two "
        "independent time means of the window's length within the truth's whole series (overlapping batch means); saturated from a ratio of "
        f"{SATURATION_RATIO:g}.</p><table><tr><th>variable</th><th>field-to-field floor</th><th>independent truth means</th><th>ratio</th><th>saturated</th></tr>{srows}</table>"
    )
    return "<h2>What this report concludes</h2>" + "".join(parts)


def _table_html(ev: Mapping[str, Any]) -> str:
    floor = ev["noise_floor"]
    head = "".join(f"<th>{v} RMSE<br>({UNITS[v]})</th><th>{v} bias</th>" for v in ALL_VARS)
    rows = []
    for row in ev["table"]:
        m = row["metrics"]
        cls = ' class="failed"' if row["status"] != "ok" else ""
        cells = []
        refs = ["control"] + (["mean"] if row["correction"].startswith("ml") else [])
        for v in ALL_VARS:
            mv = m.get(v)
            rm = _fmt(mv["rmse"]) if mv else "–"
            for ref in refs:
                d = row.get(f"vs_{ref}", {}).get(v)
                if d is None:
                    continue
                verdict = d.get("verdict", "")
                tag = {"better": "better", "worse": "worse"}.get(verdict, "ns")
                mark = "" if tag != "ns" else f" ({_ABBREV.get(verdict, 'ns')})"
                rm += f'<br><span class="{tag}" title="{html.escape(verdict)}">{d["delta_rmse"]:+.3f} vs {ref}{mark}</span>'
            cells.append(f"<td>{rm}</td><td>{_fmt(mv['bias']) if mv else '–'}</td>")
        rows.append(f"<tr{cls}><td>{html.escape(row['run'])}<br><span class=note>{row['correction']}, {row['status']}</span></td>{''.join(cells)}</tr>")
    floor_row = "".join(f"<td>{_fmt(floor.get(v))}</td><td></td>" for v in ALL_VARS)
    rows.append(f"<tr><td><i>field-to-field floor</i><br><span class=note>control members</span></td>{floor_row}</tr>")
    return f"<table><tr><th>run</th>{head}</tr>{''.join(rows)}</table>"


def _precip_definition(ev: Mapping[str, Any]) -> str:
    d = ev["precip_definition"]
    return f"{d['text']} (report.precipitation: {d['name']})"


def _precip_table(ev: Mapping[str, Any]) -> str:
    head = "".join(f"<th>{k}</th>" for k in ("mean", *[f"p{p:g}" for p in PERCENTILES], "dry fraction", f"wet-day intensity (≥ {WET_DAY_MM:g} mm)",
                                             "above the truth's p99", "Perkins", "Wasserstein", "from the humidity correction (floored)"))
    rows = []
    listed = [(name, res) for name, res in ev["precipitation"].items() if res]
    listed += [(f"{name}, mapped", res["mapped"]) for name, res in listed if res.get("mapped")]
    for name, res in listed:
        pc = res["percentiles"]
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{_fmt(res['mean'], 2)}</td>"
            + "".join(f"<td>{_fmt(pc[f'p{p:g}'], 2)}</td>" for p in PERCENTILES)
            + f"<td>{_fmt(res['dry_fraction'], 3)}</td><td>{_fmt(res.get('wet_day_intensity'), 2)}</td>"
            + f"<td>{_fmt(100.0 * res['above_truth_p99'], 2) + ' %' if res.get('above_truth_p99') is not None else '–'}</td>"
            + f"<td>{_fmt(res.get('perkins'), 3)}</td><td>{_fmt(res.get('wasserstein'), 3)}</td><td>{_implied(res.get('humidity_correction'))}</td></tr>"
        )
    return f"<table><tr><th>daily precip (mm/day)</th>{head}</tr>{''.join(rows)}</table>"


def _mapping_text(ev: Mapping[str, Any]) -> str:
    """What the "mapped" rows and columns are, or that there are none."""
    m = ev.get("precip_mapping")
    if not m:
        return "No precipitation mapping (<code>report.precip_mapping.method: none</code>)."
    return (
        f"Rows and columns marked <i>mapped</i>: each run's daily precipitation through an {html.escape(m['method'])} "
        f"({m['quantiles']} quantiles; {m['n_days']} days, {html.escape(m['first_day'])} – {html.escape(m['last_day'])}, before the free runs; "
        "ties drawn with a seeded generator), the same mapping for every run: a correction of the output, fed nothing back "
        "(<code>report.precip_mapping</code>, docs/evaluation.md)."
    )


def _implied(c: Mapping[str, float] | None) -> str:
    return "–" if c is None else f"{c['implied_mm_day']:+.3f} ({c['floored_mm_day']:.3f})"


MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def mean_coverage(mean_file: str | Path, start: np.datetime64, end: np.datetime64) -> dict[str, Any]:
    """Which calendar months the mean tendency was computed from, and which months of the evaluation
    window ``[start, end]`` have none (there a monthly climatology is the annual mean: ``mean-monthly``
    then equals ``mean``)."""
    with xr.open_dataset(mean_file) as ds:
        if "samples_per_month" not in ds:
            raise InputError(f"{mean_file}: mean tendency file has no 'samples_per_month'")
        counts = {int(m): int(n) for m, n in zip(ds["month"].values, ds["samples_per_month"].values)}
        blocks = json.loads(ds.attrs["training_blocks"]) if "training_blocks" in ds.attrs else [[ds.attrs.get("training_start"), ds.attrs.get("training_end")]]
    days = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
    window = sorted({int(str(d)[5:7]) for d in days})
    return {
        "samples_per_month": counts,
        "training_blocks": blocks,
        "window_months": window,
        "window_months_without_data": [m for m in window if counts.get(m, 0) == 0],
    }


def _coverage_html(cov: Mapping[str, Any] | None) -> str:
    if not cov:
        return ""
    have = [MONTH_NAMES[m - 1] for m, n in sorted(cov["samples_per_month"].items()) if n > 0]
    missing = [MONTH_NAMES[m - 1] for m in cov["window_months_without_data"]]
    blocks = cov["training_blocks"]
    text = (f"The mean-tendency baseline was computed from {len(blocks)} training block(s), {html.escape(str(blocks[0][0]))} – {html.escape(str(blocks[-1][1]))}, "
            f"covering {', '.join(have) or 'no month'}. ")
    if missing:
        text += (f"The evaluation window's month(s) {', '.join(missing)} had no training data: there a monthly climatology falls back to the "
                 "annual mean, so a <code>climatology: monthly</code> run equals the annual-mean run in those months.")
    else:
        text += "Every month of the evaluation window had training data."
    return f"<p class=note>{text}</p>"


def _share(part: Any, whole: Any) -> str:
    """``part of whole (x %)``: a count is read against its denominator."""
    if part is None or not whole:
        return "–"
    return f"{part} of {whole} ({100 * part / whole:.2g} %)"


def _steady(status: Mapping[str, Any]) -> str:
    """The inference share once the model is compiled (the first window's wall time holds the XLA
    compilation): what a longer run converges to."""
    steady = status.get("inference_share_steady")
    return "" if steady is None else f" ({_fmt(100 * steady, 2)} % after the first window)"


def _stability_table(statuses: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, s in statuses.items():
        g = s.get("guard", {})
        fallback = _share(g.get("fallback_columns"), g.get("columns"))
        share = s.get("inference_share")
        cls = ' class="failed"' if s.get("status") != "ok" else ""
        rows.append(
            f"<tr{cls}><td>{html.escape(name)}</td><td>{s.get('status')}</td><td>{s.get('windows_done')}/{s.get('n_windows')}</td><td>{_fmt(s.get('max_abs_u'), 1)}</td>"
            f"<td>{html.escape(str(s.get('reason', '')))}</td><td>{fallback}</td><td>{g.get('clipped_values', '–')}</td>"
            f"<td>{_fmt(100 * share, 2) + ' %' if share is not None else '–'}{_steady(s)}</td><td>{_fmt(s.get('wall_s'), 1)}</td></tr>"
        )
    return ("<table><tr><th>run</th><th>status</th><th>6-h windows</th><th>max |u| (m/s)</th><th>diagnosis</th>"
            "<th>fallback column-windows</th><th>clipped values</th><th>inference share</th><th>wall (s)</th></tr>" + "".join(rows) + "</table>")


def offline_table(offline: Mapping[str, Any]) -> str:
    """The offline R² table: one column per target any model learned (du, dv, and dt / dq when T / q
    were nudged), by name; a model without that target shows a dash."""
    targets = list(dict.fromkeys(t for res in offline.values() for t in res["targets"])) or ["du", "dv"]
    head = "".join(f"<th>R² {html.escape(t)}</th>" for t in targets)
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td>" + "".join(f"<td>{_fmt(res['targets'][t]['r2_overall']) if t in res['targets'] else '–'}</td>" for t in targets) + "</tr>"
        for m, res in offline.items()
    )
    return f"<table><tr><th>model</th>{head}</tr>{rows}</table>"


def render_html(ev: Mapping[str, Any], *, figures: Mapping[str, bytes | None], statuses: Mapping[str, Mapping[str, Any]], offline: Mapping[str, Any], config: Mapping[str, Any], versions: Mapping[str, str], commit: str, coverage: Mapping[str, Any] | None = None) -> str:
    cfg_text = json.dumps({k: v for k, v in config.items() if k != "resources"}, indent=1, default=str)
    floor = ", ".join(f"{v} {_fmt(x)} {UNITS[v]}" for v, x in ev["noise_floor"].items()) or "not available (needs >= 2 control members)"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>nudgeml report</title><style>{CSS}</style></head><body>
<h1>nudgeml: free runs against the truth</h1>
{_conclusion_html(ev)}
{_coverage_html(coverage)}
<p class=note>The evaluation window lies out of sample: after every block the models and the mean tendency were trained on. Generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {html.escape(commit)}.</p>
<h2>Time-mean error</h2>
<p class=note>Area-weighted RMSE and bias of the time mean (levels weigh equally). Under each RMSE, its change against the control's mean score (and, for ML
runs, the mean-tendency baseline's), coloured by its ensemble's verdict under the rule above: <span class=better>green</span> significantly better,
<span class=worse>red</span> significantly worse, <span class=ns>grey</span> (ns) not significant, (nt) not testable, (nc) not concluded.
Field-to-field floor (mean pairwise RMSE between the control members' time-mean fields; a second figure, not the test: two members' scores can never
differ by more than it): {html.escape(floor)}.</p>
{_table_html(ev)}
<h2>Bias maps</h2>{_img(figures.get('maps'), 'bias maps')}
<h2>Zonal-mean bias</h2>{_img(figures.get('zonal'), 'zonal-mean bias')}
<h2>Precipitation distribution</h2>
<p class=note>Daily totals over every cell and day of the window, weighted by cell area; PDF on logarithmic bins from 0.1 to 500 mm/day; Perkins skill score
(overlap of the binned distributions, dry days as one bin; 1 is identical) and Wasserstein distance (mm/day) to the truth.
A free run's precipitation here and in the tables above is {html.escape(_precip_definition(ev))}. {_mapping_text(ev)}</p>
{_precip_table(ev)}{_img(figures.get('precip'), 'precipitation distribution')}
<h2>Offline skill</h2>
{offline_table(offline)}{_img(figures.get('offline'), 'offline skill')}
<h2>Stability and the guard</h2>{_stability_table(statuses)}{_img(figures.get('guard'), 'guard counts')}
<h2>Configuration</h2><details><summary>the configuration this report was made with (less <code>resources</code>)</summary><pre>{html.escape(cfg_text)}</pre></details>
<h2>Software</h2><pre>{html.escape(json.dumps(dict(versions), indent=1))}</pre>
</body></html>
"""


def json_ready(ev: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ev.items() if not k.startswith("_")}


def summary_markdown(metrics: Mapping[str, Any], offline: Mapping[str, float] | None = None) -> str:
    """The comparison table of a report's ``metrics.json`` as Markdown (for the README)."""
    floor = metrics["noise_floor"]
    rows = {r["run"]: r for r in metrics["table"]}
    precip = metrics.get("precipitation", {})
    head = "| run | correction | status, max abs u, fallback | u RMSE | v RMSE | T RMSE | q RMSE | precip RMSE | zonal-mean u bias RMSE / max | Perkins | Wasserstein | Δu vs mean | Δv vs mean |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        m = r["metrics"]
        state = r["status"]
        if r.get("max_abs_u") is not None:
            state += f", {r['max_abs_u']:.0f} m/s"
        if "fallback_share" in r:
            state += f", {100 * r['fallback_share']:.1f} %"
        if not m:
            lines.append(f"| {name} | {r['correction']} | {state} |" + " – |" * 10)
            continue
        vm = r.get("vs_mean", {})

        def delta(v: str) -> str:
            d = vm.get(v)
            if d is None:
                return "–"
            if "verdict" in d:
                return f"{d['delta_rmse']:+.2f}" + ("" if d["significant"] else f" ({_ABBREV.get(d['verdict'], 'ns')})")
            return f"{d['delta_rmse']:+.2f}" + ("" if d["significant"] else " (ns)")  # a metrics.json from before the rule

        z = r.get("zonal_u_bias", {})
        p = precip.get(name, {})
        lines.append(
            f"| {name} | {r['correction']} | {state} | {m['u']['rmse']:.2f} | {m['v']['rmse']:.2f} | {m['t']['rmse']:.2f} | {m['q']['rmse']:.3f} | "
            f"{m['precip']['rmse']:.2f} | {z.get('rmse', float('nan')):.2f} / {z.get('max_abs', float('nan')):.1f} | {_fmt(p.get('perkins'), 3)} | {_fmt(p.get('wasserstein'), 2)} | {delta('u')} | {delta('v')} |"
        )
    lines.append(f"| field-to-field floor | control members | | {floor.get('u', float('nan')):.2f} | {floor.get('v', float('nan')):.2f} | {floor.get('t', float('nan')):.2f} | {floor.get('q', float('nan')):.3f} | {floor.get('precip', float('nan')):.2f} | | | | | |")
    w = metrics["window"]
    lines.append("")
    if "verdicts" not in metrics:  # a metrics.json from before the rule
        lines.append(f"Evaluation window {w['start']} – {w['end']} ({w['n_analyses']} analyses). RMSE of the time mean, area-weighted; u, v in m/s, T in K, q in g/kg, precipitation in mm/day; (ns): smaller than the noise floor.")
    else:
        lines.append(
            f"Evaluation window {w['start']} – {w['end']} ({w['n_analyses']} analyses). RMSE of the time mean, area-weighted; u, v in m/s, T in K, q in g/kg, "
            "precipitation in mm/day. Δ: the run's RMSE minus the mean baseline's mean score; unmarked: its ensemble differs significantly, "
            "(ns) not significant, (nt) not testable, (nc) not concluded. The field-to-field floor is a second figure, not the test."
        )
        if "precip_definition" in metrics:  # absent from a metrics.json from before report.precipitation
            lines.append("")
            lines.append(f"Precipitation: {_precip_definition(metrics)}.")
        lines.append("")
        lines.append(f"Rule: {metrics['rule']}")
        lines.append("")
        sat = metrics.get("saturation", {})
        unsat = [v for v, x in sat.items() if x["saturated"] is not True]
        lines.append(
            "Spread saturated for every variable." if not unsat
            else "**Spread not saturated (or not assessable) for " + ", ".join(f"{v} ({x['reason']})" for v, x in sat.items() if x["saturated"] is not True) + ": not concluded.**"
        )
        lines.append("")
        for e, refs in metrics["verdicts"].items():
            for ref, d in refs.items():
                by_text: dict[str, list[str]] = {}  # variables with the same verdict and reason on one line
                for v, c in d.items():
                    by_text.setdefault(c["text"], []).append(v)
                lines.append(f"- {e} {ref.replace('_', ' ')}: " + "; ".join(f"{', '.join(vs)} {text}" for text, vs in by_text.items()))
        lb = metrics.get("lower_bound", {})
        if lb:
            lines.append("")
            lines.append("Nudged run a lower bound for: " + (", ".join(v for v, x in lb.items() if x["holds"]) or "none") + ".")
    if offline:
        lines.append("Offline R² (test split): " + ", ".join(f"{k} {v:.2f}" for k, v in offline.items()) + ".")
    return "\n".join(lines)
