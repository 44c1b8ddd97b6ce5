"""The model kinds: one entry per value of ``models.<name>.kind`` in the configuration.

Everything the package and the workflow need to know about a kind is its entry here, so adding a
kind touches this file, the kind's module under ``nudgeml/models/`` and the configuration schema
(``docs/extending.md``; a unit test checks the schema against this registry):

* ``module``: the kind's module, imported only when the kind is used (torch and xgboost are heavy,
  and the Snakefile reads this registry to wire the rules);
* ``settings``: the frozen dataclass in that module that a ``models.<name>`` section builds
  (``from_config``; its fields are the section's keys besides the workflow's ``kind``, ``target``,
  ``iterations``);
* ``trainer``: the function in that module that trains and writes ``trained.pt``:
  ``trainer(store, out_dir, settings)``, or ``trainer(store, columns, out_dir, settings)`` for a
  field kind;
* ``reads_fields``: the kind maps whole lat-lon fields, not columns. It then trains and is
  evaluated on the column table's fields (with the store's split and statistics), the workflow
  gives its rules the column table, and it is exported for the whole grid (its module has a
  ``grid_shape``, :func:`nudgeml.export.export_trained`); a column kind trains on the store's
  shuffled columns and is exported with real columns as the example.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from nudgeml.errors import ConfigError


@dataclass(frozen=True)
class ModelKind:
    name: str
    module: str
    settings: str
    trainer: str
    reads_fields: bool = False

    def settings_class(self) -> type:
        return getattr(import_module(self.module), self.settings)

    def train(self, store: str | os.PathLike[str], out_dir: str | os.PathLike[str], section: Mapping[str, Any], *, name: str, columns: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """Train model ``name`` of this kind from its ``models.<name>`` section; returns the summary."""
        settings = self.settings_class().from_config(section)
        trainer = getattr(import_module(self.module), self.trainer)
        if not self.reads_fields:
            return trainer(store, out_dir, settings)
        if columns is None:
            raise ConfigError(f"model {name!r} (kind {self.name!r}) needs the column table (whole fields), none was given")
        return trainer(store, columns, out_dir, settings)


MODEL_KINDS: dict[str, ModelKind] = {
    k.name: k
    for k in (
        ModelKind("mlp", "nudgeml.models.mlp", settings="MLPConfig", trainer="train_mlp"),
        ModelKind("xgboost", "nudgeml.models.xgb", settings="XGBConfig", trainer="train_xgb"),
        ModelKind("cnn", "nudgeml.models.cnn", settings="CNNConfig", trainer="train_cnn", reads_fields=True),
    )
}


def model_kind(kind: Any, key: str) -> ModelKind:
    """The registry entry of ``kind``; an unknown kind is a :class:`ConfigError` naming ``key``."""
    if kind not in MODEL_KINDS:
        raise ConfigError(f"config key {key!r} is {kind!r}; use one of {tuple(MODEL_KINDS)}")
    return MODEL_KINDS[kind]
