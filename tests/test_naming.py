"""The naming helpers the rule files import at parse time: light, and the rule files' only runtime import."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_naming_imports_no_heavy_stack():
    """`snakemake -n` parses every rule file: the modules they import must not pull in JAX, torch or xarray."""
    code = ("import sys, nudgeml.naming, nudgeml.config, nudgeml.targets, nudgeml.models.registry, nudgeml.gcm.registry, nudgeml.checks; "
            "print(sorted(m for m in ('jax', 'torch', 'xarray', 'jcm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_rule_files_import_only_naming_and_config():
    """Rule files name things (naming, the registries of targets and model kinds) and the Snakefile
    validates (config, checks); the runtime modules (coupled, iterate, ...) are for the scripts."""
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    imported = {m for f in files for m in re.findall(r"^\s*(?:from|import)\s+(nudgeml[\w.]*)", f.read_text(), re.M)}
    light = {"nudgeml.naming", "nudgeml.config", "nudgeml.checks", "nudgeml.targets", "nudgeml.models.registry", "nudgeml.gcm.registry"}
    assert imported and imported <= light, imported - light
