"""Export a trained correction in the ``nudgeml-model`` format (``docs/model-format.md``).

Three files travel together in one directory: ``model.pt`` (TorchScript), ``model.pt2``
(``torch.export`` + AOTInductor package) and ``model.json`` (the manifest, :mod:`nudgeml.manifest`).
This module writes them; it knows nothing of Snakemake, of the training code or of the dataset
layout. Normalisation lives inside the exported module (:class:`nudgeml.models.normalized.NormalizedModel`).

A *field* model (a module with a ``grid_shape`` attribute ``(nlat, nlon)``, e.g. the CNN of
``nudgeml.models.cnn``) maps the whole grid at once: ``n`` must be ``nlat * nlon``, the manifest's
``grid`` must say so, and the ``.pt2`` is compiled for that static ``n`` (AOTInductor rejects another
``n`` only when ``AOTI_RUNTIME_CHECK_INPUTS=1``; the TorchScript module always does).

Every file is written atomically (temporary file in the same directory, then ``os.replace``), so a
reader never sees half a model and an interrupted export leaves the previous one intact.
"""

import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from nudgeml.atomic import synced_atomic_path
from nudgeml.errors import InputError, ManifestError
from nudgeml.manifest import AOTI_PRECISIONS, MANIFEST_NAME, Block, Grid, Guard, Levels, Manifest, validate_manifest, write_manifest

# A trained.pt pickles its module by class path: those written before NormalizedModel moved to
# nudgeml.models.normalized name it here, so this name stays importable for them.
from nudgeml.models.normalized import NormalizedModel, ReducedPrecisionModel

log = logging.getLogger(__name__)


def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (x86 AVX512-BF16 or AMX), with which
    oneDNN runs a bfloat16 matrix product at about twice the float32 rate; without them bfloat16 is
    emulated and slower than float32."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


# The narrowest hidden layer from which a bfloat16 `.pt2` is the faster call: on a CPU with AMX
# (Sapphire Rapids, 2 048 columns, 1 thread, benchmarks/aoti_precision.py) bfloat16 / float32 was 1.18 at
# 3 x 32, 0.98 at 3 x 64 and 0.65 at 3 x 128: a narrow layer's products are too small to pay for the
# conversions around them (benchmarks/README.md).
BFLOAT16_MIN_HIDDEN = 128


def hidden_widths(module: nn.Module) -> list[int]:
    """Widths of a network's hidden layers: the outputs of each ``nn.Linear`` but the last."""
    return [m.out_features for m in module.modules() if isinstance(m, nn.Linear)][:-1]


def resolve_aoti_precision(value: str, key: str = "export.aoti_precision", hidden: Sequence[int] | None = None) -> str:
    """``float32``, ``bfloat16``, or ``auto``: bfloat16 where this CPU computes it natively
    (:func:`native_bfloat16`; a ``.pt2`` is compiled for the CPU that exports it) and every hidden
    layer (``hidden``, when given) is at least :data:`BFLOAT16_MIN_HIDDEN` wide; float32 elsewhere."""
    if value == "auto":
        wide = hidden is None or (len(hidden) > 0 and min(hidden) >= BFLOAT16_MIN_HIDDEN)
        return "bfloat16" if native_bfloat16() and wide else "float32"
    if value not in AOTI_PRECISIONS:
        raise InputError(f"config key {key!r} is {value!r}: use one of {(*AOTI_PRECISIONS, 'auto')}")
    return value


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
    with synced_atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp))
    return path


def export_aoti(
    module: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    max_batch: int = 1 << 24,
    dynamic_batch: bool = True,
    precision: str = "float32",
) -> Path:
    """``torch.export`` (batch dimension dynamic unless ``dynamic_batch=False``), compile with
    AOTInductor, package to ``path``.

    ``example_input`` is ``(n, n_features)`` float32 with ``n >= 2`` (export specialises sizes 0
    and 1). A field model (``dynamic_batch=False``) is compiled for its example's ``n`` only.
    The package runs on the device of ``example_input``/``module`` (CPU here). ``precision``
    ``bfloat16``: the hidden layers of a :class:`NormalizedModel` in bfloat16, its standardisation and
    its float32 interface kept (:class:`ReducedPrecisionModel`).
    """
    path = Path(path)
    if example_input.ndim != 2 or example_input.shape[0] < 2:
        raise ValueError(f"example_input must be (n >= 2, n_features), got {tuple(example_input.shape)}")
    if example_input.dtype != torch.float32:
        raise ValueError(f"example_input must be float32, got {example_input.dtype}")
    if precision == "bfloat16":
        if not isinstance(module, NormalizedModel):
            raise ValueError(f"a bfloat16 .pt2 is made for a NormalizedModel (the MLP), got {type(module).__name__}")
        module = ReducedPrecisionModel(module, torch.bfloat16)
    elif precision != "float32":
        raise ValueError(f"precision must be one of {AOTI_PRECISIONS}, got {precision!r}")
    module = module.eval()
    batch = torch.export.Dim("n_columns", min=1, max=max_batch)
    with torch.no_grad():
        program = torch.export.export(module, (example_input,), dynamic_shapes=({0: batch},) if dynamic_batch else None)
    # AOTInductor insists on a '.pt2' suffix for the package path.
    with synced_atomic_path(path, suffix=".pt2") as tmp:
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
    return path


def export_model(
    module: nn.Module,
    manifest: Manifest,
    out_dir: str | os.PathLike[str],
    example_input: torch.Tensor | None = None,
    *,
    aoti: bool = True,
    aoti_precision: str = "float32",
) -> dict[str, Path]:
    """Write ``model.pt``, ``model.pt2`` (unless ``aoti=False``) and ``model.json`` to ``out_dir``.

    The manifest is written last, so a directory holding a manifest holds its artifacts; it records
    ``aoti_precision`` (what ``model.pt2``'s hidden layers compute in; ``model.pt`` is float32).
    ``example_input`` defaults to 8 columns (a field model: the whole grid) at the guard's feature
    mid-range.
    """
    out = Path(out_dir)
    manifest = dataclasses.replace(manifest, aoti_precision=aoti_precision if aoti else "float32")
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
        paths["aoti"] = export_aoti(module, example_input, out / manifest.artifacts["aoti"], dynamic_batch=grid_shape is None,
                                    precision=manifest.aoti_precision)
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


def export_compiled_trees(booster_path: Path, module: nn.Module, manifest: Manifest, out_dir: str | os.PathLike[str], *, threads: int = 1) -> Manifest:
    """Compile the booster beside a ``trained.pt``, with the trained module's modes, intercept and
    target statistics, to ``model_trees.so`` (:mod:`nudgeml.trees`); returns the manifest that names
    it (written later, last, by :func:`export_model`)."""
    import xgboost as xgb

    from nudgeml.trees import LIBRARY_NAME, TREE_BACKEND, compile_trees

    if not booster_path.is_file():
        raise InputError(f"{booster_path}: the booster of this xgboost model is missing (train writes it beside trained.pt)")
    booster = xgb.Booster(model_file=str(booster_path))
    if booster.num_features() != manifest.n_features:
        raise InputError(f"{booster_path}: reads {booster.num_features()} features, the store has {manifest.n_features}")
    compile_trees(booster, Path(out_dir) / LIBRARY_NAME, intercept=module.base.numpy(), modes=module.modes.numpy(),
                  target_mean=module.y_mean.numpy(), target_std=module.y_std.numpy(), threads=threads)
    return dataclasses.replace(manifest, artifacts={**manifest.artifacts, "trees": LIBRARY_NAME}, tree_backend=TREE_BACKEND)


def export_trained(trained: str | os.PathLike[str], store: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, name: str, margin: float, aoti: bool = True, threads: int = 1,
                   aoti_precision: str = "float32") -> dict[str, Path]:
    """Export a ``trained.pt`` (physical-units module) with the manifest of its store; an xgboost
    model's booster is also compiled to C (``threads`` gcc jobs). ``aoti_precision`` (``float32``,
    ``bfloat16`` or ``auto``, :func:`resolve_aoti_precision`) applies to an MLP's ``.pt2``; the other
    kinds' stay float32 (the trees run compiled to C; the CNN's is not made for it)."""
    from nudgeml.data import Segment, SplitArrays
    from nudgeml.models.common import load_trained
    from nudgeml.models.registry import MODEL_KINDS

    obj = load_trained(trained)
    if obj["kind"] not in MODEL_KINDS:
        raise InputError(f"{trained}: model kind {obj['kind']!r} is not one of this package's ({', '.join(MODEL_KINDS)})")
    manifest = manifest_from_store(store, name=name, kind=obj["kind"], margin=margin)
    hidden = hidden_widths(obj["module"])
    precision = resolve_aoti_precision(aoti_precision, hidden=hidden)
    if aoti_precision == "auto":
        log.info("export.aoti_precision auto: %s (hidden widths %s, bfloat16 from %d where the CPU has its dot products)",
                 precision, hidden, BFLOAT16_MIN_HIDDEN)
    if precision != "float32" and not isinstance(obj["module"], NormalizedModel):
        log.info("%s: a %s model's model.pt2 stays float32 (%s asked for an MLP's)", trained, obj["kind"], precision)
        precision = "float32"
    if obj["kind"] == "xgboost":  # trees online: the ensemble compiled to C (nudgeml.trees)
        manifest = export_compiled_trees(Path(trained).parent / "booster.ubj", obj["module"], manifest, out_dir, threads=threads)
    if MODEL_KINDS[obj["kind"]].reads_fields:  # a field model: the example is a whole grid (mid-range)
        return export_model(obj["module"].eval(), manifest, out_dir, aoti=aoti, aoti_precision=precision)
    train = SplitArrays(store, "train")
    x, _ = train.read(Segment(0, min(train.n_rows, 16)))  # real columns as the export example
    return export_model(obj["module"].eval(), manifest, out_dir, torch.from_numpy(x), aoti=aoti, aoti_precision=precision)
