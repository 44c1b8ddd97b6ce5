"""XGBoost ensembles compiled to C (treelite + tl2cgen): the online path of the ``xgboost`` kind.

Why. The TorchScript walker of :mod:`nudgeml.models.xgb` (``TreeEnsemble``: every tree advances one
level per step with tensor gathers) costs 3-5x the booster's own prediction and ~100x the MLP call;
``benchmarks/tree_call.py`` records the sweep. treelite reads the booster and tl2cgen emits one C
function per ensemble (the trees as nested ``if``s) that the system ``gcc`` compiles to a shared
library; that library is called from Python through tl2cgen's predictor here, and has a plain C ABI.
hummingbird-ml 0.4.12 (the tensor-program alternative) cannot read this booster: it parses XGBoost's
``base_score`` as one float, and XGBoost 3 writes one per target (``one_output_per_tree``).

What the library computes. The raw sum of leaves per output (mode) of the booster, with the
intercept left out: tl2cgen 1.0.0 (built on treelite 4.1) applies the first target's
``base_score`` to every target of a multi-target booster, so the compiled model is built with a zero
``base_score`` and the intercept is added here. The sidecar ``model_trees.json`` holds what maps
those raw sums to physical targets, the same arithmetic as ``TreeEnsemble``:
``y = ((raw + intercept) @ modes) * target_std + target_mean``. Inputs are the manifest's features in
physical units (trees need no input normalisation); the guard stays the caller's, as for every kind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

import numpy as np

from nudgeml.atomic import synced_atomic_path
from nudgeml.errors import InputError

TREE_BACKEND: Final = "tl2cgen"  # the manifest's ``tree_backend`` for a compiled ensemble
LIBRARY_NAME: Final = "model_trees.so"
OUTPUT_NAME: Final = "model_trees.json"
OUTPUT_FORMAT: Final = "nudgeml-trees"


def zero_intercept_json(booster: Any) -> str:
    """The booster's JSON with ``base_score`` set to zero for every target (see the module note)."""
    model = json.loads(bytes(booster.save_raw("json")))
    param = model["learner"]["learner_model_param"]
    raw = param["base_score"]
    param["base_score"] = "[" + ",".join("0.0" for _ in json.loads(raw)) + "]" if raw.startswith("[") else "0.0"
    return json.dumps(model)


def compile_trees(booster: Any, path: str | os.PathLike[str], *, threads: int = 1) -> Path:
    """Compile ``booster`` to the shared library ``path`` with the system gcc (atomic: a failed or
    interrupted build leaves no library under ``path``). ``threads`` compile units build in parallel."""
    import tl2cgen
    import treelite

    path = Path(path)
    model = treelite.frontend.from_xgboost_json(zero_intercept_json(booster))
    # parallel_comp splits the trees over that many C files: gcc's time grows faster than linearly
    # with a function's size, so even one thread compiles several small files faster than one big one
    units = max(2, 2 * int(threads))
    with synced_atomic_path(path, suffix=".so") as tmp:
        tl2cgen.export_lib(model, toolchain="gcc", libpath=str(tmp), params={"parallel_comp": units}, nthread=max(1, int(threads)))
    return path


def write_tree_output(path: str | os.PathLike[str], *, n_features: int, intercept: np.ndarray, modes: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray) -> Path:
    """Write the sidecar that maps the library's raw sums to physical targets (atomic)."""
    path = Path(path)
    intercept, modes = np.asarray(intercept, np.float64), np.asarray(modes, np.float64)
    k, t = modes.shape
    if intercept.shape != (k,) or np.shape(target_mean) != (t,) or np.shape(target_std) != (t,):
        raise ValueError(f"tree output: intercept {intercept.shape}, modes {modes.shape}, mean {np.shape(target_mean)}, std {np.shape(target_std)} disagree")
    doc = {
        "format": OUTPUT_FORMAT,
        "n_features": int(n_features),
        "n_outputs": int(k),
        "n_targets": int(t),
        "formula": "y = ((raw + intercept) @ modes) * target_std + target_mean",
        "intercept": intercept.tolist(),
        "modes": modes.tolist(),
        "target_mean": np.asarray(target_mean, np.float64).tolist(),
        "target_std": np.asarray(target_std, np.float64).tolist(),
    }
    with synced_atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, allow_nan=False) + "\n", encoding="utf-8")
    return path


class CompiledTrees:
    """A compiled ensemble plus its output map: ``(n, n_features)`` float32 physical -> ``(n, n_targets)``.

    Called with a numpy array it returns one; with a torch tensor, a tensor (so it stands in for a
    TorchScript module in the free run's shape check and call).
    """

    def __init__(self, library: str | os.PathLike[str], output: str | os.PathLike[str], *, threads: int = 1) -> None:
        import tl2cgen

        output = Path(output)
        try:
            doc = json.loads(output.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{output}: cannot read the tree output map ({exc})") from None
        if doc.get("format") != OUTPUT_FORMAT:
            raise InputError(f"{output}: key 'format' is {doc.get('format')!r}, expected {OUTPUT_FORMAT!r}")
        self.n_features = int(doc["n_features"])
        self.n_outputs = int(doc["n_outputs"])
        self.n_targets = int(doc["n_targets"])
        std = np.asarray(doc["target_std"], np.float64)
        modes = np.asarray(doc["modes"], np.float64)
        if modes.shape != (self.n_outputs, self.n_targets):
            raise InputError(f"{output}: key 'modes' is {modes.shape}, expected ({self.n_outputs}, {self.n_targets})")
        # folded into one affine map, computed in float64 once: y = raw @ weight + bias
        self.weight = (modes * std).astype(np.float32)
        self.bias = ((np.asarray(doc["intercept"], np.float64) @ modes) * std + np.asarray(doc["target_mean"], np.float64)).astype(np.float32)
        self.library = Path(library)
        if not self.library.is_file():
            raise InputError(f"{self.library}: compiled tree library not found")
        self.predictor = tl2cgen.Predictor(str(self.library), nthread=max(1, int(threads)))
        if self.predictor.num_feature != self.n_features:
            raise InputError(f"{self.library}: reads {self.predictor.num_feature} features, {output} says {self.n_features}")

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The library's raw sums ``(n, n_outputs)`` (intercept not included)."""
        import tl2cgen

        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"{self.library}: expects (n, {self.n_features}) features, got {x.shape}")
        return self.predictor.predict(tl2cgen.DMatrix(x, dtype="float32")).reshape(x.shape[0], self.n_outputs)

    def __call__(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return self.raw(x) @ self.weight + self.bias
        import torch

        return torch.from_numpy(self.raw(x.detach().cpu().numpy()) @ self.weight + self.bias)


def load_compiled_trees(model_dir: str | os.PathLike[str], artifacts: dict[str, str], *, threads: int = 1) -> CompiledTrees:
    """The compiled ensemble of an exported model directory (``artifacts`` from its manifest)."""
    model_dir = Path(model_dir)
    return CompiledTrees(model_dir / artifacts["trees"], model_dir / artifacts["trees_output"], threads=threads)
