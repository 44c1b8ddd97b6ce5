"""The MLP's ``.pt2`` in float32 and in bfloat16: the online call's time and the test skill, in one run.

Issue 16's item 3 asks for the ML call to be at most 2 % of a stand-in free run at T21, and the call is
the network's arithmetic (``benchmarks/README.md``). On a CPU with bfloat16 dot products (AVX512-BF16,
AMX) a bfloat16 matrix product runs at about twice the float32 rate; ``export.aoti_precision`` puts the
hidden layers of the MLP's ``.pt2`` in bfloat16, the standardisation and the float32 interface kept
(``nudgeml.models.normalized.ReducedPrecisionModel``). This script exports one trained MLP (``--model``:
a model folder of the workflow, with its ``trained.pt``) both ways on the store it was trained on and
prints

- the median time of the online call's model and guard on 2 048 test columns (the T21 grid), one
  thread as the ML free run, the two artefacts taking turns over ``--rounds`` rounds, and their ratio;
- the test R² of each target block for both, and the bfloat16 output's largest and root-mean-square
  departure from the float32 one, in units of each target's test standard deviation.

    python benchmarks/aoti_precision.py --model results/models/mlp --store results/datasets/nudging/dataset.zarr [--rounds 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from mlp_width import T21_COLUMNS, time_calls  # the online call's timing, the artefacts taking turns (this folder)

from nudgeml.data import Segment, SplitArrays
from nudgeml.evaluate import MetricAccumulator, overall_r2
from nudgeml.export import export_trained, native_bfloat16
from nudgeml.manifest import read_manifest

PRECISIONS = ("float32", "bfloat16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a trained MLP's folder (its trained.pt)")
    ap.add_argument("--store", type=Path, required=True, help="the store it was trained on")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--margin", type=float, default=0.1, help="the guard's margin (export.margin)")
    ap.add_argument("--max-rows", type=int, default=1 << 20, help="test rows scored (the first ones)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; bfloat16 dot products on this CPU: {native_bfloat16()}")
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for p in PRECISIONS:
            dirs[p] = Path(tmp) / p
            export_trained(args.model / "trained.pt", args.store, dirs[p], name="mlp", margin=args.margin, aoti=True, aoti_precision=p)
            assert read_manifest(dirs[p]).aoti_precision == p
        models = {p: torch._inductor.aoti_load_package(str(d / read_manifest(d).artifacts["aoti"])) for p, d in dirs.items()}
        times = time_calls(dirs, args.store, args.rounds)
        skill = score(models, read_manifest(dirs["float32"]), args.store, args.max_rows)
    print(f"\nonline call on {T21_COLUMNS} test columns, 1 thread, median of {args.rounds} rounds (ms):")
    print(f"{'precision':>10} {'model':>8} {'guard':>8} {'call':>8} {'call / float32':>15}")
    ref = sum(times["float32"])
    for p in PRECISIONS:
        m, g = times[p]
        print(f"{p:>10} {m:>8.3f} {g:>8.3f} {m + g:>8.3f} {(m + g) / ref:>15.2f}")
    print(f"\ntest skill ({skill['n']} columns):")
    blocks = list(skill["float32"])
    print(f"{'precision':>10} " + " ".join(f"{'R2 ' + b:>9}" for b in blocks))
    for p in PRECISIONS:
        print(f"{p:>10} " + " ".join(f"{skill[p][b]:>9.4f}" for b in blocks))
    print(f"bfloat16 - float32, in test standard deviations of each target: largest {skill['max_dev']:.4f}, root mean square {skill['rms_dev']:.5f} (the largest target's)")


def score(models: dict[str, object], manifest, store: Path, max_rows: int) -> dict[str, object]:
    """Test R² per target block for each artefact, and the bfloat16 output's departure from float32."""
    test = SplitArrays(store, "test")
    n = min(test.n_rows, max_rows)
    starts = np.cumsum([0] + [b.levels for b in manifest.targets])
    slices = [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]
    accs = {p: MetricAccumulator(manifest.n_targets, slices) for p in models}
    dev_max = np.zeros(manifest.n_targets)
    dev_sq = np.zeros(manifest.n_targets)
    with torch.no_grad():
        for s in range(0, n, 65536):
            x, y = test.read(Segment(s, min(n, s + 65536)))
            out = {}
            for p, model in models.items():
                o = model(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
                out[p] = np.asarray((o[0] if isinstance(o, (list, tuple)) else o).numpy(), np.float64)
                accs[p].update(y, out[p])
            d = out["bfloat16"] - out["float32"]
            dev_max = np.maximum(dev_max, np.abs(d).max(axis=0))
            dev_sq += (d**2).sum(axis=0)
    std = np.sqrt(np.maximum(accs["float32"].sst, 0) / max(n, 1))
    ok = accs["float32"].has_variance()
    result: dict[str, object] = {p: {b.name: overall_r2(accs[p], sl) for b, sl in zip(manifest.targets, slices)} for p in models}
    result.update(n=n, max_dev=float((dev_max[ok] / std[ok]).max()), rms_dev=float(np.sqrt((dev_sq[ok] / n) / std[ok] ** 2).max()))
    return result


if __name__ == "__main__":
    main()
