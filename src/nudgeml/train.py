"""Train stage: one model of the ``models`` section, by the kind its section names.

The kinds and their trainers are the registry :data:`nudgeml.models.registry.MODEL_KINDS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nudgeml.models.registry import model_kind


def train_model(store: str | os.PathLike[str], out_dir: str | os.PathLike[str], name: str, section: Mapping[str, Any], *, columns: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Train model ``name`` described by ``section`` (its ``kind`` selects the trainer).

    Column models read the shuffled store; a field kind (the ``cnn``) reads whole fields from the
    column table ``columns`` (with the store's split and statistics).
    """
    return model_kind(section.get("kind"), f"models.{name}.kind").train(store, out_dir, section, name=name, columns=columns)
