"""Export a trained correction in the ``nudgeml-model`` format (``docs/model-format.md``).

Three files travel together in one directory: ``model.pt`` (TorchScript), ``model.pt2``
(``torch.export`` + AOTInductor package) and ``model.json`` (the manifest). This module writes and
reads them; it knows nothing of Snakemake, of the training code or of the dataset layout.

Conventions (from the format):

* input ``x``: ``(n, n_features)`` float32, physical units, columns in ``feature_names`` order;
* output: ``(n, n_targets)`` float32, wind tendency in m s-2, columns in ``target_names`` order;
* per-level blocks are surface first; normalisation lives inside the exported module.

A *field* model (a module with a ``grid_shape`` attribute ``(nlat, nlon)``, e.g. the CNN of
``nudgeml.models.cnn``) maps the whole grid at once: ``n`` must be ``nlat * nlon``, the manifest's
``grid`` must say so, and the ``.pt2`` is compiled for that static ``n`` (AOTInductor rejects another
``n`` only when ``AOTI_RUNTIME_CHECK_INPUTS=1``; the TorchScript module always does).

Every file is written atomically (temporary file in the same directory, then ``os.replace``), so a
reader never sees half a model and an interrupted export leaves the previous one intact.
"""

import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

FORMAT: Final = "nudgeml-model"
FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "model.json"
TORCHSCRIPT_NAME: Final = "model.pt"
AOTI_NAME: Final = "model.pt2"
LEVEL_ORDER: Final = "surface_first"
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class ManifestError(ValueError):
    """A manifest that breaks the format; the message names the file and the key."""


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


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
    with _atomic_path(path) as tmp:
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
    for key in ("torchscript", "aoti"):
        val = get(art, key, str, "artifacts")
        if not val or "/" in val or val in (".", ".."):
            raise fail(f"artifacts.{key}", f"must be a file name in the model directory, got {val!r}")
        artifacts[key] = val
    sha = data.get("dataset_sha256", "")
    if not isinstance(sha, str):
        raise fail("dataset_sha256", "must be a string")
    return Manifest(name=name, kind=kind, features=features, targets=targets, levels=levels,
                    guard=guard, grid=grid, dataset_sha256=sha, artifacts=artifacts)


def _numbers(values: list[Any], key: str, fail: Any) -> list[float]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise fail(f"{key}[{i}]", f"must be a finite number, got {v!r}")
        out.append(float(v))
    return out


# --------------------------------------------------------------------------------------------
# Module with normalisation inside
# --------------------------------------------------------------------------------------------


class NormalizedModel(nn.Module):
    """``net`` between the feature standardisation and the target de-standardisation.

    ``forward(x) = net((clip(x) - x_mean) / x_std) * y_std + y_mean`` with ``x`` in physical units
    ``(n, n_features)`` and the result in physical units ``(n, n_targets)``. A zero or non-finite
    standard deviation (a constant feature) is replaced by 1 so the module never divides by zero.
    ``x_clip`` (``(lo, hi)`` tensors of ``n_features``) clamps raw inputs before normalising;
    without it no clamp is traced into the graph.
    """

    clip_inputs: Final[bool]

    def __init__(
        self,
        net: nn.Module,
        x_mean: torch.Tensor,
        x_std: torch.Tensor,
        y_mean: torch.Tensor,
        y_std: torch.Tensor,
        x_clip: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        f32 = torch.float32
        x_std = torch.as_tensor(x_std, dtype=f32)
        y_std = torch.as_tensor(y_std, dtype=f32)
        x_std = torch.where(torch.isfinite(x_std) & (x_std > 0), x_std, torch.ones_like(x_std))
        y_std = torch.where(torch.isfinite(y_std) & (y_std > 0), y_std, torch.ones_like(y_std))
        self.register_buffer("x_mean", torch.as_tensor(x_mean, dtype=f32).clone())
        self.register_buffer("x_std", x_std.clone())
        self.register_buffer("y_mean", torch.as_tensor(y_mean, dtype=f32).clone())
        self.register_buffer("y_std", y_std.clone())
        self.clip_inputs = x_clip is not None
        lo, hi = x_clip if x_clip is not None else (self.x_mean, self.x_mean)
        self.register_buffer("x_lo", torch.as_tensor(lo, dtype=f32).clone())
        self.register_buffer("x_hi", torch.as_tensor(hi, dtype=f32).clone())
        for name in ("x_mean", "x_std", "x_lo", "x_hi"):
            if getattr(self, name).shape != self.x_mean.shape:
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, "
                                 f"x_mean {tuple(self.x_mean.shape)}")
        if self.y_std.shape != self.y_mean.shape:
            raise ValueError(f"y_std has shape {tuple(self.y_std.shape)}, y_mean {tuple(self.y_mean.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clip_inputs:
            x = torch.maximum(torch.minimum(x, self.x_hi), self.x_lo)
        z = (x - self.x_mean) / self.x_std
        return self.net(z) * self.y_std + self.y_mean


def mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """A plain multilayer perceptron ``n_in → hidden… → n_out`` (used by fixtures and benchmarks)."""
    layers: list[nn.Module] = []
    d = n_in
    for h in hidden:
        layers += [nn.Linear(d, h), activation()]
        d = h
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


@contextmanager
def _atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_torchscript(module: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Script ``module`` (eval mode) and save it atomically with ``torch.jit.save``.

    TorchScript is deprecated since torch 2.11 (in favour of ``torch.export``); it still is the format
    every libtorch build loads, so it stays the primary artifact and ``.pt2`` travels beside it.
    """
    path = Path(path)
    module = module.eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.", DeprecationWarning)
        scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    with _atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp))
    return path


def export_aoti(
    module: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    max_batch: int = 1 << 24,
    dynamic_batch: bool = True,
) -> Path:
    """``torch.export`` (batch dimension dynamic unless ``dynamic_batch=False``), compile with
    AOTInductor, package to ``path``.

    ``example_input`` is ``(n, n_features)`` float32 with ``n >= 2`` (export specialises sizes 0
    and 1). A field model (``dynamic_batch=False``) is compiled for its example's ``n`` only.
    The package runs on the device of ``example_input``/``module`` (CPU here).
    """
    path = Path(path)
    if example_input.ndim != 2 or example_input.shape[0] < 2:
        raise ValueError(f"example_input must be (n >= 2, n_features), got {tuple(example_input.shape)}")
    if example_input.dtype != torch.float32:
        raise ValueError(f"example_input must be float32, got {example_input.dtype}")
    module = module.eval()
    batch = torch.export.Dim("n_columns", min=1, max=max_batch)
    with torch.no_grad():
        program = torch.export.export(module, (example_input,), dynamic_shapes=({0: batch},) if dynamic_batch else None)
    # AOTInductor insists on a '.pt2' suffix for the package path.
    with _atomic_path(path, suffix=".pt2") as tmp:
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
    return path


def export_model(
    module: nn.Module,
    manifest: Manifest,
    out_dir: str | os.PathLike[str],
    example_input: torch.Tensor | None = None,
    *,
    aoti: bool = True,
) -> dict[str, Path]:
    """Write ``model.pt``, ``model.pt2`` (unless ``aoti=False``) and ``model.json`` to ``out_dir``.

    The manifest is written last, so a directory holding a manifest holds its artifacts.
    ``example_input`` defaults to 8 columns (a field model: the whole grid) at the guard's feature
    mid-range.
    """
    out = Path(out_dir)
    validate_manifest(manifest, str(out / MANIFEST_NAME))
    grid_shape = getattr(module, "grid_shape", None)  # a field model: the batch is the whole grid
    if grid_shape is not None:
        nlat, nlon = (int(v) for v in grid_shape)
        if manifest.grid is None or (manifest.grid.nlat, manifest.grid.nlon) != (nlat, nlon):
            have = "missing" if manifest.grid is None else f"{manifest.grid.nlat}x{manifest.grid.nlon}"
            raise ManifestError(f"{out / MANIFEST_NAME}: key 'grid' is {have}, the field model's grid is {nlat}x{nlon}")
    if example_input is None:
        lo = torch.tensor(manifest.guard.feature_min, dtype=torch.float32)
        hi = torch.tensor(manifest.guard.feature_max, dtype=torch.float32)
        example_input = ((lo + hi) / 2).expand(8 if grid_shape is None else nlat * nlon, -1).contiguous()
    with torch.no_grad():
        y = module.eval()(example_input)
    if tuple(y.shape) != (example_input.shape[0], manifest.n_targets):
        raise ValueError(f"module maps {tuple(example_input.shape)} to {tuple(y.shape)}, "
                         f"manifest expects (n, {manifest.n_targets})")
    paths = {"torchscript": export_torchscript(module, out / manifest.artifacts["torchscript"])}
    if aoti:
        paths["aoti"] = export_aoti(module, example_input, out / manifest.artifacts["aoti"], dynamic_batch=grid_shape is None)
    paths["manifest"] = write_manifest(manifest, out / MANIFEST_NAME)
    return paths


# --------------------------------------------------------------------------------------------
# Stage glue: a trained model + its training store -> the exported artefacts
# --------------------------------------------------------------------------------------------


def manifest_from_store(store: str | os.PathLike[str], *, name: str, kind: str, margin: float) -> Manifest:
    """The manifest of a model trained on ``store``: its feature order, levels, units, guard, hash."""
    from nudgeml.shard import load_stats, open_store

    root = open_store(store)
    attrs = root.attrs
    stats = load_stats(root)
    grid_shape = list(attrs.get("grid_shape") or [])
    return Manifest(
        name=name,
        kind=kind,
        features=tuple(Block(b["name"], b["units"], int(b["levels"])) for b in attrs["feature_blocks"]),
        targets=tuple(Block(b["name"], b["units"], int(b["levels"])) for b in attrs["target_blocks"]),
        levels=Levels(tuple(float(v) for v in attrs["levels_pa"])),
        guard=Guard(
            margin=float(margin),
            feature_min=tuple(float(v) for v in stats["input_min"]),
            feature_max=tuple(float(v) for v in stats["input_max"]),
            target_min=tuple(float(v) for v in stats["target_min"]),
            target_max=tuple(float(v) for v in stats["target_max"]),
        ),
        grid=Grid("model", nlon=int(grid_shape[1]), nlat=int(grid_shape[0])) if len(grid_shape) == 2 else None,
        dataset_sha256=str(attrs.get("source_sha256", "")),
    )


def export_trained(trained: str | os.PathLike[str], store: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, name: str, margin: float, aoti: bool = True) -> dict[str, Path]:
    """Export a ``trained.pt`` (physical-units module) with the manifest of its store."""
    from nudgeml.data import Segment, _SplitArrays
    from nudgeml.models.common import load_trained

    obj = load_trained(trained)
    manifest = manifest_from_store(store, name=name, kind=obj["kind"], margin=margin)
    if hasattr(obj["module"], "grid_shape"):  # a field model: the example is a whole grid (mid-range)
        return export_model(obj["module"].eval(), manifest, out_dir, aoti=aoti)
    train = _SplitArrays(store, "train")
    x, _ = train.read(Segment(0, min(train.n_rows, 16)))  # real columns as the export example
    return export_model(obj["module"].eval(), manifest, out_dir, torch.from_numpy(x), aoti=aoti)
