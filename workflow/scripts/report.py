import json
from pathlib import Path

import numpy as np

from nudgeml.atomic import atomic_path, write_text_atomic
from nudgeml.coupled import describe_correction
from nudgeml.grid import read_model_grid
from nudgeml.logs import rule_logging
from nudgeml.naming import split_member
from nudgeml.precip_mapping import read_mapping
from nudgeml.report import (
    evaluate_runs,
    figure_guard,
    figure_maps,
    figure_offline,
    figure_precip,
    figure_zonal,
    git_commit,
    json_ready,
    mean_coverage,
    render_html,
    software_versions,
)

with rule_logging(snakemake.log[0]) as log:
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    runs = {run: (h, s) for run, h, s in zip(p.runs, i.histhf, i.status)}
    corrections = {run: describe_correction(p.free_runs["runs"][split_member(run)[0]]) for run in p.runs}
    ev = evaluate_runs(
        list(i.forcing), list(i.precip), i.nudged, runs,
        start=np.datetime64(p.free_runs["start"], "s"), end=np.datetime64(p.free_runs["end"], "s"),
        skip_days=float(p.report["skip_days"]), corrections=corrections,
        ensembles=dict(p.ensembles), truth_paths=list(i.truth), truth_precip_paths=list(i.truth_precip),
        precipitation=str(p.report.get("precipitation", "total")),
        mapping=read_mapping(i.mapping) if i.get("mapping") else None,
        mapping_seed=int((p.report.get("precip_mapping") or {}).get("seed", 0)),
    )
    statuses = {run: json.loads(Path(s).read_text()) for run, s in zip(p.runs, i.status)}
    offline = {m: json.loads(Path(f).read_text()) for m, f in zip(p.models, i.offline)}
    land = read_model_grid(i.grid).land_fraction
    window = (np.datetime64(p.free_runs["start"], "s"), np.datetime64(p.free_runs["end"], "s"))
    coverage = mean_coverage(i.mean, *window) if i.get("mean") else None
    figures = {
        "maps": figure_maps(ev, float(p.report["upper_level_hpa"]), land_fraction=land),
        "zonal": figure_zonal(ev),
        "precip": figure_precip(ev),
        "offline": figure_offline(offline),
        "guard": figure_guard(statuses, int(len(ev["_fields"]["lat"]) * len(ev["_fields"]["lon"]))),
    }
    for key in ("maps", "zonal", "precip"):
        with atomic_path(o[key]) as t:
            t.write_bytes(figures[key])
    page = render_html(ev, figures=figures, statuses=statuses, offline=offline, config=p.config, versions=software_versions(), commit=git_commit(Path.cwd()), coverage=coverage)
    write_text_atomic(o.json, json.dumps({**json_ready(ev), "mean_coverage": coverage}, indent=1, default=float) + "\n")
    write_text_atomic(o.html, page)
    for row in ev["table"]:
        log.info("%-14s %s", row["run"], "  ".join(f"{v} {m['rmse']:.3f}" for v, m in row["metrics"].items()))
    log.info("field-to-field floor %s", ev["noise_floor"])
    log.info("spread saturated: %s (%s)", ev["spread_saturated"], "; ".join(f"{v} {s['reason']}" for v, s in ev["saturation"].items()))
    for e, refs in ev["verdicts"].items():
        for ref, d in refs.items():
            log.info("%-14s %s: %s", e, ref, "; ".join(f"{v} {c['text']}" for v, c in d.items()))
