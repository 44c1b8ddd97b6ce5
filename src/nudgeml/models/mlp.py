"""Column MLP trained with PyTorch Lightning on the zarr training store.

The network maps standardised inputs to standardised targets; the loss is the (optionally per-target
weighted) MSE in that space. Normalisation statistics come from the store (training split only) and are
put inside the exported module (:class:`nudgeml.models.normalized.NormalizedModel`), so callers pass physical units.

One configuration trains on a laptop CPU and on Jean Zay GPUs: ``accelerator``/``devices``/``strategy``
go straight to ``lightning.Trainer``; ``precision: auto`` picks ``bf16-mixed`` on GPUs that support it and
``32-true`` elsewhere. Runs are seeded; a run interrupted or asked for more epochs resumes from
``checkpoints/last.ckpt`` instead of starting again.

``jacobian_penalty`` constrains the network's sensitivity to chosen inputs (``jacobian_inputs``, the
winds by default): the loss adds ``lambda * ||d output / d inputs||_F^2 / n_out`` in standardised units,
estimated each batch with one random probe (Hutchinson: E_v ||J^T v||^2 = ||J||_F^2). The probes found
that the clean nudging target *amplifies* local wind anomalies and that a network learning this feeds on
the model's own weather online; the penalty lets the correction depend on the state through T, q, ps
and geography while its response to the local wind stays small.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nudgeml.atomic import write_text_atomic
from nudgeml.data import ColumnBatches
from nudgeml.models.common import mark_complete, resume_point, save_trained, settings_of
from nudgeml.models.normalized import NormalizedModel
from nudgeml.shard import load_stats, open_store

log = logging.getLogger(__name__)

KIND = "mlp"  # this module's name in the registry (nudgeml.models.registry) and in trained.pt

ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class MLPConfig:
    hidden: Sequence[int] = (256, 256, 256)
    activation: str = "silu"
    dropout: float = 0.0
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 1024
    max_epochs: int = 20
    patience: int = 4
    target_weights: Sequence[float] | None = None  # one per target (e.g. per level); None = equal
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "auto"
    num_workers: int = 0
    buffer_chunks: int = 4
    limit_train_batches: float | int = 1.0
    jacobian_penalty: float = 0.0
    jacobian_inputs: Sequence[str] = ("u", "v")  # feature blocks whose sensitivity is penalised

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; use one of {sorted(ACTIVATIONS)}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "MLPConfig":
        return cls(**settings_of(cls, section, "MLP", sequences=("hidden", "jacobian_inputs", "target_weights")))


def build_net(n_in: int, n_out: int, cfg: MLPConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = n_in
    for h in cfg.hidden:
        layers += [nn.Linear(d, h), ACTIVATIONS[cfg.activation]()]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        d = h
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


def _lightning() -> Any:
    import lightning as L

    return L


def penalised_inputs(feature_names: Sequence[str], blocks: Sequence[str]) -> np.ndarray:
    """Boolean mask of the features that belong to ``blocks`` (``u`` -> ``u_000``, ``u_001``, ...)."""
    mask = np.array([name.rsplit("_", 1)[0] in blocks if name[-3:].isdigit() else name in blocks for name in feature_names])
    missing = [b for b in blocks if not any(n == b or n.startswith(f"{b}_") for n in feature_names)]
    if missing:
        raise KeyError(f"jacobian_inputs {missing} are not among the store's features ({sorted({n.rsplit('_', 1)[0] for n in feature_names})})")
    return mask


def make_module(n_in: int, n_out: int, stats: Mapping[str, np.ndarray], cfg: MLPConfig, penalised: np.ndarray | None = None) -> Any:
    """The LightningModule: a net in standardised space, the statistics as buffers."""
    L = _lightning()

    class ColumnMLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"n_in": n_in, "n_out": n_out, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}})
            self.net = build_net(n_in, n_out, cfg)
            f32 = torch.float32
            x_std = torch.as_tensor(stats["input_std"], dtype=f32)
            y_std = torch.as_tensor(stats["target_std"], dtype=f32)
            self.register_buffer("x_mean", torch.as_tensor(stats["input_mean"], dtype=f32))
            self.register_buffer("x_std", torch.where(x_std > 0, x_std, torch.ones_like(x_std)))
            self.register_buffer("y_mean", torch.as_tensor(stats["target_mean"], dtype=f32))
            self.register_buffer("y_std", torch.where(y_std > 0, y_std, torch.ones_like(y_std)))
            w = torch.ones(n_out) if cfg.target_weights is None else torch.as_tensor(cfg.target_weights, dtype=f32)
            if w.shape != (n_out,):
                raise ValueError(f"target_weights has {w.numel()} values, the store has {n_out} targets")
            self.register_buffer("w", w / w.mean())
            mask = torch.zeros(n_in) if penalised is None else torch.as_tensor(penalised, dtype=f32)
            self.register_buffer("penalised", mask)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # standardised in, standardised out
            return self.net(x)

        def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            x, y = batch
            z = (x - self.x_mean) / self.x_std
            t = (y - self.y_mean) / self.y_std
            return ((self(z) - t) ** 2 * self.w).mean()

        def _jacobian(self, x: torch.Tensor) -> torch.Tensor:
            """One-probe estimate of ||J_penalised||_F^2 / n_out (standardised units)."""
            z = ((x - self.x_mean) / self.x_std).requires_grad_(True)
            out = self(z)
            probe = torch.randn_like(out)
            (g,) = torch.autograd.grad(out, z, grad_outputs=probe, create_graph=True)
            return ((g * self.penalised) ** 2).sum(dim=1).mean() / out.shape[1]

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self._loss(batch)
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch[0].shape[0], sync_dist=True)
            if cfg.jacobian_penalty > 0:
                jac = self._jacobian(batch[0])
                self.log("train_jacobian", jac, on_step=False, on_epoch=True, batch_size=batch[0].shape[0], sync_dist=True)
                loss = loss + cfg.jacobian_penalty * jac
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", self._loss(batch), on_step=False, on_epoch=True, prog_bar=True, batch_size=batch[0].shape[0], sync_dist=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

        def physical_module(self) -> NormalizedModel:
            """The net wrapped with its normalisation: physical units in and out (what is exported)."""
            net = build_net(n_in, n_out, cfg)
            net.load_state_dict(self.net.state_dict())
            return NormalizedModel(net.eval(), self.x_mean.cpu(), self.x_std.cpu(), self.y_mean.cpu(), self.y_std.cpu())

    return ColumnMLP()


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def train_mlp(store: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: MLPConfig) -> dict[str, Any]:
    """Train (or resume) the MLP; write ``trained.pt`` and ``train_summary.json`` to ``out_dir``."""
    L = _lightning()
    from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = open_store(store)
    stats = load_stats(root)
    n_in, n_out = int(root["train"]["inputs"].shape[1]), int(root["train"]["targets"].shape[1])
    L.seed_everything(cfg.seed, workers=True)
    penalised = penalised_inputs(list(root.attrs["feature_names"]), cfg.jacobian_inputs) if cfg.jacobian_penalty > 0 else None
    module = make_module(n_in, n_out, stats, cfg, penalised)
    train_ds = ColumnBatches(store, "train", cfg.batch_size, shuffle=True, seed=cfg.seed, buffer_chunks=cfg.buffer_chunks)
    has_val = "val" in root and root["val"]["inputs"].shape[0] > 0
    val_ds = ColumnBatches(store, "val", cfg.batch_size, shuffle=False) if has_val else None
    loader = lambda ds: torch.utils.data.DataLoader(ds, batch_size=None, num_workers=cfg.num_workers, persistent_workers=False)  # noqa: E731

    class EpochOrder(Callback):
        """New chunk order every epoch (workers are re-created per epoch, so they see the new epoch)."""

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            train_ds.set_epoch(trainer.current_epoch)

    last = out / "checkpoints" / "last.ckpt"
    resume = resume_point(out / "checkpoints", last)
    # a fresh run starts its metrics log anew; a resumed one appends a new version (logs/version_N)
    if resume is None:
        shutil.rmtree(out / "logs", ignore_errors=True)
    log_version = len(list((out / "logs").glob("version_*"))) if (out / "logs").exists() else 0
    monitor = "val_loss" if has_val else "train_loss"
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=monitor, mode="min", save_top_k=1, save_last=True)
    callbacks = [EpochOrder(), ckpt, EarlyStopping(monitor=monitor, patience=cfg.patience, mode="min")]
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=resolve_precision(cfg.precision),
        callbacks=callbacks,
        logger=CSVLogger(save_dir=str(out), name="logs", version=log_version),
        deterministic=True,
        enable_progress_bar=True,
        limit_train_batches=cfg.limit_train_batches,
        log_every_n_steps=50,
        default_root_dir=str(out),
    )
    trainer.fit(module, train_dataloaders=loader(train_ds), val_dataloaders=loader(val_ds) if val_ds is not None else None, ckpt_path=resume)
    best_path = ckpt.best_model_path or str(last)
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    module.load_state_dict(best["state_dict"])
    physical = module.physical_module()
    summary = {
        "kind": KIND,
        "epochs_run": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        # relative to the model's folder: the summary stays true when the results folder moves
        "best_checkpoint": os.path.relpath(best_path, out),
        "best_score": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
        "monitor": monitor,
        "resumed_from": os.path.relpath(resume, out) if resume else None,
        "n_features": n_in,
        "n_targets": n_out,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    save_trained(out / "trained.pt", KIND, physical, summary)
    write_text_atomic(out / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    mark_complete(out / "checkpoints")
    return summary


def read_metrics(out_dir: str | os.PathLike[str]) -> Any:
    """The CSV metrics of a training run, every resumed part in order (a pandas DataFrame)."""
    import pandas as pd

    parts = sorted(Path(out_dir, "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not parts:
        return pd.DataFrame()
    return pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
