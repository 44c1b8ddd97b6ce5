"""Shape of the package: its import graph has no cycle, ``config`` is a leaf, and a non-editable install
(no checkout behind ``nudgeml.__file__``) runs the workflow's dry run from the checkout."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """nudgeml module -> the nudgeml modules it imports, anywhere in its body (a function-level, lazy
    import counts), including submodules named by a string that is exactly a module name (the
    model registry imports its entries by name)."""
    files = {module_name(p): p for p in (SRC / "nudgeml").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "nudgeml":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in files else node.module)
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                pytest.fail(f"{path}: relative import; the graph test reads absolute ones only")
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "nudgeml")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value and node.value in files:
                deps.add(node.value)  # a submodule by name; the bare "nudgeml" names the package's data
        unknown = {d for d in deps if d not in files}
        assert not unknown, f"{path} imports {sorted(unknown)}, which are not modules of src/nudgeml"
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "nudgeml.config" in graph and "nudgeml.models.registry" in graph
    assert cycles(graph) == []


def test_config_is_a_leaf():
    """config imports only the error classes, which import nothing: the checks across keys sit above it."""
    graph = import_graph()
    assert graph["nudgeml.errors"] == set()
    assert graph["nudgeml.config"] <= {"nudgeml.errors"}
    assert "nudgeml.config" in graph["nudgeml.checks"]


def test_the_manifest_needs_no_training_code():
    """The model contract is read by the coupled runs and the Fortran bridge's tooling: no torch, no trainer."""
    graph = import_graph()
    assert graph["nudgeml.manifest"] <= {"nudgeml.errors", "nudgeml.atomic"}
    assert "nudgeml.export" not in graph["nudgeml.models.mlp"]


@pytest.mark.slow
def test_a_non_editable_install_runs_the_dry_run(tmp_path):
    """Install the package (no dependencies) into a folder, put it first on the path, and dry-run the
    workflow from the checkout: the Snakefile's schema and the LMDZ templates come from the install."""
    build = tmp_path / "build"  # setuptools writes build/ and *.egg-info beside pyproject.toml: not in the checkout
    build.mkdir()
    shutil.copytree(SRC, build / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for path in (REPO / "pyproject.toml", REPO / "README.md", *REPO.glob("LICEN[CS]E*")):  # what the metadata names
        shutil.copy(path, build / path.name)
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--quiet", "--target", str(target), str(build)], capture_output=True, text=True, check=False)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    installed = target / "nudgeml"
    assert (installed / "schemas" / "config.schema.yaml").is_file() and (installed / "schemas" / "lmdz.schema.yaml").is_file()
    assert sorted(p.name for p in (installed / "templates" / "lmdz").glob("*.j2")) == sorted(
        p.name for p in (SRC / "nudgeml" / "templates" / "lmdz").glob("*.j2"))

    env = {**os.environ, "PYTHONPATH": str(target)}  # the install only: not src/, and ahead of any editable install
    # one process imports nudgeml, renders an LMDZ template and runs snakemake, so the Snakefile's import is that one
    script = (
        "import sys, nudgeml\n"
        "print('NUDGEML', nudgeml.__file__, flush=True)\n"
        "from nudgeml.lmdz import _environment\n"
        "_environment().get_template('guide.def.j2')\n"
        "from snakemake.cli import main\n"
        "sys.argv = ['snakemake'] + sys.argv[1:]\n"
        "main()\n"
    )
    res = subprocess.run([sys.executable, "-c", script, "-n", "--config", f"outdir={tmp_path / 'results'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    origin = Path(out.split("NUDGEML ", 1)[1].split()[0])
    assert origin.is_relative_to(target), origin
    assert "Job stats:" in out and "This was a dry-run" in out
