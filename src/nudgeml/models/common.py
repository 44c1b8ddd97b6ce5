"""What every model kind shares: the trained-model file and checkpoint bookkeeping."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"


#: Keys of a ``models.<name>`` section that the workflow reads (model kind, training target, number of
#: training iterations, online training: ``nudgeml.online``), not the model: every model's ``from_config``
#: ignores them.
WORKFLOW_KEYS = frozenset({"kind", "target", "iterations", "online"})


def settings_of(cls: type, section: Mapping[str, Any], label: str, *, sequences: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword arguments of the settings dataclass ``cls`` from a ``models.<name>`` section.

    Unknown keys fail with their names; list-valued settings named in ``sequences`` become tuples (the
    dataclasses are frozen and hashable)."""
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    extra = set(section) - known - WORKFLOW_KEYS
    if extra:
        raise KeyError(f"unknown {label} setting(s) {sorted(extra)}")
    return {k: (tuple(v) if k in sequences and v is not None else v) for k, v in section.items() if k in known}


def resume_point(ckpt_dir: Path, last: Path) -> str | None:
    """``last`` if a previous run was interrupted; a completed run's checkpoints are cleared instead.

    A run that finished leaves ``COMPLETE`` in its checkpoint folder: asking for the model again
    (``snakemake --forcerun train``) retrains from scratch, while a run cut short (a SLURM time limit,
    a crash) continues from its last checkpoint when it is started again.
    """
    if (ckpt_dir / COMPLETE).exists():
        shutil.rmtree(ckpt_dir)
        return None
    if last.exists():
        log.info("resuming the interrupted run from %s", last)
        return str(last)
    return None


def mark_complete(ckpt_dir: Path) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ckpt_dir / COMPLETE).write_text("training finished; the next run starts afresh\n")


def save_trained(path: Path, kind: str, module: nn.Module, summary: Mapping[str, Any]) -> None:
    """The trained model as a physical-units module (pickled whole) plus its summary, atomically."""
    from nudgeml.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"kind": kind, "module": module, "summary": dict(summary)}, tmp)


def load_trained(path: str | os.PathLike[str]) -> dict[str, Any]:
    from nudgeml.errors import InputError

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: trained model not found")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, dict) or "module" not in obj or "kind" not in obj:
        raise InputError(f"{path}: not a nudgeml trained model (keys {sorted(obj) if isinstance(obj, dict) else type(obj).__name__})")
    return obj

