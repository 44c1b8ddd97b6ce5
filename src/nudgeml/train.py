"""Train stage: one model of the ``models`` section, by kind (``mlp``, ``xgboost`` or ``cnn``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nudgeml.errors import ConfigError

KINDS = ("mlp", "xgboost", "cnn")


def train_model(store: str | os.PathLike[str], out_dir: str | os.PathLike[str], name: str, section: Mapping[str, Any], *, columns: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Train model ``name`` described by ``section`` (its ``kind`` selects the trainer).

    Column models read the shuffled store; the ``cnn`` reads whole fields from the column table
    ``columns`` (with the store's split and statistics).
    """
    kind = section.get("kind")
    if kind == "mlp":
        from nudgeml.models.mlp import MLPConfig, train_mlp

        return train_mlp(store, out_dir, MLPConfig.from_config(section))
    if kind == "xgboost":
        from nudgeml.models.xgb import XGBConfig, train_xgb

        return train_xgb(store, out_dir, XGBConfig.from_config(section))
    if kind == "cnn":
        from nudgeml.models.cnn import CNNConfig, train_cnn

        if columns is None:
            raise ConfigError(f"model {name!r} (kind 'cnn') needs the column table (whole fields), none was given")
        return train_cnn(store, columns, out_dir, CNNConfig.from_config(section))
    raise ConfigError(f"config key 'models.{name}.kind' is {kind!r}; use one of {KINDS}")
