"""One call of the tree model, three ways, against the MLP call: the online cost of the ``xgboost`` kind.

An LMDZ-size booster (317 features, 158 targets projected on 6 modes, 100 rounds of depth-6 trees:
600 trees, ``one_output_per_tree`` as ``nudgeml.models.xgb`` trains it; fitted on random columns,
so the trees are full-depth but meaningless) goes through

* ``walker``: ``TreeEnsemble`` scripted with TorchScript (the ``model.pt`` of an xgboost export);
* ``tl2cgen``: the shared library ``nudgeml.trees`` compiles at export (trees + the map to physical
  targets), called through ctypes (:class:`nudgeml.trees.CompiledTrees`): each function of 8 trees
  walks a block of 1 024 rows before the next;
* ``tl2cgen-rowwise``: the same library built with blocks of one row (every tree for one row, then the
  next row: tl2cgen's own ``predict`` order), the outputs checked equal bit for bit;
* ``xgboost``: the booster's own ``inplace_predict`` (the reference, modes only);
* ``hummingbird-<strategy>``: hummingbird-ml's TorchScript conversion, when it is installed and
  can read the booster (0.4.12 cannot: it parses the per-target ``base_score`` as one float);

and the default MLP (317 -> 3 x 256 SiLU -> 158, TorchScript) on the same columns, at 2 048 (the
stand-in's T21 grid is 2 048 columns) and 20 448 (LMDZ 144 x 142) columns. Every path uses one
thread, as the free run does (``nudgeml.coupled``). The paths take turns, ``--rounds`` rounds of one
call each after a warm-up; the median is printed, and the ratios of medians, so a slow spell of a
shared machine hits all paths alike. The compiled library's outputs are checked against the
booster's before any time is printed.

    python benchmarks/tree_call.py [--rounds 5] [--out benchmarks/out/tree_call]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xgboost as xgb

from nudgeml.models.mlp import MLPConfig, build_net
from nudgeml.models.xgb import booster_predict, tree_module
from nudgeml.trees import CompiledTrees, compile_trees

N_FEATURES, N_TARGETS, N_MODES, ROUNDS, DEPTH = 317, 158, 6, 100, 6
SIZES = (2048, 20448)


def booster_and_map(rng: np.random.Generator, n_rows: int) -> tuple[xgb.Booster, np.ndarray, dict[str, np.ndarray]]:
    x = rng.standard_normal((n_rows, N_FEATURES)).astype(np.float32)
    w = rng.standard_normal((N_FEATURES, N_MODES)) / np.sqrt(N_FEATURES)
    z = (np.tanh(x @ w) + 0.3 * x[:, :N_MODES] * x[:, N_MODES:2 * N_MODES]).astype(np.float32)
    params = {"tree_method": "hist", "max_depth": DEPTH, "multi_strategy": "one_output_per_tree", "max_bin": 64, "nthread": os.cpu_count(), "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(x, z), ROUNDS)
    modes = np.linalg.qr(rng.standard_normal((N_TARGETS, N_MODES)))[0].T  # (modes, targets) orthonormal
    stats = {"target_mean": rng.normal(0, 1e-5, N_TARGETS).astype(np.float32), "target_std": rng.uniform(1e-5, 1e-4, N_TARGETS).astype(np.float32)}
    return booster, modes, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--train-rows", type=int, default=4000)
    ap.add_argument("--out", type=Path, default=None, help="keep the compiled library here (default: a temporary directory)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (a shared machine: compare ratios, not ms)")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    booster, modes, stats = booster_and_map(rng, args.train_rows)
    print(f"booster: {booster.num_boosted_rounds()} rounds x {N_MODES} modes = {ROUNDS * N_MODES} trees, depth {DEPTH} ({time.perf_counter() - t0:.0f} s to train)")
    walker_module = tree_module(booster, modes, stats)
    walker = torch.jit.script(walker_module)
    mlp = torch.jit.script(build_net(N_FEATURES, N_TARGETS, MLPConfig()).eval())
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        compile_trees(booster, out / "model_trees.so", intercept=walker_module.base.numpy(), modes=modes,
                      target_mean=stats["target_mean"], target_std=stats["target_std"], threads=os.cpu_count() or 1)
        print(f"tl2cgen: compiled in {time.perf_counter() - t0:.0f} s with gcc ({os.cpu_count()} jobs)")
        compiled = CompiledTrees(out / "model_trees.so")
        # the same C, each row through every tree before the next row (tl2cgen's own predict() order):
        # what blocking rows per tree function buys
        compile_trees(booster, out / "rowwise" / "model_trees.so", intercept=walker_module.base.numpy(), modes=modes,
                      target_mean=stats["target_mean"], target_std=stats["target_std"], threads=os.cpu_count() or 1, block_rows=1)
        rowwise = CompiledTrees(out / "rowwise" / "model_trees.so")
        xs = {n: rng.standard_normal((n, N_FEATURES)).astype(np.float32) for n in SIZES}
        ref = booster_predict(booster, xs[SIZES[0]], modes, stats)
        err = float(np.max(np.abs(compiled(xs[SIZES[0]]) - ref) / stats["target_std"]))
        with torch.no_grad():
            err_walker = float(np.max(np.abs(walker(torch.from_numpy(xs[SIZES[0]])).numpy() - ref) / stats["target_std"]))
        print(f"max |path - booster| / target std on {SIZES[0]} random columns: tl2cgen {err:.1e}, walker {err_walker:.1e}")
        if err > 1e-5:
            raise SystemExit("the compiled library does not reproduce the booster: no timing")
        if not np.array_equal(rowwise(xs[SIZES[0]]), compiled(xs[SIZES[0]])):
            raise SystemExit("the row-blocked and the row-wise library differ: no timing")

        paths = {
            "walker": lambda x: walker(torch.from_numpy(x)),
            "tl2cgen": lambda x: compiled(x),
            "tl2cgen-rowwise": lambda x: rowwise(x),
            "xgboost": lambda x: booster.inplace_predict(x),
            "mlp": lambda x: mlp(torch.from_numpy(x)),
        }
        try:
            import hummingbird.ml as hb

            reg = xgb.XGBRegressor()
            reg._Booster = booster
            for strategy in ("gemm", "tree_trav", "perfect_tree_trav"):
                try:
                    conv = hb.convert(reg, "torch.jit", xs[SIZES[0]][:16], extra_config={"tree_implementation": strategy})
                    paths[f"hummingbird-{strategy}"] = lambda x, conv=conv: conv.predict(x)
                except Exception as exc:  # noqa: BLE001 -- record why a strategy is not in the sweep
                    print(f"hummingbird-{strategy}: cannot convert this booster ({type(exc).__name__}: {str(exc)[:120]})")
        except ImportError:
            print("hummingbird-ml: not installed, not in the sweep")
        booster.set_param({"nthread": 1})
        times: dict[tuple[str, int], list[float]] = {(p, n): [] for p in paths for n in SIZES}
        with torch.no_grad():
            for p, f in paths.items():  # warm-up (TorchScript profiling runs, page faults)
                for n in SIZES:
                    f(xs[n])
            for _ in range(args.rounds):
                for n in SIZES:
                    for p, f in paths.items():
                        t = time.perf_counter()
                        f(xs[n])
                        times[p, n].append(1e3 * (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedian ms per call over {args.rounds} rounds, 1 thread:")
    print(f"{'path':<28}" + "".join(f"{n:>12d} col" for n in SIZES) + "".join(f"{'/ mlp ' + str(n):>14}" for n in SIZES))
    for p in paths:
        print(f"{p:<28}" + "".join(f"{med[p, n]:>16.1f}" for n in SIZES) + "".join(f"{med[p, n] / med['mlp', n]:>14.1f}" for n in SIZES))
    for n in SIZES:
        print(f"{n} columns: walker / tl2cgen = {med['walker', n] / med['tl2cgen', n]:.1f}x; tl2cgen / mlp = {med['tl2cgen', n] / med['mlp', n]:.1f}x (goal <= 2)")


if __name__ == "__main__":
    main()
