"""Offline evaluation of a model on the test split: MSE and R^2 per level and variable.

R^2 of target ``j`` is ``1 - SSE_j / SST_j`` with ``SST_j`` about the test split's own mean, so 0 is the
skill of a perfect constant and anything below 0 is worse than that; a target without variance in the
test split has no R^2 (NaN), and a variable's overall R^2 pools its targets that vary. The exported artefact is what is
evaluated (loaded from ``model.pt`` like the free run loads it), so offline and online skill refer to the
same function. Results: ``offline.json`` and ``r2_by_level.png``.

A field model (kind ``cnn``) needs its neighbours, so it is fed whole test fields from the column table
(``columns``), with the store's split; its non-finite samples are left out, as the store leaves them
out, so the scores compare with the column models'.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nudgeml.atomic import atomic_path, write_text_atomic
from nudgeml.data import Segment, SplitArrays
from nudgeml.errors import InputError, ManifestError
from nudgeml.manifest import Manifest, first_difference, read_manifest
from nudgeml.models.registry import MODEL_KINDS
from nudgeml.shard import open_store


def check_manifest_matches_store(manifest: Manifest, store: str | os.PathLike[str], source: str) -> None:
    """Raise :class:`ManifestError` naming ``source`` if the model was not made for this dataset."""
    root = open_store(store)
    attrs = root.attrs
    if list(manifest.feature_names) != list(attrs["feature_names"]):
        raise ManifestError(f"{source}: feature order differs from {store}'s: {first_difference('features', list(manifest.feature_names), list(attrs['feature_names']))}")
    if list(manifest.target_names) != list(attrs["target_names"]):
        raise ManifestError(f"{source}: targets differ from {store}")
    if not np.allclose(manifest.levels.values, attrs["levels_pa"], rtol=1e-6):
        raise ManifestError(f"{source}: key 'levels.values' differs from the levels of {store}")


class MetricAccumulator:
    """Streaming SSE and SST per target (SST via the running sum and sum of squares)."""

    def __init__(self, n: int, blocks: Sequence[slice] | None = None) -> None:
        """``blocks``: the targets of one variable each (one unit): a target's variance is judged
        against its own variable's, not against another unit's (dq in kg kg-1 s-1 is ~1e-4 of du in
        m s-2, so against du's every dq looked constant). Default: one block."""
        self.blocks = list(blocks) if blocks is not None else [slice(0, n)]
        self.count = 0
        self.sse = np.zeros(n)
        self.sum = np.zeros(n)
        self.sumsq = np.zeros(n)

    def update(self, y: np.ndarray, pred: np.ndarray) -> None:
        y = y.astype(np.float64)
        self.count += y.shape[0]
        self.sse += ((pred.astype(np.float64) - y) ** 2).sum(axis=0)
        self.sum += y.sum(axis=0)
        self.sumsq += (y**2).sum(axis=0)

    @property
    def sst(self) -> np.ndarray:
        return self.sumsq - self.sum**2 / max(self.count, 1)

    def has_variance(self) -> np.ndarray:
        """Targets whose test values vary (a target that is ~0 everywhere, e.g. a physics tendency
        aloft where the physics does nothing to the wind, has no meaningful R^2)."""
        sst = self.sst
        ok = np.zeros(sst.shape, bool)
        for sl in self.blocks:
            ok[sl] = sst[sl] > 1e-6 * max(float(sst[sl].max()), 1e-300)
        return ok

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        mse = self.sse / max(self.count, 1)
        ok = self.has_variance()
        r2 = np.where(ok, 1.0 - self.sse / np.where(ok, self.sst, 1.0), np.nan)
        return mse, r2


def overall_r2(acc: MetricAccumulator, sl: slice) -> float:
    """R^2 of a whole block (variable), over its targets that vary."""
    ok = acc.has_variance()[sl]
    if not ok.any():
        return float("nan")
    return float(1.0 - acc.sse[sl][ok].sum() / acc.sst[sl][ok].sum())


def evaluate(model_dir: str | os.PathLike[str], store: str | os.PathLike[str], split: str = "test", rows_per_batch: int = 65536, *, columns: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Scores of the exported model in ``model_dir`` on ``split``; ``columns`` (the column table) is
    needed, and used, by field models only."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    check_manifest_matches_store(manifest, store, str(model_dir / "model.json"))
    module = torch.jit.load(str(model_dir / manifest.artifacts["torchscript"]), map_location="cpu").eval()
    starts = np.cumsum([0] + [b.levels for b in manifest.targets])
    acc = MetricAccumulator(manifest.n_targets, [slice(a, b) for a, b in zip(starts[:-1], starts[1:])])
    kind = MODEL_KINDS.get(manifest.kind)
    if kind is None:
        raise ManifestError(f"{model_dir / 'model.json'}: key 'kind' is {manifest.kind!r}, not a model kind of this package ({', '.join(MODEL_KINDS)})")
    if kind.reads_fields:
        if columns is None:
            raise InputError(f"{model_dir / 'model.json'}: a {kind.name!r} model is evaluated on whole fields; give the column table")
        _accumulate_fields(module, store, columns, split, acc)
    else:
        arrays = SplitArrays(store, split)
        if arrays.n_rows == 0:
            raise InputError(f"{store}: split {split!r} is empty")
        with torch.no_grad():
            for s in range(0, arrays.n_rows, rows_per_batch):
                x, y = arrays.read(Segment(s, min(arrays.n_rows, s + rows_per_batch)))
                acc.update(y, module(torch.from_numpy(x)).numpy())
    mse, r2 = acc.result()
    per_var: dict[str, Any] = {}
    col = 0
    for block in manifest.targets:
        sl = slice(col, col + block.levels)
        per_var[block.name] = {
            "levels_pa": list(manifest.levels.values) if block.levels > 1 else None,
            "mse": [float(v) for v in mse[sl]],
            "r2": [float(v) for v in r2[sl]],
            "r2_overall": overall_r2(acc, sl),
        }
        col += block.levels
    return {"model": manifest.name, "kind": manifest.kind, "split": split, "n_samples": int(acc.count), "targets": per_var}


def _accumulate_fields(module: Any, store: str | os.PathLike[str], columns: str | os.PathLike[str], split: str, acc: MetricAccumulator) -> None:
    """Feed the split's fields one at a time; score the finite samples (those the store holds)."""
    from nudgeml.models.cnn import FieldTable, finite_columns

    table = FieldTable(columns, store)
    try:
        idx = table.fields(split)
        if idx.size == 0:
            raise InputError(f"{store}: split {split!r} is empty")
        with torch.no_grad():
            for i in idx:
                x, y = table.read([i])
                ok = finite_columns(x, y)[0]
                pred = module(torch.from_numpy(x[0])).numpy()
                acc.update(y[0][ok], pred[ok])
    finally:
        table.close()


def write_evaluation(result: Mapping[str, Any], out_json: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_text_atomic(out_json, json.dumps(result, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(4.5, 4.0), constrained_layout=True)
    for name, res in result["targets"].items():
        levels = np.asarray(res["levels_pa"]) / 100.0
        ax.plot(res["r2"], levels, marker="o", label=f"{name} (overall {res['r2_overall']:.2f})")
    ax.axvline(0.0, color="0.6", lw=0.8)
    ax.set_ylim(1050, 0)
    ax.set_xlabel("R$^2$ on the test split")
    ax.set_ylabel("level (hPa, presnivs)")
    ax.set_title(f"{result['model']}: offline skill by level")
    ax.legend(loc="best", fontsize=8)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def format_r2(result: Mapping[str, Any]) -> str:
    lines = [f"offline R^2 of {result['model']} on the {result['split']} split ({result['n_samples']} samples)", "level (hPa) " + " ".join(f"{n:>8}" for n in result["targets"])]
    first = next(iter(result["targets"].values()))
    for k, p in enumerate(first["levels_pa"]):
        lines.append(f"{p / 100:10.0f}  " + " ".join(f"{res['r2'][k]:8.3f}" for res in result["targets"].values()))
    lines.append("overall     " + " ".join(f"{res['r2_overall']:8.3f}" for res in result["targets"].values()))
    return "\n".join(lines)
