"""Spatial model: a small CNN on the model's lat-lon grid, trained on whole fields of the column table.

Why this design:

* **Spatial context.** Column models learn mostly regression to the mean and failed online
  (``docs/science.md``); the closest published success (Chapman & Berner 2025) used a CNN on the grid, which
  sees the synoptic pattern around a column. Channels are the column model's features, in the same
  order; output channels are du, dv on every level.
* **Same contract as a column model.** The exported module takes ``(ncol, n_features)`` in physical
  units for the *whole* grid (columns in the extract's order: latitude-major, ``ncol = nlat * nlon``),
  reshapes to ``(1, C, nlat, nlon)`` internally and returns ``(ncol, n_targets)``; normalisation lives
  inside. The free run (``nudgeml.coupled.MLCorrector``) and the Fortran bridge already call the model
  once per window on all columns, so they run it unchanged. An input with another ``ncol`` is refused:
  a field cannot be rebuilt from a subset of columns. The manifest's ``grid`` records ``nlat, nlon``.
* **Padding follows the sphere's topology**: circular in longitude (the date line is not an edge),
  replicate at the poles (no neighbour beyond). A stack of ``depth`` 3x3 convolutions sees
  ``depth * (kernel_size // 2)`` cells each way (the halo an MPI-decomposed caller must supply,
  ``docs/coupling.md``).
* **Data**: the zarr store is shuffled by column, useless for fields; fields are read one time step at
  a time from the extract's ``columns.nc`` (one record per time step, so memory holds one batch), with
  the store's time split (its recorded ``start``/``end`` per split, hence the same dates and gap) and the
  store's training-split normalisation statistics, so offline scores compare with the column models'.
  Non-finite samples (the store drops them) are masked out of the loss and the scores.
* **Training** is a plain PyTorch loop (AdamW, early stopping on the validation loss, best weights kept):
  a few minutes on 2 cores for T21, no checkpoints to resume.
"""

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nudgeml.atomic import write_text_atomic
from nudgeml.errors import InputError
from nudgeml.models.common import save_trained, settings_of
from nudgeml.shard import load_stats, open_store
from nudgeml.split import in_blocks, recorded_blocks

log = logging.getLogger(__name__)

KIND = "cnn"  # this module's name in the registry (nudgeml.models.registry) and in trained.pt

ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class CNNConfig:
    channels: int = 32  # hidden channels of every convolution
    depth: int = 3  # number of kernel_size x kernel_size convolutions (then one 1x1 to the targets)
    kernel_size: int = 3
    activation: str = "silu"
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 8  # fields per step
    max_epochs: int = 10
    patience: int = 3
    max_fields_per_epoch: int | None = None  # a random subset of the training fields per epoch
    target_weights: Sequence[float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; use one of {sorted(ACTIVATIONS)}")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (centred on the column), got {self.kernel_size}")

    @property
    def halo(self) -> int:
        """Receptive field radius in grid cells (each way)."""
        return self.depth * (self.kernel_size // 2)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "CNNConfig":
        return cls(**settings_of(cls, section, "CNN", sequences=("target_weights",)))


class SphereConv(nn.Module):
    """A convolution padded circularly in longitude and by replication at the poles (``(B, C, lat, lon)``)."""

    pad: Final[int]

    def __init__(self, n_in: int, n_out: int, kernel_size: int) -> None:
        super().__init__()
        self.pad = kernel_size // 2
        self.conv = nn.Conv2d(n_in, n_out, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad > 0:
            x = F.pad(x, (self.pad, self.pad, 0, 0), mode="circular")
            x = F.pad(x, (0, 0, self.pad, self.pad), mode="replicate")
        return self.conv(x)


def build_net(n_in: int, n_out: int, cfg: CNNConfig) -> nn.Sequential:
    """Standardised fields ``(B, n_in, lat, lon)`` -> standardised targets ``(B, n_out, lat, lon)``."""
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(cfg.depth):
        layers += [SphereConv(d, cfg.channels, cfg.kernel_size), ACTIVATIONS[cfg.activation]()]
        d = cfg.channels
    layers.append(nn.Conv2d(d, n_out, 1))
    return nn.Sequential(*layers)


class FieldModel(nn.Module):
    """``net`` on the whole grid, with the normalisation: physical ``(ncol, n_features)`` -> ``(ncol, n_targets)``.

    Columns are latitude-major (``column = i_lat * nlon + i_lon``, the extract's order). ``grid_shape``
    tells the exporter that the batch is the grid, not a free dimension.
    """

    nlat: Final[int]
    nlon: Final[int]

    def __init__(self, net: nn.Module, grid_shape: tuple[int, int], x_mean: Any, x_std: Any, y_mean: Any, y_std: Any) -> None:
        super().__init__()
        self.net = net
        self.nlat, self.nlon = int(grid_shape[0]), int(grid_shape[1])
        f32 = torch.float32
        x_std = torch.as_tensor(x_std, dtype=f32)
        y_std = torch.as_tensor(y_std, dtype=f32)
        self.register_buffer("x_mean", torch.as_tensor(x_mean, dtype=f32).clone())
        self.register_buffer("x_std", torch.where(torch.isfinite(x_std) & (x_std > 0), x_std, torch.ones_like(x_std)).clone())
        self.register_buffer("y_mean", torch.as_tensor(y_mean, dtype=f32).clone())
        self.register_buffer("y_std", torch.where(torch.isfinite(y_std) & (y_std > 0), y_std, torch.ones_like(y_std)).clone())

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.nlat, self.nlon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ncol = self.nlat * self.nlon
        if x.dim() != 2 or x.shape[0] != ncol:
            raise ValueError("cnn model: input must be the whole " + str(self.nlat) + "x" + str(self.nlon)
                             + " grid, (" + str(ncol) + ", n_features) columns; got " + str(x.shape))
        z = ((x - self.x_mean) / self.x_std).t().reshape(1, x.shape[1], self.nlat, self.nlon)
        y = self.net(z).reshape(self.y_mean.shape[0], ncol).t()
        return y * self.y_std + self.y_mean


# --------------------------------------------------------------------------------------------
# Fields from the column table
# --------------------------------------------------------------------------------------------


class FieldTable:
    """Whole fields of one column table (``columns.nc``), split like the training store.

    ``fields(split)`` are the time indices of a split: those inside the time blocks the store records
    for it (one block for a dates or fractions split, one per cycle for an interleaved one).
    ``read(idx)`` returns ``x (n, ncol, n_features)``, ``y (n, ncol, n_targets)`` for those times,
    one record at a time (each time step is one NetCDF record).
    """

    def __init__(self, columns: str | os.PathLike[str], store: str | os.PathLike[str]) -> None:
        import netCDF4

        self.path = Path(columns)
        if not self.path.exists():
            raise InputError(f"{self.path}: column table not found")
        attrs = open_store(store).attrs
        self.store = Path(store)
        self.nc = netCDF4.Dataset(self.path, "r")
        self.nc.set_auto_mask(False)
        for name in ("inputs", "targets", "time", "feature", "target"):
            if name not in self.nc.variables:
                raise InputError(f"{self.path}: column table has no {name!r}")
        if "grid_shape" not in self.nc.ncattrs():
            raise InputError(f"{self.path}: no attribute 'grid_shape' (nlat, nlon); re-run the extract")
        self.grid_shape = tuple(int(v) for v in json.loads(self.nc.getncattr("grid_shape")))
        if len(self.grid_shape) != 2:
            raise InputError(f"{self.path}: attribute 'grid_shape' is {self.grid_shape}, expected [nlat, nlon]")
        features = [str(v) for v in self.nc["feature"][:]]
        targets = [str(v) for v in self.nc["target"][:]]
        if features != list(attrs["feature_names"]) or targets != list(attrs["target_names"]):
            raise InputError(f"{self.path}: features/targets differ from those of the store {store}")
        if list(self.grid_shape) != list(attrs.get("grid_shape") or []):
            raise InputError(f"{self.path}: grid {list(self.grid_shape)} differs from the store's {attrs.get('grid_shape')} ({store})")
        self.n_features, self.n_targets = len(features), len(targets)
        tv = self.nc["time"]
        self.times = np.asarray(netCDF4.num2date(tv[:], tv.units, getattr(tv, "calendar", "standard"), only_use_cftime_datetimes=False), dtype="datetime64[s]")
        self.splits = attrs["splits"]

    def fields(self, split: str) -> np.ndarray:
        if split not in self.splits:
            raise InputError(f"{self.store}: no split {split!r} (has {sorted(self.splits)})")
        s = self.splits[split]
        if not s["n_times"]:
            return np.zeros(0, dtype=np.int64)
        # the blocks, not start..end: an interleaved split's span holds the other splits' blocks too
        sel = np.flatnonzero(in_blocks(self.times, recorded_blocks(s)))
        if sel.size != s["n_times"]:
            raise InputError(f"{self.path}: split {split!r} has {sel.size} times here, {s['n_times']} in the store {self.store} (a different extract?)")
        return sel

    def read(self, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([np.asarray(self.nc["inputs"][int(i)], np.float32) for i in idx])
        y = np.stack([np.asarray(self.nc["targets"][int(i)], np.float32) for i in idx])
        return x, y

    def close(self) -> None:
        self.nc.close()


def batches(table: FieldTable, idx: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for s in range(0, idx.size, batch_size):
        yield table.read(idx[s:s + batch_size])


def finite_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(n, ncol)`` True where a sample is finite (the store keeps exactly these)."""
    return np.isfinite(x).all(axis=-1) & np.isfinite(y).all(axis=-1)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


class _Trainer:
    """Loss in standardised space on ``(B, ncol, F)`` batches, non-finite samples masked out."""

    def __init__(self, net: nn.Module, stats: Mapping[str, np.ndarray], grid_shape: tuple[int, int], w: torch.Tensor) -> None:
        self.net = net
        self.grid_shape = grid_shape
        f32 = torch.float32
        self.x_mean = torch.as_tensor(stats["input_mean"], dtype=f32)
        x_std = torch.as_tensor(stats["input_std"], dtype=f32)
        self.x_std = torch.where(x_std > 0, x_std, torch.ones_like(x_std))
        self.y_mean = torch.as_tensor(stats["target_mean"], dtype=f32)
        y_std = torch.as_tensor(stats["target_std"], dtype=f32)
        self.y_std = torch.where(y_std > 0, y_std, torch.ones_like(y_std))
        self.w = w

    def loss(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, int]:
        """Mean weighted squared error over finite samples, and their count."""
        ok = torch.from_numpy(finite_columns(x, y))
        nlat, nlon = self.grid_shape
        z = torch.nan_to_num((torch.from_numpy(x) - self.x_mean) / self.x_std) * ok[..., None]
        t = torch.nan_to_num((torch.from_numpy(y) - self.y_mean) / self.y_std)
        b = z.shape[0]
        pred = self.net(z.permute(0, 2, 1).reshape(b, -1, nlat, nlon)).reshape(b, t.shape[-1], -1).permute(0, 2, 1)
        n = int(ok.sum())
        err = ((pred - t) ** 2 * self.w).mean(dim=-1) * ok
        return err.sum() / max(n, 1), n


def train_cnn(store: str | os.PathLike[str], columns: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: CNNConfig) -> dict[str, Any]:
    """Train the CNN on the fields of ``columns`` (split and statistics from ``store``); write ``trained.pt``
    and ``train_summary.json`` to ``out_dir``; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    stats = load_stats(open_store(store))
    table = FieldTable(columns, store)
    try:
        train_idx = table.fields("train")
        val_idx = table.fields("val") if "val" in table.splits else np.zeros(0, np.int64)
        if train_idx.size == 0:
            raise InputError(f"{store}: the training split is empty")
        nf, nt = table.n_features, table.n_targets
        w = torch.ones(nt) if cfg.target_weights is None else torch.as_tensor(cfg.target_weights, dtype=torch.float32)
        if w.shape != (nt,):
            raise ValueError(f"target_weights has {w.numel()} values, the store has {nt} targets")
        net = build_net(nf, nt, cfg)
        trainer = _Trainer(net, stats, table.grid_shape, w / w.mean())
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        monitor = "val_loss" if val_idx.size else "train_loss"
        best, best_state, stale, history = float("inf"), None, 0, []
        for epoch in range(cfg.max_epochs):
            t0 = time.perf_counter()
            order = rng.permutation(train_idx)[: cfg.max_fields_per_epoch]
            net.train()
            tot, n_tot = 0.0, 0
            for x, y in batches(table, order, cfg.batch_size):
                loss, n = trainer.loss(x, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot, n_tot = tot + loss.item() * n, n_tot + n
            row = {"epoch": epoch, "train_loss": tot / max(n_tot, 1)}
            if val_idx.size:
                net.eval()
                vt, vn = 0.0, 0
                with torch.no_grad():
                    for x, y in batches(table, val_idx, cfg.batch_size):
                        loss, n = trainer.loss(x, y)
                        vt, vn = vt + loss.item() * n, vn + n
                row["val_loss"] = vt / max(vn, 1)
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            log.info("epoch %d: %s", epoch, {k: round(v, 5) for k, v in row.items() if k != "epoch"})
            if row[monitor] < best:
                best, stale = row[monitor], 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        grid_shape = table.grid_shape
    finally:
        table.close()
    if best_state is None:
        raise RuntimeError(f"cnn training on {columns}: the {monitor} was never finite ({history[-1] if history else 'no epoch'})")
    net.load_state_dict(best_state)
    physical = FieldModel(net.eval(), grid_shape, stats["input_mean"], stats["input_std"], stats["target_mean"], stats["target_std"])
    summary = {
        "kind": KIND,
        "epochs_run": len(history),
        "best_score": best,
        "monitor": monitor,
        "history": history,
        "n_features": nf,
        "n_targets": nt,
        "grid_shape": list(grid_shape),
        "halo_cells": cfg.halo,
        "n_parameters": sum(p.numel() for p in net.parameters()),
        "training_fields": int(train_idx.size),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    save_trained(out / "trained.pt", KIND, physical, summary)
    write_text_atomic(out / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
