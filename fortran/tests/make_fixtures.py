"""Export the bridge's fixture models and write the Python reference outputs the Fortran tests read.

Run by ctest (test ``fixtures``) before the Fortran tests:

    python make_fixtures.py --out <build>/fixtures

Everything is drawn from a fixed seed, through ``nudgeml.export`` (the exporter the training stage
uses) and ``nudgeml.guard`` (the guard reference). Binary files are raw little-endian arrays in
Fortran (column-major) order, so a Fortran ``x(n, nf)`` is read with one stream ``read``.

Layout of ``<out>``:

* ``mlp33/``: 4 variables x 8 levels + ps = 33 features -> du, dv x 8 = 16 targets, a normalised
  MLP, ``model.pt`` + ``model.pt2`` + ``model.json``; the guard's target range is the 5-95th
  percentile of its outputs on the training sample, so clipping happens in the tests.
* ``nan33/``: the same model, but the output is NaN for every column whose ``u_000 > 0``.
* ``trees33/``: an xgboost booster fitted to the MLP's outputs, compiled to ``model_trees.so`` as the
  export compiles one (``nudgeml.trees``), with the MLP's manifest (``tree_backend: tl2cgen``).
* ``bad_n_features/``, ``bad_model_size/``, ``missing_pt/``, ``bad_json/``: bad inputs.
* ``bridge/``: 257 columns, outputs of both artifacts for batches of 257, 1 and 7 columns.
* ``lmdz/``: an LMDZ-like state evolving linearly over 49 physics steps of 900 s, the mean
  tendency, the model's mean and per-level gains (the mean residual), each column's latitude row (eddies
  only), and the expected d_u, d_v of the LMDZ routine at the three 6-hourly refreshes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nudgeml import export as ex
from nudgeml import manifest as mf
from nudgeml.guard import apply_guard, guard_bounds
from nudgeml.lmdze_run import routine_eddy_only
from nudgeml.trees import CompiledTrees
from nudgeml.models import normalized as nn_models

KLEV = 8
N_BRIDGE = 257
KLON = 64
DT = 900.0  # physics step, s
NSTEP_REFRESH = 24  # 6 h / 900 s
NSTEPS = 2 * NSTEP_REFRESH + 1  # refreshes at steps 1, 25, 49
TORCH_THREADS = 2  # the Fortran tests load the models with the same count
ROW_LEN = 10  # eddies only: latitude rows of 10 columns (the last of 4), row 4 spans both OpenMP halves


def blocks() -> tuple[tuple[mf.Block, ...], tuple[mf.Block, ...]]:
    features = (mf.Block("u", "m s-1", KLEV), mf.Block("v", "m s-1", KLEV), mf.Block("t", "K", KLEV),
                mf.Block("q", "kg kg-1", KLEV), mf.Block("ps", "Pa", 1))
    targets = (mf.Block("du", "m s-2", KLEV), mf.Block("dv", "m s-2", KLEV))
    return features, targets


def random_state(rng: np.random.Generator, klon: int) -> dict[str, np.ndarray]:
    """(klon, klev) float64 fields, k = 0 at the surface, and paprs (klon, klev+1)."""
    sigma = np.linspace(0.97, 0.1, KLEV)
    ps = rng.uniform(96000.0, 103000.0, klon)
    edges = np.concatenate([[1.0], (sigma[:-1] + sigma[1:]) / 2, [0.0]])
    return {
        "u": rng.normal(0.0, 10.0, (klon, KLEV)) + 15.0 * (1 - sigma),
        "v": rng.normal(0.0, 6.0, (klon, KLEV)),
        "t": rng.uniform(215.0, 300.0, (klon, KLEV)) - 60.0 * (1 - sigma),
        "q": rng.uniform(0.0, 0.015, (klon, KLEV)) * sigma**3,
        "pplay": ps[:, None] * sigma[None, :],
        "paprs": ps[:, None] * edges[None, :],
    }


def features(state: dict[str, np.ndarray]) -> np.ndarray:
    """Feature matrix (klon, 33) float32 in the manifest's order (as the LMDZ routine builds it)."""
    cols = [state[v] for v in ("u", "v", "t", "q")] + [state["paprs"][:, :1]]
    return np.concatenate(cols, axis=1).astype(np.float32)


def fortran_write(path: Path, *arrays: np.ndarray, dtype: type = np.float64) -> None:
    """Concatenate arrays, each in Fortran order, as raw little-endian values."""
    with open(path, "wb") as f:
        for a in arrays:
            np.asarray(a, dtype=dtype).ravel(order="F").astype(np.dtype(dtype).newbyteorder("<")).tofile(f)


class NanWhereUPositive(nn.Module):
    """Wraps a model; its output is NaN for the columns whose first feature (u_000) is > 0."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        return torch.where(x[:, :1] > 0, torch.full_like(y, float("nan")), y)


def build_model(rng: np.random.Generator) -> tuple[nn_models.NormalizedModel, mf.Manifest]:
    feats, targs = blocks()
    train = features(random_state(rng, 4096))
    torch.manual_seed(1234)
    nf, nt = train.shape[1], 2 * KLEV
    net = nn_models.mlp(nf, [32, 32], nt)
    x_mean = torch.from_numpy(train.mean(axis=0))
    x_std = torch.from_numpy(train.std(axis=0))
    model = nn_models.NormalizedModel(net, x_mean, x_std, y_mean=torch.full((nt,), 1e-5),
                               y_std=torch.full((nt,), 2e-5)).eval()
    with torch.no_grad():
        y = model(torch.from_numpy(train)).numpy().astype(np.float64)
    manifest = mf.Manifest(
        name="fixture-mlp33", kind="mlp", features=feats, targets=targs,
        levels=mf.Levels(tuple(float(p) for p in np.linspace(0.97, 0.1, KLEV) * 101325.0)),
        guard=mf.Guard(
            margin=0.1,
            feature_min=tuple(map(float, train.min(axis=0))), feature_max=tuple(map(float, train.max(axis=0))),
            target_min=tuple(map(float, np.percentile(y, 5, axis=0))),
            target_max=tuple(map(float, np.percentile(y, 95, axis=0))),
        ),
        grid=mf.Grid("fixture", 8, 8),
        dataset_sha256=hashlib.sha256(train.tobytes()).hexdigest(),
    )
    return model, manifest


def build_trees(rng: np.random.Generator, model: torch.nn.Module, manifest: mf.Manifest, out: Path) -> Path:
    """A small booster (16 targets, 12 rounds of depth-4 trees) fitted to the MLP on random columns,
    compiled as the export compiles trees; the directory holds the library and the manifest."""
    import xgboost as xgb

    from nudgeml.trees import TREE_BACKEND, compile_trees

    x = features(random_state(rng, 2048))
    y = run(model, x).astype(np.float64)
    mean, std = y.mean(axis=0), y.std(axis=0)
    booster = xgb.train({"max_depth": 4, "multi_strategy": "one_output_per_tree", "nthread": 1, "seed": 0},
                        xgb.DMatrix(x, (y - mean) / std), 12)
    intercept = np.asarray(json.loads(json.loads(booster.save_config())["learner"]["learner_model_param"]["base_score"]), np.float64)
    d = out / "trees33"
    compile_trees(booster, d / "model_trees.so", intercept=intercept, modes=np.eye(y.shape[1]), target_mean=mean, target_std=std)
    trees_manifest = dataclasses.replace(manifest, name="fixture-trees33", kind="xgboost", tree_backend=TREE_BACKEND,
                                         artifacts={**manifest.artifacts, "trees": "model_trees.so"})
    mf.write_manifest(trees_manifest, d / "model.json")
    return d


def run(model: torch.nn.Module, x: np.ndarray, threads: int = TORCH_THREADS) -> np.ndarray:
    torch.set_num_threads(threads)
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def write_bad_inputs(out: Path, good: Path, manifest: mf.Manifest) -> None:
    # A manifest whose n_features disagrees with its own blocks (written raw: the writer refuses it).
    d = out / "bad_n_features"
    d.mkdir()
    raw = manifest.to_dict()
    raw["n_features"] = manifest.n_features + 1
    (d / "model.json").write_text(json.dumps(raw, indent=2))
    shutil.copy(good / "model.pt", d / "model.pt")

    # A consistent manifest over a model that takes 34 inputs.
    d = out / "bad_model_size"
    d.mkdir()
    wrong = nn_models.NormalizedModel(nn_models.mlp(34, [8], 16), torch.zeros(34), torch.ones(34), torch.zeros(16), torch.ones(16))
    ex.export_torchscript(wrong, d / "model.pt")
    mf.write_manifest(manifest, d / "model.json")

    # A manifest without its artifacts.
    d = out / "missing_pt"
    d.mkdir()
    mf.write_manifest(manifest, d / "model.json")

    # Truncated JSON.
    d = out / "bad_json"
    d.mkdir()
    (d / "model.json").write_text(json.dumps(manifest.to_dict())[:200])


def write_bridge(out: Path, rng: np.random.Generator, models: dict[str, torch.nn.Module]) -> None:
    d = out / "bridge"
    d.mkdir()
    x = features(random_state(rng, N_BRIDGE))
    fortran_write(d / "x.f32", x, dtype=np.float32)
    for backend, model in models.items():
        for n in (N_BRIDGE, 1, 7):
            fortran_write(d / f"ref_{backend}_{n}.f32", run(model, x[:n]), dtype=np.float32)
    (d / "meta.txt").write_text(f"{N_BRIDGE} {x.shape[1]} {2 * KLEV}\n")


def lmdz_reference(model: torch.nn.Module, manifest: mf.Manifest, state0, dstate, mean, partition, threads,
                   model_mean=None, gains=None, rows=None):
    """Expected (d_u, d_v) at each refresh, and the counters, for one partition of the columns. With
    ``model_mean`` (the mean residual) a column the guard keeps gets ``mean + g (tendency - model_mean)``
    per level, in float64 in that order (g = ``gains``, 1 when None), as nudgeml_lmdz documents. With
    ``rows`` (each column's latitude row, 1-based: eddies only) the kept columns' part about the mean
    P loses its row mean (``nudgeml.lmdze_run.routine_eddy_only`` over the partition: the Fortran test's
    reduction adds the threads' sums)."""
    bounds = guard_bounds(manifest.guard)
    fallback = np.concatenate([mean["du"], mean["dv"]], axis=1)
    if model_mean is not None:
        mm = np.concatenate([model_mean["du"], model_mean["dv"]], axis=1)
        g = np.ones(2 * KLEV) if gains is None else np.concatenate([gains[:, 0], gains[:, 1]])
    expected = []
    counts = np.zeros(4, dtype=np.int64)  # refreshes, columns, fallbacks, clipped: summed over threads
    kept_all = np.zeros(KLON, bool)
    for step in range(1, NSTEPS + 1, NSTEP_REFRESH):
        state = {k: state0[k] + (step - 1) * dstate[k] for k in state0}
        x = features(state)
        tendency = np.empty((KLON, 2 * KLEV))
        for lo, hi in partition:
            y = run(model, x[lo:hi], threads)
            res = apply_guard(x[lo:hi], y, fallback[lo:hi], bounds)
            tendency[lo:hi] = res.tendency
            if model_mean is not None:
                kept = ~res.fallback
                tendency[lo:hi][kept] = fallback[lo:hi][kept] + g * (res.tendency[kept] - mm[lo:hi][kept])
            counts += (1, hi - lo, res.n_fallback, res.n_clipped)
            if rows is not None:
                kept_all[lo:hi] = ~res.fallback
        if rows is not None:
            tendency = routine_eddy_only(tendency, fallback, kept_all, rows, partition)
        expected += [tendency[:, :KLEV] * DT, tendency[:, KLEV:] * DT]
    return expected, counts


def write_lmdz(out: Path, rng: np.random.Generator, manifest: mf.Manifest, models: dict[str, torch.nn.Module]) -> None:
    d = out / "lmdz"
    d.mkdir()
    state0 = random_state(rng, KLON)
    dstate = {k: v * 0.0 for k, v in state0.items()}
    dstate["u"] = rng.normal(0.0, 0.05, (KLON, KLEV))
    dstate["t"] = rng.normal(0.0, 0.02, (KLON, KLEV))
    dstate["q"] = rng.uniform(0.0, 1e-6, (KLON, KLEV))
    dstate["paprs"][:, 0] = rng.normal(0.0, 5.0, KLON)
    state0["t"][5, 3] = 450.0  # far outside the training range: column 6 (1-based) falls back
    state0["u"][11, 2] = np.nan  # a non-finite input: column 12 falls back
    mean = {"du": rng.normal(0.0, 1e-5, (KLON, KLEV)), "dv": rng.normal(0.0, 1e-5, (KLON, KLEV))}
    order = ("u", "v", "t", "q", "pplay", "paprs")
    fortran_write(d / "state0.f64", *(state0[k] for k in order))
    fortran_write(d / "dstate.f64", *(dstate[k] for k in order))
    fortran_write(d / "mean.f64", mean["du"], mean["dv"])
    # the model's mean over some training states, and gains per level that differ by level and tendency
    model_mean = {"du": rng.normal(0.0, 1e-5, (KLON, KLEV)), "dv": rng.normal(0.0, 1e-5, (KLON, KLEV))}
    gains = np.stack([np.linspace(0.0, 1.5, KLEV), np.linspace(2.0, -0.5, KLEV)], axis=1)  # (klev, 2)
    fortran_write(d / "model_mean.f64", model_mean["du"], model_mean["dv"])
    fortran_write(d / "gains.f64", gains)
    rows = np.arange(KLON) // ROW_LEN + 1
    (d / "rows.txt").write_text(" ".join(str(int(r)) for r in rows) + "\n")
    half = KLON // 2
    assert rows[half - 1] == rows[half], "a row spans both OpenMP halves"

    cases = {
        "torchscript_serial": (models["torchscript"], [(0, KLON)], TORCH_THREADS),
        "aoti_serial": (models["aoti"], [(0, KLON)], TORCH_THREADS),
        # two OpenMP threads, each with its own half of the columns and one libtorch thread
        "torchscript_omp": (models["torchscript"], [(0, half), (half, KLON)], 1),
        "nan_serial": (models["nan"], [(0, KLON)], TORCH_THREADS),
        # the compiled tree library (backend 'trees'), serial and on two OpenMP threads
        "trees_serial": (models["trees"], [(0, KLON)], TORCH_THREADS),
        "trees_omp": (models["trees"], [(0, half), (half, KLON)], 1),
        # the mean residual (gains 1), and per-level gains about the model's mean
        "residual_serial": (models["torchscript"], [(0, KLON)], TORCH_THREADS, model_mean, None),
        "gains_serial": (models["torchscript"], [(0, KLON)], TORCH_THREADS, model_mean, gains),
        "gains_omp": (models["torchscript"], [(0, half), (half, KLON)], 1, model_mean, gains),
        # eddies only about the gained part, serial and with a row split between two OpenMP threads
        "eddy_serial": (models["torchscript"], [(0, KLON)], TORCH_THREADS, model_mean, gains, rows),
        "eddy_omp": (models["torchscript"], [(0, half), (half, KLON)], 1, model_mean, gains, rows),
    }
    for name, (model, partition, threads, *residual) in cases.items():
        expected, counts = lmdz_reference(model, manifest, state0, dstate, mean, partition, threads, *residual)
        fortran_write(d / f"expect_{name}.f64", *expected)
        (d / f"counts_{name}.txt").write_text(" ".join(str(int(c)) for c in counts) + "\n")
    (d / "meta.txt").write_text(f"{KLON} {KLEV} {NSTEPS} {DT!r} {NSTEP_REFRESH}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.set_num_threads(TORCH_THREADS)
    rng = np.random.default_rng(20240601)

    model, manifest = build_model(rng)
    good = out / "mlp33"
    paths = ex.export_model(model, manifest, good)
    nan_dir = out / "nan33"
    nan_model = NanWhereUPositive(model).eval()
    ex.export_model(nan_model, dataclasses.replace(manifest, name="fixture-nan33"), nan_dir, aoti=False)

    # The references use the exported files, loaded as any Python caller would.
    models = {
        "torchscript": torch.jit.load(str(paths["torchscript"])),
        "aoti": torch._inductor.aoti_load_package(str(paths["aoti"])),
        "nan": torch.jit.load(str(nan_dir / "model.pt")),
        "trees": CompiledTrees(build_trees(np.random.default_rng(7), model, manifest, out) / "model_trees.so"),
    }
    write_bad_inputs(out, good, manifest)
    write_bridge(out, rng, models)
    write_lmdz(out, rng, manifest, models)
    print(f"fixtures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
