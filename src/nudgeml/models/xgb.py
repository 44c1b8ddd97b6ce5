"""Gradient-boosted trees (XGBoost) for the column correction, and their conversion to a torch module.

Multi-output strategy. The targets are whole wind-tendency profiles (2 x 79 values for LMDZ) whose
levels are strongly correlated. The standardised targets are projected on their leading principal
components (``n_modes``, computed on the training split by a streamed covariance) and XGBoost fits one
tree per mode and round (``multi_strategy="one_output_per_tree"``, supported by the ``hist`` method on
CPU and CUDA alike). Compared with one tree per level this cuts the trees ~10x for LMDZ and keeps the
predicted profiles vertically coherent; compared with ``multi_output_tree`` (vector leaves) it stays on
XGBoost's mature code path. ``n_modes: 0`` keeps every target (no projection), the right choice when
there are few targets (the stand-in's 16).

Training is out of core: a ``DataIter`` streams the store into a ``QuantileDMatrix`` (features kept as
8-bit bin indices). ``device: auto`` trains on CUDA when a GPU is present. A run checkpoints its booster
every ``checkpoint_every`` rounds and resumes from the last checkpoint.

Export. :class:`TreeEnsemble` evaluates the trees with tensor gathers (every tree advances one level
per step, ``max_depth`` steps), then maps modes back to physical targets — so the free run and the
Fortran bridge load it exactly like the MLP (TorchScript / ``.pt2``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nudgeml.data import Segment, SplitArrays, make_xgb_iter
from nudgeml.models.common import mark_complete, resume_point, save_trained, settings_of
from nudgeml.shard import load_stats, open_store

log = logging.getLogger(__name__)

KIND = "xgboost"  # this module's name in the registry (nudgeml.models.registry) and in trained.pt


@dataclass(frozen=True)
class XGBConfig:
    n_estimators: int = 200
    max_depth: int = 6
    learning_rate: float = 0.1
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    max_bin: int = 256
    n_modes: int = 0
    early_stopping_rounds: int = 20
    checkpoint_every: int = 50
    rows_per_batch: int = 262144
    device: str = "auto"
    seed: int = 0
    n_jobs: int = 0

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "XGBConfig":
        return cls(**settings_of(cls, section, "XGBoost"))


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def target_modes(store: str | os.PathLike[str], stats: Mapping[str, np.ndarray], n_modes: int) -> np.ndarray:
    """``(K, T)`` orthonormal projection of standardised targets; identity when ``n_modes`` is 0."""
    n_targets = stats["target_mean"].size
    if n_modes <= 0 or n_modes >= n_targets:
        return np.eye(n_targets)
    arrays = SplitArrays(store, "train")
    cov = np.zeros((n_targets, n_targets))
    n = 0
    step = arrays.chunk_rows * 64
    for s in range(0, arrays.n_rows, step):
        _, y = arrays.read(Segment(s, min(arrays.n_rows, s + step)))
        z = (y - stats["target_mean"]) / stats["target_std"]
        cov += z.T.astype(np.float64) @ z
        n += z.shape[0]
    w, v = np.linalg.eigh(cov / max(n - 1, 1))
    order = np.argsort(w)[::-1][:n_modes]
    explained = float(w[order].sum() / w.sum())
    log.info("%d target modes explain %.1f %% of the standardised target variance", n_modes, 100 * explained)
    return v[:, order].T


def _iterator(store: str | os.PathLike[str], split: str, stats: Mapping[str, np.ndarray], modes: np.ndarray, rows_per_batch: int) -> Any:
    """The split's batches with the targets as standardised modes (XGBoost's labels)."""
    mean, std = stats["target_mean"], stats["target_std"]
    return make_xgb_iter(store, split, rows_per_batch, label=lambda y: (((y - mean) / std) @ modes.T).astype(np.float32))


def train_xgb(store: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: XGBConfig) -> dict[str, Any]:
    """Train (or resume) the booster; write ``trained.pt`` (the torch module) and a summary."""
    import xgboost as xgb

    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    resume_point(ckpt_dir, ckpt_dir / "none")  # clears a completed run's checkpoints
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    root = open_store(store)
    stats = load_stats(root)
    modes = target_modes(store, stats, cfg.n_modes)
    device = resolve_device(cfg.device)
    dtrain = xgb.QuantileDMatrix(_iterator(store, "train", stats, modes, cfg.rows_per_batch), max_bin=cfg.max_bin)
    evals = [(dtrain, "train")]
    if "val" in root and root["val"]["inputs"].shape[0] > 0:
        dval = xgb.QuantileDMatrix(_iterator(store, "val", stats, modes, cfg.rows_per_batch), ref=dtrain, max_bin=cfg.max_bin)
        evals.append((dval, "val"))
    params = {
        "tree_method": "hist",
        "device": device,
        "objective": "reg:squarederror",
        "multi_strategy": "one_output_per_tree",
        "max_depth": cfg.max_depth,
        "learning_rate": cfg.learning_rate,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "min_child_weight": cfg.min_child_weight,
        "reg_lambda": cfg.reg_lambda,
        "max_bin": cfg.max_bin,
        "seed": cfg.seed,
        "nthread": cfg.n_jobs or os.cpu_count(),
    }
    # the most recently written checkpoint is the most advanced one
    ckpts = sorted(ckpt_dir.glob("model_*.ubj"), key=lambda p: p.stat().st_mtime_ns)
    booster = None
    done = 0
    if ckpts:
        booster = xgb.Booster(model_file=str(ckpts[-1]))
        done = booster.num_boosted_rounds()
        log.info("resuming from %s (%d rounds done)", ckpts[-1], done)
    history: dict[str, Any] = {}
    remaining = max(0, cfg.n_estimators - done)
    if remaining:
        callbacks = [xgb.callback.TrainingCheckPoint(directory=str(out / "checkpoints"), name="model", as_pickle=False, interval=cfg.checkpoint_every)]
        if len(evals) > 1 and cfg.early_stopping_rounds > 0:
            callbacks.append(xgb.callback.EarlyStopping(rounds=cfg.early_stopping_rounds, data_name="val", save_best=True))
        booster = xgb.train(params, dtrain, num_boost_round=remaining, evals=evals, evals_result=history, xgb_model=booster, callbacks=callbacks, verbose_eval=25)
    assert booster is not None
    booster.save_model(str(out / "checkpoints" / f"model_{booster.num_boosted_rounds():06d}.ubj"))
    module = tree_module(booster, modes, stats)
    summary = {
        "kind": KIND,
        "rounds": int(booster.num_boosted_rounds()),
        "resumed_rounds": int(done),
        "device": device,
        "n_modes": int(modes.shape[0]),
        "n_features": int(stats["input_mean"].size),
        "n_targets": int(stats["target_mean"].size),
        "history": {k: {m: [float(v) for v in vals] for m, vals in d.items()} for k, d in history.items()},
        "config": asdict(cfg),
    }
    save_trained(out / "trained.pt", KIND, module, summary)
    (out / "booster.ubj").write_bytes(bytes(booster.save_raw("ubj")))
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    mark_complete(ckpt_dir)
    return summary


class TreeEnsemble(nn.Module):
    """Evaluate an XGBoost ensemble with tensor ops; physical units in, physical units out.

    Trees are padded to one node count ``N``; node ``i`` of tree ``t`` is flat index ``t * N + i``.
    A leaf points to itself, so ``depth`` steps of "go left if x < threshold (or missing and default
    left), else right" land every column on its leaf in every tree.
    """

    def __init__(self, feature: torch.Tensor, threshold: torch.Tensor, left: torch.Tensor, right: torch.Tensor, default_left: torch.Tensor, value: torch.Tensor, group_onehot: torch.Tensor, base: torch.Tensor, depth: int, modes: torch.Tensor, y_mean: torch.Tensor, y_std: torch.Tensor) -> None:
        super().__init__()
        self.n_trees = int(feature.shape[0])
        self.n_nodes = int(feature.shape[1])
        self.depth = int(depth)
        self.register_buffer("feature", feature.reshape(-1).long())
        self.register_buffer("threshold", threshold.reshape(-1).float())
        self.register_buffer("left", left.reshape(-1).long())
        self.register_buffer("right", right.reshape(-1).long())
        self.register_buffer("default_left", default_left.reshape(-1).bool())
        self.register_buffer("value", value.reshape(-1).float())
        self.register_buffer("group_onehot", group_onehot.float())  # (trees, modes)
        self.register_buffer("base", base.float())  # (modes,)
        self.register_buffer("modes", modes.float())  # (modes, targets)
        self.register_buffer("y_mean", y_mean.float())
        self.register_buffer("y_std", y_std.float())
        self.register_buffer("offset", (torch.arange(self.n_trees) * self.n_nodes).long())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        node = self.offset.unsqueeze(0).expand(n, self.n_trees)
        for _ in range(self.depth):
            f = self.feature[node]
            xv = torch.gather(x, 1, f)
            go_left = torch.where(torch.isnan(xv), self.default_left[node], xv < self.threshold[node])
            node = torch.where(go_left, self.left[node], self.right[node])
        z_modes = self.value[node] @ self.group_onehot + self.base
        return (z_modes @ self.modes) * self.y_std + self.y_mean


def tree_module(booster: Any, modes: np.ndarray, stats: Mapping[str, np.ndarray]) -> TreeEnsemble:
    """Convert a trained booster (one output per tree) to :class:`TreeEnsemble`."""
    model = json.loads(bytes(booster.save_raw("json")))
    learner = model["learner"]
    gb = learner["gradient_booster"]["model"]
    trees = gb["trees"]
    groups = np.asarray(gb["tree_info"], dtype=np.int64)
    n_modes = modes.shape[0]
    base_raw = learner["learner_model_param"]["base_score"]
    base = np.asarray(json.loads(base_raw) if base_raw.startswith("[") else [float(base_raw)] * n_modes, dtype=np.float64)
    if base.size == 1 and n_modes > 1:
        base = np.full(n_modes, base[0])
    n_nodes = max(len(t["left_children"]) for t in trees)
    T = len(trees)
    feature = np.zeros((T, n_nodes), np.int64)
    threshold = np.zeros((T, n_nodes), np.float32)
    left = np.zeros((T, n_nodes), np.int64)
    right = np.zeros((T, n_nodes), np.int64)
    default_left = np.zeros((T, n_nodes), bool)
    value = np.zeros((T, n_nodes), np.float32)
    depth = 0
    for ti, t in enumerate(trees):
        lc, rc = np.asarray(t["left_children"]), np.asarray(t["right_children"])
        k = lc.size
        leaf = lc == -1
        off = ti * n_nodes
        idx = np.arange(k)
        feature[ti, :k] = np.where(leaf, 0, t["split_indices"])
        threshold[ti, :k] = np.where(leaf, 0.0, t["split_conditions"])
        left[ti, :k] = off + np.where(leaf, idx, lc)
        right[ti, :k] = off + np.where(leaf, idx, rc)
        default_left[ti, :k] = np.asarray(t["default_left"], bool)
        value[ti, :k] = np.where(leaf, t["split_conditions"], 0.0)  # XGBoost stores leaf values there
        left[ti, k:] = right[ti, k:] = off + np.arange(k, n_nodes)  # padding: inert self-loops
        # depth of the tree: walk parents
        parents = np.asarray(t["parents"])
        d = np.zeros(k, np.int64)
        for i in range(1, k):
            d[i] = d[parents[i]] + 1
        depth = max(depth, int(d.max()) if k else 0)
    onehot = np.zeros((T, n_modes), np.float32)
    onehot[np.arange(T), groups] = 1.0
    return TreeEnsemble(
        torch.from_numpy(feature), torch.from_numpy(threshold), torch.from_numpy(left), torch.from_numpy(right),
        torch.from_numpy(default_left), torch.from_numpy(value), torch.from_numpy(onehot), torch.from_numpy(base.astype(np.float32)),
        depth, torch.from_numpy(modes.astype(np.float32)), torch.as_tensor(stats["target_mean"]), torch.as_tensor(stats["target_std"]),
    ).eval()


def booster_predict(booster: Any, x: np.ndarray, modes: np.ndarray, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """The booster's own prediction mapped to physical targets (the conversion's reference)."""
    import xgboost as xgb

    z_modes = booster.predict(xgb.DMatrix(x)).reshape(x.shape[0], -1)
    return (z_modes @ modes) * stats["target_std"] + stats["target_mean"]
