"""``nudgeml`` command: small helpers around the workflow's outputs (the workflow itself is Snakemake)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nudgeml", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="print a report's comparison table as Markdown")
    s.add_argument("report_dir", type=Path, help="the report folder (holds metrics.json), e.g. results/science/report")
    s.add_argument("--models", type=Path, default=None, help="models folder, to add offline R² (default: ../models)")
    t = sub.add_parser("tracking", help="damped-copy factors of a nudged run (how closely it tracks the analysis)")
    t.add_argument("guide", type=Path, help="the nudged run's guide_ins.nc")
    t.add_argument("--histhf", type=Path, default=None, help="its histhf.nc (the model's T and q, for --variables t q)")
    t.add_argument("--variables", nargs="+", default=["u", "v"], choices=["u", "v", "t", "q"])
    t.add_argument("--anomalies", choices=["gridpoint", "level"], default="gridpoint", help="about each point's time mean (default) or each level's mean")
    t.add_argument("--skip-days", type=float, default=0.0, help="drop this much of the run's start")
    t.add_argument("--json", type=Path, default=None, help="also write the factors here")
    se = sub.add_parser("sensitivity", help="a trained column model's sensitivity to the model's own state at the same level (d dX_k / d X_k, day^-1)")
    se.add_argument("model_dir", type=Path, help="an exported model's folder (model.json, model.pt), e.g. results/science/models/mlp")
    se.add_argument("store", type=Path, help="its training store, e.g. results/science/datasets/nudging/dataset.zarr")
    se.add_argument("--split", default="test", choices=["train", "val", "test"])
    se.add_argument("--rows", type=int, default=262144, help="columns of the split to average over")
    se.add_argument("--json", type=Path, default=None, help="also write the result here")
    m = sub.add_parser("lmdz-mean", help="the workflow's mean_tendency.nc in LMDZ's physics columns (the nudgeml_mean.nc LMDZ reads)")
    m.add_argument("mean", type=Path, help="the workflow's mean_tendency.nc (backend lmdz: on LMDZ's physics grid)")
    m.add_argument("out", type=Path, help="the file to write: du_mean, dv_mean (presnivs, points_physiques)")
    m.add_argument("--iim", type=int, required=True, help="lmdz.grid.iim")
    m.add_argument("--jjm", type=int, required=True, help="lmdz.grid.jjm")
    j = sub.add_parser("lmdz-forecast-join", help="the LMDZ job kit's forecast samples (lmdz.forecast) as histhf.nc + guide_ins.nc for extract")
    j.add_argument("run_root", type=Path, help="lmdz.run_root (holds spinup/ and forecast/)")
    j.add_argument("out_dir", type=Path, help="where histhf.nc and guide_ins.nc are written")
    j.add_argument("--lead-hours", type=float, required=True, help="lmdz.forecast.lead_hours")
    d = sub.add_parser("drift", help="each free run's monthly zonal-mean error against the truth (how its jet drifts)")
    d.add_argument("histhf", type=Path, nargs="+", help="free runs' histhf.nc, e.g. results/science/free/*/histhf.nc")
    d.add_argument("--truth", type=Path, nargs="+", required=True, help="the truth on the model grid, e.g. results/science/forcing/2001-*.nc")
    d.add_argument("--variable", choices=["u", "v", "t"], default="u")
    r = sub.add_parser("rollout-loss", help="online training's rollout loss (free runs from the analysis against it) of the mean and of models")
    r.add_argument("results", type=Path, help="a workflow's results folder, e.g. results/calibrate-science")
    r.add_argument("--configfile", type=Path, nargs="+", required=True, help="the overlays the results were made with, after config/config.yaml")
    r.add_argument("--model", nargs="+", default=[], metavar="NAME:FORM",
                   help="mean (the mean tendency alone), then NAME:FORM with FORM add, residual or plain, e.g. mean mlp:residual mlp-online:add "
                        "(a model trained online in a form is scored in it)")
    r.add_argument("--run", nargs="+", default=[], metavar="KEY", help="free runs (free_runs.runs keys) whose correction is scored as the run applies it")
    r.add_argument("--windows", type=int, default=8, help="rollout length in 6-h windows")
    r.add_argument("--starts", type=int, default=6, help="analyses spread over the split's blocks")
    r.add_argument("--split", default="val", choices=["train", "val", "test"])
    args = ap.parse_args(argv)
    if args.cmd == "rollout-loss":
        return _rollout_loss(args)
    if args.cmd == "drift":
        return _drift(args)
    if args.cmd == "tracking":
        return _tracking(args)
    if args.cmd == "sensitivity":
        return _sensitivity(args)
    if args.cmd == "lmdz-mean":
        return _lmdz_mean(args)
    if args.cmd == "lmdz-forecast-join":
        return _lmdz_forecast_join(args)
    from nudgeml.report import summary_markdown

    metrics_path = args.report_dir / "metrics.json"
    if not metrics_path.exists():
        print(f"{metrics_path}: not found (run the report rule first)", file=sys.stderr)
        return 2
    metrics = json.loads(metrics_path.read_text())
    models = args.models or args.report_dir.parent / "models"
    offline = {}
    for f in sorted(models.glob("*/offline.json")):
        res = json.loads(f.read_text())
        offline[res["model"]] = sum(t["r2_overall"] for t in res["targets"].values()) / len(res["targets"])
    print(summary_markdown(metrics, offline))
    return 0


def _rollout_loss(args: argparse.Namespace) -> int:
    import yaml

    from nudgeml.checks import load_config
    from nudgeml.config import deep_merge
    from nudgeml.errors import ConfigError, InputError
    from nudgeml.online import LOSS_VARIABLES, model_form, run_form, score_rollouts

    try:
        overlay: dict = {}
        for path in args.configfile:
            overlay = deep_merge(overlay, yaml.safe_load(path.read_text()) or {})
        cfg = load_config("config/config.yaml", overlay)
        if not args.model and not args.run:
            raise InputError("name what to score: --model NAME:FORM ... and/or --run KEY ...")
        forms = [model_form(cfg, *(m.split(":", 1) if ":" in m else (m, "mean" if m == "mean" else ""))) for m in args.model]
        forms += [run_form(cfg, k) for k in args.run]
        rows = score_rollouts(cfg, args.results, forms, windows=args.windows, n_starts=args.starts, split=args.split)
    except (ConfigError, InputError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"Rollout loss ({args.windows} windows of 6 h, {args.starts} starts of the {args.split} split; online training's per-window loss), "
          "and the error of the rollout's time mean (online.time_mean_weight's term, unweighted)")
    print("| correction | model | form | loss | time-mean error | loss per start |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        form = " ".join([row["form"], *("eddy_only" if k == "eddy_only" else f"{k} {row[k]:g}" for k in ("eddy_only", "top_hpa", "bottom_hpa") if k in row)])
        print(f"| {row['label']} | {row['model']} | {form} | {row['loss']:.5f} | {row['time_mean']:.5f} | " + " ".join(f"{v:.4f}" for v in row["per_start"]) + " |")
    print("\nBy variable (each the area-weighted level mean of the squared error in the model's feature standard deviations; the loss is their mean)")
    print("| correction | " + " | ".join(f"{k}" for k in LOSS_VARIABLES) + " | " + " | ".join(f"{k} time mean" for k in LOSS_VARIABLES) + " |")
    print("|---|" + "---|" * (2 * len(LOSS_VARIABLES)))
    for row in rows:
        print(f"| {row['label']} | " + " | ".join(f"{row['per_variable'][k]:.5f}" for k in LOSS_VARIABLES) + " | "
              + " | ".join(f"{row['time_mean_per_variable'][k]:.5f}" for k in LOSS_VARIABLES) + " |")
    return 0


def _tracking(args: argparse.Namespace) -> int:
    from nudgeml.errors import InputError
    from nudgeml.tracking import format_table, run_factors, write_json

    try:
        result = run_factors(args.guide, args.histhf, variables=args.variables, anomalies=args.anomalies, skip_days=args.skip_days)
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json is not None:
        write_json(result, args.json)
    return 0


def _sensitivity(args: argparse.Namespace) -> int:
    from nudgeml.atomic import write_text_atomic
    from nudgeml.errors import InputError, ManifestError
    from nudgeml.sensitivity import format_sensitivity, model_sensitivity

    try:
        result = model_sensitivity(args.model_dir, args.store, args.split, args.rows)
    except (InputError, ManifestError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_sensitivity(result))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")
    return 0


def _drift(args: argparse.Namespace) -> int:
    import numpy as np

    from nudgeml.conventions import read_histhf
    from nudgeml.errors import InputError
    from nudgeml.metrics import monthly_zonal_rmse
    from nudgeml.regrid import open_forcing

    try:
        truth = open_forcing(sorted(args.truth))[args.variable]
        rows = []
        for path in args.histhf:
            h = read_histhf(path)[args.variable]
            times = np.intersect1d(h["time"].values, truth["time"].values)
            if times.size == 0:
                raise InputError(f"{path}: no time in common with the truth files")
            rows.append((path.parent.name, monthly_zonal_rmse(h.sel(time=times).values, truth.sel(time=times).values, times, h["lat"].values)))
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    months = [m for m, _ in rows[0][1]]
    print(f"RMSE of the monthly mean zonal-mean {args.variable} against the truth, by month")
    print("| run | " + " | ".join(months) + " |")
    print("|---|" + "---|" * len(months))
    for name, values in rows:
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for _, v in values) + " |")
    return 0


def _lmdz_mean(args: argparse.Namespace) -> int:
    from nudgeml.errors import InputError
    from nudgeml.gcm.runners import lmdz_mean_file

    try:
        lmdz_mean_file(args.mean, args.iim, args.jjm, args.out)
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.out}: du_mean, dv_mean on LMDZ's {args.iim}x{args.jjm} physics columns")
    return 0


def _lmdz_forecast_join(args: argparse.Namespace) -> int:
    from nudgeml.errors import InputError
    from nudgeml.gcm.runners import join_forecasts

    args.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        tags = join_forecasts(args.run_root, args.lead_hours, args.out_dir / "histhf.nc", args.out_dir / "guide_ins.nc")
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.out_dir}: histhf.nc, guide_ins.nc of {len(tags)} forecast samples ({tags[0]} to {tags[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
