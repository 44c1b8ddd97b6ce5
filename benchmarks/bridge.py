"""Benchmark the Fortran <-> libtorch bridge against Python at LMDZ size, in one run.

LMDZ6A grid 144 x 142 = 20 448 columns, 79 levels; model u, v, T, q (316 features) -> 4 x 256
(SiLU) -> du, dv (158 targets), exported by ``nudgeml.export`` (TorchScript + AOTInductor). The
same float32 columns go through Python (``torch.jit.load`` / ``aoti_load_package``) and through
the Fortran program ``bench_bridge`` (built here with CMake), with the same intra-op thread count;
the Fortran outputs are checked bit for bit against Python's before any figure is printed.

    python benchmarks/bridge.py [--threads 2] [--repeats 15] [--out benchmarks/out/bridge]

Python and Fortran take turns: ``--rounds`` rounds, each timing ``--repeats`` calls of every path
(after 3 warm-up calls), so that a slow spell of a shared machine hits both sides alike. Prints
the median per-call time of every path over all rounds, the Fortran/Python TorchScript ratio
(median over rounds of the per-round ratio), and the cost of the correction as a share of LMDZ's
time for 6 simulated hours (see --lmdz-*). The load average is printed first: on a busy machine
the figures are noise.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nudgeml import bridge
from nudgeml import export as ex
from nudgeml import manifest as mf
from nudgeml.models import normalized as nn_models

NLON, NLAT, KLEV = 144, 142, 79
HIDDEN = [256, 256, 256, 256]


def lmdz_model(rng: np.random.Generator) -> tuple[nn_models.NormalizedModel, mf.Manifest, np.ndarray]:
    """The LMDZ-size MLP (random weights) with its manifest, and a batch of LMDZ-like columns."""
    n = NLON * NLAT
    sigma = np.linspace(0.99, 0.0005, KLEV)
    u = rng.normal(0, 12, (n, KLEV)) + 20 * (1 - sigma)
    v = rng.normal(0, 7, (n, KLEV))
    t = rng.uniform(200, 300, (n, KLEV)) - 50 * (1 - sigma)
    q = rng.uniform(0, 0.02, (n, KLEV)) * sigma**3
    x = np.concatenate([u, v, t, q], axis=1).astype(np.float32)
    torch.manual_seed(0)
    net = nn_models.mlp(4 * KLEV, HIDDEN, 2 * KLEV)
    model = nn_models.NormalizedModel(net, torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0)),
                               torch.zeros(2 * KLEV), torch.full((2 * KLEV,), 1e-4)).eval()
    feats = tuple(mf.Block(name, units, KLEV) for name, units in
                  (("u", "m s-1"), ("v", "m s-1"), ("t", "K"), ("q", "kg kg-1")))
    targs = (mf.Block("du", "m s-2", KLEV), mf.Block("dv", "m s-2", KLEV))
    manifest = mf.Manifest(
        name="bench-lmdz", kind="mlp", features=feats, targets=targs,
        levels=mf.Levels(tuple(float(s) * 101325.0 for s in sigma)),
        guard=mf.Guard(0.1, tuple(map(float, x.min(0))), tuple(map(float, x.max(0))),
                       (-1e-3,) * (2 * KLEV), (1e-3,) * (2 * KLEV)),
        grid=mf.Grid("lmdz144x142", NLON, NLAT),
    )
    return model, manifest, x


def time_python(fn, x: torch.Tensor, repeats: int) -> tuple[float, list[float], torch.Tensor]:
    """Median ms of ``repeats`` calls after 3 warm-up calls, all times (ms), the last output."""
    with torch.inference_mode():
        for _ in range(3):
            y = fn(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            y = fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times, y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per path and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=bridge.REPO_ROOT / "benchmarks" / "out" / "bridge")
    ap.add_argument("--build-dir", type=Path, default=bridge.DEFAULT_BUILD_DIR / "bench")
    ap.add_argument("--lmdz-sypd", type=float, nargs="+", default=[5.0, 20.0],
                    help="assumed LMDZ throughput (simulated years per day), bracket")
    ap.add_argument("--lmdz-cores", type=int, default=320,
                    help="assumed cores of the LMDZ job (e.g. 40 MPI x 8 OpenMP)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    print(f"building the bridge in {args.build_dir} ...", flush=True)
    bridge.configure_and_build(args.build_dir)
    model, manifest, x = lmdz_model(np.random.default_rng(1))
    model_dir = args.out / "model"
    print(f"exporting the LMDZ-size model to {model_dir} (AOTInductor compile) ...", flush=True)
    ex.export_model(model, manifest, model_dir)
    x_path = args.out / "x.f32"
    np.ascontiguousarray(x.T).tofile(x_path)  # Fortran x(n, nf)

    n = x.shape[0]
    xt = torch.from_numpy(x)
    ts = torch.jit.load(str(model_dir / "model.pt"))
    pkg = torch._inductor.aoti_load_package(str(model_dir / "model.pt2"))
    cmd = [str(args.build_dir / "bench_bridge"), str(model_dir), str(x_path), str(n), str(args.repeats),
           str(args.threads), str(args.out)]
    print(f"load average before timing: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    py_rounds: dict[str, list[float]] = {"torchscript": [], "aoti": []}
    py_all: dict[str, list[float]] = {"torchscript": [], "aoti": []}
    f_rounds: dict[tuple[str, str], list[float]] = {}
    outputs = {}
    for _ in range(args.rounds):
        for backend, fn in (("torchscript", ts), ("aoti", pkg)):
            med, times, outputs[backend] = time_python(fn, xt, args.repeats)
            py_rounds[backend].append(med)
            py_all[backend] += times
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr, file=sys.stderr)
            return 1
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT"):
                _, backend, layout, med, _best = line.split()
                f_rounds.setdefault((backend, layout), []).append(float(med))

    exact = {}
    for backend in ("torchscript", "aoti"):
        y_f = np.fromfile(args.out / f"{backend}.f32", dtype=np.float32).reshape(n, -1)
        exact[backend] = bool(np.array_equal(y_f.view(np.int32), outputs[backend].numpy().view(np.int32)))

    py = {b: (statistics.median(v), min(v)) for b, v in py_all.items()}
    fortran = {k: (statistics.median(v), min(v)) for k, v in f_rounds.items()}
    ratio = {k: statistics.median(f / p for f, p in zip(v, py_rounds["torchscript"], strict=True))
             for k, v in f_rounds.items()}
    ratio_py_aoti = statistics.median(a / t for a, t in zip(py_rounds["aoti"], py_rounds["torchscript"], strict=True))
    print()
    print(f"LMDZ size: {n} columns x {x.shape[1]} features -> {2 * KLEV} targets, MLP {x.shape[1]}-"
          f"{'-'.join(map(str, HIDDEN))}-{2 * KLEV}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.repeats} calls, torch {torch.__version__}")
    print(f"{'path':50s} {'median ms':>10s} {'(min)':>8s} {'/ Python TS':>12s}")
    rows = [("Python TorchScript  model(x)", py["torchscript"], 1.0),
            ("Python AOTInductor .pt2", py["aoti"], ratio_py_aoti)]
    labels = {"features_first": "xt(nf,n) -> yt(nt,n) [no input copy]",
              "view": "xt(nf,n) -> view [no copy at all]",
              "columns_first": "x(n,nf) -> y(n,nt) [transposing copies]",
              "columns_first_strided": "x(n,nf) strided view -> y(n,nt)",
              "lmdz_refresh": "LMDZ refresh: r8 fields -> guard -> d_u,d_v"}
    for key, t in fortran.items():
        backend, layout = key
        rows.append((f"Fortran {'TS' if backend == 'torchscript' else '.pt2'} {labels[layout]}", t, ratio[key]))
    for label, (med, best), r in rows:
        print(f"{label:50s} {med:10.2f} {best:8.2f} {r:11.3f}x")
    print(f"Fortran outputs bit-identical to Python: TorchScript {exact['torchscript']}, .pt2 {exact['aoti']}")

    # Share of a 6-hour interval: LMDZ core-seconds per 6 simulated hours against the bridge's.
    refresh_ms = fortran.get(("torchscript", "lmdz_refresh"), fortran[("torchscript", "view")])[0]
    ml_core_s = refresh_ms / 1e3 * args.threads
    print(f"\nCorrection cost per 6 h of model time: {ml_core_s:.3f} core-seconds "
          f"({refresh_ms:.1f} ms on {args.threads} cores, whole grid)")
    for sypd in args.lmdz_sypd:
        wall_6h = 86400.0 / (sypd * 365.0 * 4.0)
        lmdz_core_s = wall_6h * args.lmdz_cores
        print(f"  LMDZ at {sypd:g} SYPD on {args.lmdz_cores} cores (assumed): {wall_6h:.2f} s wall = "
              f"{lmdz_core_s:.0f} core-s per 6 h -> correction share {100 * ml_core_s / lmdz_core_s:.4f} %")
    summary = {
        "columns": n, "features": int(x.shape[1]), "targets": 2 * KLEV, "threads": args.threads,
        "rounds": args.rounds, "repeats": args.repeats,
        "python_ms": {k: v[0] for k, v in py.items()},
        "fortran_ms": {f"{b}/{lay}": v[0] for (b, lay), v in fortran.items()},
        "ratio_to_python_torchscript": {f"{b}/{lay}": r for (b, lay), r in ratio.items()}
        | {"python/aoti": ratio_py_aoti},
        "bit_identical": exact,
        "torch": torch.__version__,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0 if all(exact.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
