"""The ``nudgeml-model`` manifest (``docs/model-format.md``): the contract of an exported model.

``model.json`` says what the model reads and writes (feature and target blocks, levels, units),
the training ranges its callers guard with, and which artifacts sit beside it. The exporter
(:mod:`nudgeml.export`), the coupled runs (:mod:`nudgeml.coupled`, :mod:`nudgeml.guard`), the
offline evaluation and the Fortran bridge's fixtures share this module; it needs neither torch nor
the training code.

Conventions (from the format):

* input ``x``: ``(n, n_features)`` float32, physical units, columns in ``feature_names`` order;
* output: ``(n, n_targets)`` float32, tendencies in the target blocks' units (du, dv m s-2; dt K s-1,
  dq kg kg-1 s-1), columns in ``target_names`` order;
* per-level blocks are surface first.
"""

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nudgeml.atomic import synced_atomic_path
from nudgeml.errors import ManifestError

FORMAT: Final = "nudgeml-model"
FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "model.json"
TORCHSCRIPT_NAME: Final = "model.pt"
AOTI_NAME: Final = "model.pt2"
LEVEL_ORDER: Final = "surface_first"
TREE_BACKENDS: Final = ("tl2cgen",)  # values of the optional key 'tree_backend' (nudgeml.trees)
# values of the optional key 'aoti_precision': what model.pt2's hidden layers compute in (float32 when
# absent); its inputs and outputs are float32 either way, and model.pt is float32 always
AOTI_PRECISIONS: Final = ("float32", "bfloat16")
TREE_ARTIFACTS: Final = ("trees",)  # the artifact a tree backend adds (the shared library)
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Block:
    """One variable in the feature or target vector: ``levels`` consecutive columns."""

    name: str
    units: str
    levels: int

    def names(self) -> list[str]:
        """Column names: ``<name>_000 … <name>_{k-1}`` (surface first), or ``<name>`` if one level."""
        if self.levels == 1:
            return [self.name]
        return [f"{self.name}_{k:03d}" for k in range(self.levels)]


def expand_names(blocks: Sequence[Block]) -> list[str]:
    """Column names of consecutive blocks, in order."""
    return [n for b in blocks for n in b.names()]


@dataclass(frozen=True)
class Levels:
    """Reference pressure (Pa) of each model level, surface first (LMDZ ``presnivs``)."""

    values: tuple[float, ...]
    coordinate: str = "presnivs"
    units: str = "Pa"
    order: str = LEVEL_ORDER


@dataclass(frozen=True)
class Grid:
    name: str
    nlon: int
    nlat: int


@dataclass(frozen=True)
class Guard:
    """Training-split extremes (physical units) and the widening margin (fraction of the range).

    A caller accepts feature ``j`` in ``[lo_j, hi_j]`` with ``lo_j = min_j - margin*(max_j - min_j)``
    and ``hi_j = max_j + margin*(max_j - min_j)`` (same formula for targets); see ``nudgeml.guard``.
    """

    margin: float
    feature_min: tuple[float, ...]
    feature_max: tuple[float, ...]
    target_min: tuple[float, ...]
    target_max: tuple[float, ...]


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: str
    features: tuple[Block, ...]
    targets: tuple[Block, ...]
    levels: Levels
    guard: Guard
    grid: Grid | None = None
    dataset_sha256: str = ""
    artifacts: Mapping[str, str] = field(
        default_factory=lambda: {"torchscript": TORCHSCRIPT_NAME, "aoti": AOTI_NAME}
    )
    # a tree ensemble compiled to C (``tl2cgen``, :mod:`nudgeml.trees`): then ``artifacts`` also has
    # ``trees`` (the shared library, same contract as model.pt), which the free run calls; model.pt
    # (the TorchScript walker) stays for the offline evaluation and the libtorch bridge
    tree_backend: str | None = None
    # model.pt2's hidden layers in bfloat16 (nudgeml.models.normalized.ReducedPrecisionModel): about
    # half the float32 call on a CPU with native bfloat16 dot products (benchmarks/aoti_precision.py)
    aoti_precision: str = "float32"

    @property
    def n_features(self) -> int:
        return sum(b.levels for b in self.features)

    @property
    def n_targets(self) -> int:
        return sum(b.levels for b in self.targets)

    @property
    def feature_names(self) -> list[str]:
        return expand_names(self.features)

    @property
    def target_names(self) -> list[str]:
        return expand_names(self.targets)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``docs/model-format.md``, keys in the documented order."""
        d: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "kind": self.kind,
            "n_features": self.n_features,
            "n_targets": self.n_targets,
            "features": [_block_dict(b) for b in self.features],
            "feature_names": self.feature_names,
            "targets": [_block_dict(b) for b in self.targets],
            "target_names": self.target_names,
            "levels": {
                "coordinate": self.levels.coordinate,
                "units": self.levels.units,
                "order": self.levels.order,
                "values": [float(v) for v in self.levels.values],
            },
        }
        if self.grid is not None:
            d["grid"] = {"name": self.grid.name, "nlon": self.grid.nlon, "nlat": self.grid.nlat}
        d["guard"] = {
            "margin": float(self.guard.margin),
            "feature_min": [float(v) for v in self.guard.feature_min],
            "feature_max": [float(v) for v in self.guard.feature_max],
            "target_min": [float(v) for v in self.guard.target_min],
            "target_max": [float(v) for v in self.guard.target_max],
        }
        d["dataset_sha256"] = self.dataset_sha256
        d["artifacts"] = dict(self.artifacts)
        if self.tree_backend is not None:
            d["tree_backend"] = self.tree_backend
        if self.aoti_precision != "float32":
            d["aoti_precision"] = self.aoti_precision
        return d


def _block_dict(b: Block) -> dict[str, Any]:
    return {"name": b.name, "units": b.units, "levels": b.levels}


def validate_manifest(manifest: Manifest, source: str = "<manifest>") -> None:
    """Raise :class:`ManifestError` unless ``manifest`` obeys the format."""
    data = json.loads(json.dumps(manifest.to_dict()))
    parse_manifest(data, source)


def write_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> Path:
    """Validate ``manifest`` and write it atomically as JSON; returns the path written."""
    path = Path(path)
    validate_manifest(manifest, str(path))
    text = json.dumps(manifest.to_dict(), indent=2, allow_nan=False) + "\n"
    with synced_atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def read_manifest(path: str | os.PathLike[str], *, klev: int | None = None) -> Manifest:
    """Read and validate a manifest (a ``model.json`` or the directory holding it).

    With ``klev``, also reject a manifest whose per-level blocks or level values do not have
    ``klev`` levels (the caller's vertical grid).
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from None
    manifest = parse_manifest(data, str(path))
    if klev is not None:
        check_levels(manifest, klev, str(path))
    return manifest


def check_levels(manifest: Manifest, klev: int, source: str = "<manifest>") -> None:
    """Reject a manifest whose multi-level blocks or ``levels.values`` disagree with ``klev``."""
    nvals = len(manifest.levels.values)
    if nvals != klev:
        raise ManifestError(f"{source}: key 'levels.values' has {nvals} levels, caller's klev = {klev}")
    for kind, blocks in (("features", manifest.features), ("targets", manifest.targets)):
        for i, b in enumerate(blocks):
            if b.levels not in (1, klev):
                raise ManifestError(
                    f"{source}: key '{kind}[{i}].levels' ({b.name!r}) = {b.levels}, "
                    f"caller's klev = {klev}"
                )


def parse_manifest(data: Any, source: str = "<manifest>") -> Manifest:
    """Build a :class:`Manifest` from a decoded JSON object, checking every rule of the format."""

    def fail(key: str, why: str) -> ManifestError:
        return ManifestError(f"{source}: key '{key}' {why}")

    def get(obj: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
        full = f"{where}.{key}" if where else key
        if key not in obj:
            raise fail(full, "is missing")
        val = obj[key]
        if isinstance(val, bool) or not isinstance(val, typ):
            names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise fail(full, f"must be {names}, got {type(val).__name__}")
        return val

    if not isinstance(data, dict):
        raise ManifestError(f"{source}: top level must be a JSON object")
    fmt = get(data, "format", str, "")
    if fmt != FORMAT:
        raise fail("format", f"is {fmt!r}, expected {FORMAT!r}")
    ver = get(data, "format_version", int, "")
    if ver != FORMAT_VERSION:
        raise fail("format_version", f"is {ver}, this reader knows only {FORMAT_VERSION}")
    name = get(data, "name", str, "")
    kind = get(data, "kind", str, "")

    def blocks(key: str) -> tuple[Block, ...]:
        raw = get(data, key, list, "")
        if not raw:
            raise fail(key, "must list at least one block")
        out = []
        seen = set()
        for i, b in enumerate(raw):
            where = f"{key}[{i}]"
            if not isinstance(b, dict):
                raise fail(where, "must be an object")
            bname = get(b, "name", str, where)
            units = get(b, "units", str, where)
            levels = get(b, "levels", int, where)
            if levels < 1:
                raise fail(f"{where}.levels", f"must be >= 1, got {levels}")
            if not _NAME.fullmatch(bname):
                raise fail(f"{where}.name", f"{bname!r} is not a name ([A-Za-z][A-Za-z0-9_]*)")
            if bname in seen:
                raise fail(f"{where}.name", f"{bname!r} appears twice")
            seen.add(bname)
            out.append(Block(bname, units, levels))
        return tuple(out)

    features = blocks("features")
    targets = blocks("targets")
    n_features = get(data, "n_features", int, "")
    n_targets = get(data, "n_targets", int, "")
    if n_features != sum(b.levels for b in features):
        raise fail("n_features", f"= {n_features} but the feature blocks expand to "
                                 f"{sum(b.levels for b in features)} columns")
    if n_targets != sum(b.levels for b in targets):
        raise fail("n_targets", f"= {n_targets} but the target blocks expand to "
                                f"{sum(b.levels for b in targets)} columns")
    for key, blks in (("feature_names", features), ("target_names", targets)):
        names = get(data, key, list, "")
        if names != expand_names(blks):
            raise fail(key, "disagrees with the expansion of its blocks")

    lv = get(data, "levels", dict, "")
    values = get(lv, "values", list, "levels")
    order = get(lv, "order", str, "levels")
    if order != LEVEL_ORDER:
        raise fail("levels.order", f"is {order!r}, expected {LEVEL_ORDER!r}")
    values_f = _numbers(values, "levels.values", fail)
    nlev = len(values_f)
    for kind_key, blks in (("features", features), ("targets", targets)):
        for i, b in enumerate(blks):
            if b.levels not in (1, nlev):
                raise fail(f"{kind_key}[{i}].levels", f"= {b.levels}, levels.values has {nlev}")
    levels = Levels(
        values=tuple(values_f),
        coordinate=get(lv, "coordinate", str, "levels"),
        units=get(lv, "units", str, "levels"),
        order=order,
    )

    grid = None
    if "grid" in data and data["grid"] is not None:
        g = get(data, "grid", dict, "")
        grid = Grid(get(g, "name", str, "grid"), get(g, "nlon", int, "grid"), get(g, "nlat", int, "grid"))

    gd = get(data, "guard", dict, "")
    margin = float(get(gd, "margin", (int, float), "guard"))
    if not math.isfinite(margin) or margin < 0:
        raise fail("guard.margin", f"must be a finite number >= 0, got {margin}")
    arrays = {}
    for key, n in (("feature_min", n_features), ("feature_max", n_features),
                   ("target_min", n_targets), ("target_max", n_targets)):
        arr = _numbers(get(gd, key, list, "guard"), f"guard.{key}", fail)
        if len(arr) != n:
            expected = "n_features" if key.startswith("feature") else "n_targets"
            raise fail(f"guard.{key}", f"has {len(arr)} entries, expected {expected} = {n}")
        arrays[key] = tuple(arr)
    for lo_key, hi_key in (("feature_min", "feature_max"), ("target_min", "target_max")):
        for j, (lo, hi) in enumerate(zip(arrays[lo_key], arrays[hi_key], strict=True)):
            if lo > hi:
                raise fail(f"guard.{lo_key}[{j}]", f"= {lo} exceeds guard.{hi_key}[{j}] = {hi}")
    guard = Guard(margin=margin, **arrays)

    art = get(data, "artifacts", dict, "")
    artifacts = {}
    tree_backend = data.get("tree_backend")
    if tree_backend not in (None, *TREE_BACKENDS):
        raise fail("tree_backend", f"is {tree_backend!r}, use one of {TREE_BACKENDS} or leave it out")
    for key in ("torchscript", "aoti", *(TREE_ARTIFACTS if tree_backend is not None else ())):
        val = get(art, key, str, "artifacts")
        if not val or "/" in val or val in (".", ".."):
            raise fail(f"artifacts.{key}", f"must be a file name in the model directory, got {val!r}")
        artifacts[key] = val
    aoti_precision = data.get("aoti_precision", "float32")
    if aoti_precision not in AOTI_PRECISIONS:
        raise fail("aoti_precision", f"is {aoti_precision!r}, use one of {AOTI_PRECISIONS} or leave it out")
    sha = data.get("dataset_sha256", "")
    if not isinstance(sha, str):
        raise fail("dataset_sha256", "must be a string")
    return Manifest(name=name, kind=kind, features=features, targets=targets, levels=levels,
                    guard=guard, grid=grid, dataset_sha256=sha, artifacts=artifacts, tree_backend=tree_backend,
                    aoti_precision=aoti_precision)


def _numbers(values: list[Any], key: str, fail: Any) -> list[float]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise fail(f"{key}[{i}]", f"must be a finite number, got {v!r}")
        out.append(float(v))
    return out


def first_difference(what: str, got: Sequence[str], expected: Sequence[str]) -> str:
    """Where two name lists part: the first differing position and both names there (truncated
    lists of identical first names told the user nothing)."""
    n = min(len(got), len(expected))
    i = next((k for k in range(n) if got[k] != expected[k]), n)
    a = repr(got[i]) if i < len(got) else "(end)"
    b = repr(expected[i]) if i < len(expected) else "(end)"
    return f"{what} differ at position {i}: {a} in the model, {b} expected ({len(got)} vs {len(expected)} {what})"
