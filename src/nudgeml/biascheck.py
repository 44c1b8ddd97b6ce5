"""Bias check: global, area-weighted RMSE of the time-mean u, v, T of each run against the truth.

A quick health check of the foundation (the report issue does the full evaluation): the nudged run
must sit far closer to the truth than the free control.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from nudgeml.atomic import write_text_atomic
from nudgeml.conventions import read_histhf
from nudgeml.errors import InputError
from nudgeml.metrics import weighted_rmse
from nudgeml.regrid import check_on_truth_grid, open_forcing

VARIABLES = ("u", "v", "t")


def bias_check(forcing_paths: Sequence[str | Path], runs: Mapping[str, str | Path]) -> dict[str, dict[str, float]]:
    """RMSE of the time mean of u, v, T per run over the times all runs and the truth share."""
    truth = open_forcing(forcing_paths)
    hists = {name: read_histhf(path) for name, path in runs.items()}
    common = np.asarray(truth["time"].values, dtype="datetime64[s]")
    for name, h in hists.items():
        common = np.intersect1d(common, np.asarray(h["time"].values, dtype="datetime64[s]"))
    if common.size == 0:
        raise InputError(f"runs {sorted(runs)} and the truth share no analysis time")
    sel = common.astype("datetime64[ns]")
    truth_mean = {v: truth[v].sel(time=sel).mean("time").values for v in VARIABLES}
    lat = truth["lat"].values
    out: dict[str, dict[str, float]] = {}
    for name, h in hists.items():
        check_on_truth_grid(h, truth, runs[name])
        out[name] = {f"rmse_{v}": weighted_rmse(h[v].sel(time=sel).mean("time").values, truth_mean[v], lat) for v in VARIABLES}
    out["_period"] = {"start": str(common[0]), "end": str(common[-1]), "n_times": int(common.size)}  # type: ignore[dict-item]
    return out


def format_table(result: Mapping[str, Mapping[str, float]]) -> str:
    period = result["_period"]
    lines = [f"RMSE of the time mean vs truth, {period['start']} - {period['end']} ({period['n_times']} analyses), area-weighted",
             "window: every analysis the runs and the truth share, the first one included (the report's window skips "
             "report.skip_days of spin-in, so its RMSEs differ)",
             f"{'run':<16}{'u (m/s)':>10}{'v (m/s)':>10}{'T (K)':>10}"]
    for name, row in result.items():
        if name.startswith("_"):
            continue
        lines.append(f"{name:<16}{row['rmse_u']:>10.3f}{row['rmse_v']:>10.3f}{row['rmse_t']:>10.3f}")
    return "\n".join(lines)


def write_bias_check(result: Mapping[str, object], out_json: str | Path) -> None:
    write_text_atomic(out_json, json.dumps(result, indent=2) + "\n")
