"""The MLP's width: its skill against the cost of its online call, on the store it was trained on.

Issue 16's item 3 asks for the ML call to be at most 2 % of a stand-in free run at T21. The call is
bound by the network's float32 arithmetic (``benchmarks/README.md``), so a narrower network is the one
lever left on one thread; this script measures what it costs in skill. It retrains a trained MLP
(``--like``: a model folder of the workflow, whose ``train_summary.json`` gives every setting) at other
widths of its hidden layers, everything else kept (epochs, batches, learning rate, seeds), on the same
store, and prints per width and seed the best validation loss, the test R² of each target block
(``nudgeml.evaluate``), and the median time of the online call's model and guard on 2 048 test columns
(the T21 grid), one thread, the ``.pt2`` artefact as the ML free run reads it, the widths taking turns
over ``--rounds`` rounds; then each width's mean over the seeds and its call's ratio to the widest.

    python benchmarks/mlp_width.py --like results/models/mlp --store results/datasets/nudging/dataset.zarr \\
        [--widths 32,64,128] [--seeds 0,1,2] [--rounds 200]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nudgeml.data import Segment, SplitArrays
from nudgeml.evaluate import evaluate
from nudgeml.export import export_trained
from nudgeml.guard import apply_guard_f32, float32_bounds, guard_bounds
from nudgeml.manifest import read_manifest
from nudgeml.train import train_model

T21_COLUMNS = 2048


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--like", type=Path, required=True, help="a trained MLP's folder (its train_summary.json)")
    ap.add_argument("--store", type=Path, required=True, help="the store it was trained on")
    ap.add_argument("--widths", default="32,64,128")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--margin", type=float, default=0.1, help="the guard's margin (export.margin)")
    args = ap.parse_args()
    summary = json.loads((args.like / "train_summary.json").read_text())
    if summary.get("kind") != "mlp":
        raise SystemExit(f"{args.like / 'train_summary.json'}: key 'kind' is {summary.get('kind')!r}, not 'mlp'")
    base = dict(summary["config"], kind="mlp")
    widths = [int(w) for w in args.widths.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    depth = len(base["hidden"])
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.like}: hidden {base['hidden']}, "
          f"{base['max_epochs']} epochs, limit_train_batches {base.get('limit_train_batches', 1.0)}")
    rows: list[dict[str, object]] = []
    calls: dict[int, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in widths:
            for s in seeds:
                section = copy.deepcopy(base)
                section.update(hidden=[w] * depth, seed=s)
                out = Path(tmp) / f"w{w}_s{s}"
                t0 = time.perf_counter()
                trained = train_model(args.store, out, "mlp", section)
                train_s = time.perf_counter() - t0
                export_trained(out / "trained.pt", args.store, out, name="mlp", margin=args.margin, aoti=True)
                scores = evaluate(out, args.store, "test")
                rows.append({"width": w, "seed": s, "val_loss": trained["best_score"], "train_s": train_s,
                             **{f"r2_{k}": v["r2_overall"] for k, v in scores["targets"].items()}})
            calls[w] = out  # the last seed's export: every seed has the same shapes and cost
        times = time_calls(calls, args.store, args.rounds)
    blocks = [k for k in rows[0] if k.startswith("r2_")]
    print(f"\n{'width':>6} {'seed':>5} {'val loss':>9} " + " ".join(f"{'R2 ' + k[3:]:>8}" for k in blocks) + f" {'train s':>8}")
    for r in rows:
        print(f"{r['width']:>6} {r['seed']:>5} {r['val_loss']:>9.4f} " + " ".join(f"{r[k]:>8.3f}" for k in blocks) + f" {r['train_s']:>8.1f}")
    widest = max(widths)
    print(f"\nmean over seeds {seeds}; online call (model .pt2 + float32 guard) on {T21_COLUMNS} test columns, 1 thread, median of {args.rounds}:")
    print(f"{'width':>6} {'val loss':>9} " + " ".join(f"{'R2 ' + k[3:]:>8}" for k in blocks) + f" {'model ms':>9} {'guard ms':>9} {'call / ' + str(widest):>10}")
    for w in widths:
        mine = [r for r in rows if r["width"] == w]
        mean = {k: statistics.fmean(float(r[k]) for r in mine) for k in ("val_loss", *blocks)}
        m, g = times[w]
        ratio = (m + g) / sum(times[widest])
        print(f"{w:>6} {mean['val_loss']:>9.4f} " + " ".join(f"{mean[k]:>8.3f}" for k in blocks) + f" {m:>9.3f} {g:>9.3f} {ratio:>10.2f}")


def time_calls(model_dirs: dict[Any, Path], store: Path, rounds: int) -> dict[Any, tuple[float, float]]:
    """Median ms of the model and of the guard per exported model (a width here, a precision in
    ``aoti_precision.py``), the models' ``.pt2`` taking turns each round."""
    torch.set_num_threads(1)  # as the ML free run (nudgeml.coupled.MLCorrector)
    test = SplitArrays(store, "test")
    x, _ = test.read(Segment(0, min(T21_COLUMNS, test.n_rows)))
    x = np.ascontiguousarray(x, np.float32)
    loaded = {}
    for w, d in model_dirs.items():
        manifest = read_manifest(d)
        model = torch._inductor.aoti_load_package(str(d / manifest.artifacts["aoti"]))
        fallback = np.zeros((x.shape[0], manifest.n_targets), np.float32)
        loaded[w] = (model, float32_bounds(guard_bounds(manifest.guard)), fallback)
    spent: dict[Any, tuple[list[float], list[float]]] = {w: ([], []) for w in loaded}
    with torch.no_grad():
        for i in range(rounds + 5):  # 5 warm-up rounds, not counted
            for w, (model, bounds, fallback) in loaded.items():
                t0 = time.perf_counter()
                y = model(torch.from_numpy(x))
                y = np.asarray((y[0] if isinstance(y, (list, tuple)) else y).numpy(), np.float32)
                t1 = time.perf_counter()
                apply_guard_f32(x, y, fallback, bounds)
                t2 = time.perf_counter()
                if i >= 5:
                    spent[w][0].append(1e3 * (t1 - t0))
                    spent[w][1].append(1e3 * (t2 - t1))
    return {w: (statistics.median(m), statistics.median(g)) for w, (m, g) in spent.items()}


if __name__ == "__main__":
    main()
