"""The registries of model kinds and targets agree with the configuration schema and the workflow."""

import re
from importlib import import_module
from pathlib import Path

import pytest
import yaml

from nudgeml.config import SCHEMA_PATH
from nudgeml.errors import ConfigError
from nudgeml.models.common import WORKFLOW_KEYS
from nudgeml.models.registry import MODEL_KINDS, model_kind
from nudgeml.targets import DEFAULT_TARGET, TARGETS, iteration_target, parse_iteration, target_of, target_pattern
from nudgeml.train import train_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def model_defs(schema: dict) -> dict[str, dict]:
    """kind -> the $defs entry the schema validates a section of that kind with (through allOf/if/then)."""
    section = schema["properties"]["models"]["additionalProperties"]
    out = {}
    for rule in section["allOf"]:
        kind = rule["if"]["properties"]["kind"]["const"]
        out[kind] = schema["$defs"][rule["then"]["$ref"].removeprefix("#/$defs/")]
    return out


def test_schema_kinds_are_the_registry(schema):
    section = schema["properties"]["models"]["additionalProperties"]
    assert section["properties"]["kind"]["enum"] == list(MODEL_KINDS)
    defs = model_defs(schema)
    assert list(defs) == list(MODEL_KINDS)
    for kind, d in defs.items():
        assert d["properties"]["kind"] == {"const": kind}


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_each_kind_settings_match_its_schema_section(schema, kind):
    """The section's keys besides the workflow's are the settings dataclass's fields, and the module names itself as registered."""
    entry = MODEL_KINDS[kind]
    module = import_module(entry.module)
    assert module.KIND == kind
    assert callable(getattr(module, entry.trainer))
    fields = set(entry.settings_class().__dataclass_fields__)
    keys = set(model_defs(schema)[kind]["properties"]) - WORKFLOW_KEYS
    assert keys == fields, f"schema-only: {sorted(keys - fields)}, settings-only: {sorted(fields - keys)}"


def test_schema_targets_are_the_registry(schema):
    assert schema["$defs"]["target"]["enum"] == list(TARGETS)
    for kind, d in model_defs(schema).items():
        assert d["properties"]["target"] == {"$ref": "#/$defs/target"}, kind
    assert DEFAULT_TARGET in TARGETS and TARGETS[DEFAULT_TARGET].iterable


def rule_outputs() -> dict[str, str]:
    """rule name -> the text of its output: block, from the rule files."""
    out = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for m in re.finditer(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule \w+:|\Z)", smk.read_text(), re.MULTILINE | re.DOTALL):
            block = re.search(r"output:\n(.*?)\n\s*(?:params|log|wildcard_constraints|benchmark|resources|threads|conda|script|shell|run):", m.group(2), re.DOTALL)
            out[m.group(1)] = block.group(1) if block else ""
    return out


def test_each_target_rule_writes_a_history():
    outputs = rule_outputs()
    for target in TARGETS.values():
        assert target.rule in outputs, f"target {target.name!r}: no rule {target.rule!r} in workflow/rules"
        assert re.search(r"\bhisthf=", outputs[target.rule]) and re.search(r"\bguide=", outputs[target.rule]), target


def test_target_names_and_wildcard():
    pattern = re.compile(target_pattern())
    assert all(pattern.fullmatch(t) for t in TARGETS)
    assert iteration_target("mlp-a", 3) == "iter/mlp-a/k3" and parse_iteration("iter/mlp-a/k3") == ("mlp-a", 3)
    assert pattern.fullmatch(iteration_target("mlp-a", 3))
    assert parse_iteration("nudging") is None and not pattern.fullmatch("iter/k3") and not pattern.fullmatch("nudgingx")
    assert target_of({"kind": "mlp"}).name == DEFAULT_TARGET and target_of({"target": "replay"}).rule == "replay"


def test_unknown_kind_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'models.m.kind' is 'forest'; use one of \('mlp', 'xgboost', 'cnn'\)"):
        train_model(tmp_path / "store", tmp_path / "out", "m", {"kind": "forest"})
    assert model_kind("cnn", "models.c.kind").reads_fields and not model_kind("mlp", "models.m.kind").reads_fields


def test_a_field_kind_without_the_column_table_is_named(tmp_path):
    with pytest.raises(ConfigError, match="model 'c' .kind 'cnn'. needs the column table"):
        train_model(tmp_path / "store", tmp_path / "out", "c", {"kind": "cnn"})
