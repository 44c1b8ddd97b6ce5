"""Extract: nudged-run history (LMDZ conventions) -> one table of samples = (grid column, time).

Inputs per sample: u, v, T, q on every level and the surface pressure (physical units, the state at the
window start), plus optional geographic features; targets: the window-mean nudging tendency du, dv on
every level (m s-2), and with temperature and humidity nudged also dt (K s-1) and dq (kg kg-1 s-1). The
files are read lazily (dask) and written one dask block (``time_chunk`` steps) at a time, so memory
stays bounded for LMDZ-sized runs (144 x 142 columns, 79 levels).

The feature order is the exported model's contract (``docs/model-format.md``): per-level blocks
surface first, then single-level features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nudgeml.conventions import read_histhf, read_target
from nudgeml.errors import InputError
from nudgeml.grid import read_model_grid
from nudgeml.ncstream import StreamingNetCDF, VarSpec, seconds_since

log = logging.getLogger(__name__)

#: Units of everything a sample can hold.
UNITS = {
    "u": "m s-1", "v": "m s-1", "t": "K", "q": "kg kg-1", "ps": "Pa",
    "sin_lat": "1", "cos_lat": "1", "land_fraction": "1", "cos_zenith": "1",
    "du": "m s-2", "dv": "m s-2", "dt": "K s-1", "dq": "kg kg-1 s-1",
}
LEVEL_INPUTS = ("u", "v", "t", "q")
SURFACE_INPUTS = ("ps",)
GEO_FEATURES = ("sin_lat", "cos_lat", "land_fraction", "cos_zenith")
TARGETS = ("du", "dv", "dt", "dq")
DEFAULT_TARGETS = ("du", "dv")
#: the guide_ins variable each target is read from (LMDZ guide_out names), for error messages
TARGET_SOURCES = {"du": "ucov", "dv": "vcov", "dt": "teta", "dq": "q"}


@dataclass(frozen=True)
class ColumnSpec:
    """What a sample holds. ``history_names`` maps canonical names to the history file's (LMDZ's by default)."""

    level_inputs: tuple[str, ...] = LEVEL_INPUTS
    surface_inputs: tuple[str, ...] = SURFACE_INPUTS
    geo: tuple[str, ...] = ()
    targets: tuple[str, ...] = DEFAULT_TARGETS
    history_names: Mapping[str, str] = field(default_factory=lambda: {"u": "vitu", "v": "vitv", "t": "temp", "q": "ovap", "ps": "psol"})

    def __post_init__(self) -> None:
        for name in self.level_inputs:
            if name not in LEVEL_INPUTS:
                raise InputError(f"unknown per-level input {name!r}; known: {LEVEL_INPUTS}")
        for name in self.surface_inputs:
            if name not in SURFACE_INPUTS:
                raise InputError(f"unknown surface input {name!r}; known: {SURFACE_INPUTS}")
        for name in self.geo:
            if name not in GEO_FEATURES:
                raise InputError(f"unknown geographic feature {name!r}; known: {GEO_FEATURES}")
        for name in self.targets:
            if name not in TARGETS:
                raise InputError(f"unknown target {name!r}; known: {TARGETS}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "ColumnSpec":
        names = {"u": "vitu", "v": "vitv", "t": "temp", "q": "ovap", "ps": "psol"}
        names.update(section.get("history_names", {}))
        return cls(
            level_inputs=tuple(section.get("level_inputs", LEVEL_INPUTS)),
            surface_inputs=tuple(section.get("surface_inputs", SURFACE_INPUTS)),
            geo=tuple(section.get("geo", ())),
            targets=tuple(section.get("targets", DEFAULT_TARGETS)),
            history_names=names,
        )

    def feature_blocks(self, nlev: int) -> list[dict[str, Any]]:
        blocks = [{"name": n, "units": UNITS[n], "levels": nlev} for n in self.level_inputs]
        blocks += [{"name": n, "units": UNITS[n], "levels": 1} for n in (*self.surface_inputs, *self.geo)]
        return blocks

    def target_blocks(self, nlev: int) -> list[dict[str, Any]]:
        return [{"name": n, "units": UNITS[n], "levels": nlev} for n in self.targets]


def expand_names(blocks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Block list -> column names (``u_000`` ... surface first; single-level blocks keep their name)."""
    names: list[str] = []
    for b in blocks:
        if b["levels"] == 1:
            names.append(b["name"])
        else:
            names += [f"{b['name']}_{k:03d}" for k in range(b["levels"])]
    return names


def cos_solar_zenith(times: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Cosine of the solar zenith angle ``(time, column)`` (negative at night), a simple ephemeris.

    Declination from the day of year (Cooper 1969), hour angle from UTC and longitude; accurate to a
    degree or so, plenty for a feature.
    """
    t = np.asarray(times, dtype="datetime64[s]")
    doy = (t - t.astype("datetime64[Y]")).astype("timedelta64[s]").astype(np.float64) / 86400.0
    hours = (t - t.astype("datetime64[D]")).astype("timedelta64[s]").astype(np.float64) / 3600.0
    decl = np.deg2rad(23.44) * np.sin(2 * np.pi * (284.0 + doy + 1.0) / 365.0)
    lat = np.deg2rad(np.asarray(lat_deg, np.float64))[None, :]
    hour_angle = np.deg2rad(15.0 * (hours[:, None] - 12.0) + np.asarray(lon_deg, np.float64)[None, :])
    return np.sin(lat) * np.sin(decl)[:, None] + np.cos(lat) * np.cos(decl)[:, None] * np.cos(hour_angle)


def _aligned_times(hist: xr.Dataset, guide: xr.Dataset, histhf: Path, guide_path: Path) -> xr.Dataset:
    """Give the guide the history's time axis after checking they are the same axis."""
    ht = hist["time"].values
    gt = guide["time"].values
    if np.issubdtype(gt.dtype, np.integer):  # LMDZ's guide_ins has no TIME values: records must pair up
        if gt.size != ht.size:
            raise InputError(f"time axes differ: {histhf} has {ht.size} records, {guide_path} has {gt.size} (no TIME values to align)")
        return guide.assign_coords(time=ht)
    if gt.size != ht.size or not np.array_equal(gt.astype("datetime64[s]"), ht.astype("datetime64[s]")):
        only_h = np.setdiff1d(ht, gt)
        only_g = np.setdiff1d(gt, ht)
        raise InputError(
            f"time axes differ between the state ({histhf}: {ht.size} times) and the tendency ({guide_path}: {gt.size} times); "
            f"first only in state: {only_h[:1]}, first only in tendency: {only_g[:1]}"
        )
    return guide


class ColumnFeatures:
    """:func:`column_features` on one grid: the static inputs (latitude, land) computed once.

    The online call builds its columns' features every window; this is the one implementation, so the
    features of training and of the free run cannot drift apart.
    """

    def __init__(self, spec: ColumnSpec, *, lat_deg: np.ndarray, lon_deg: np.ndarray, land_fraction: np.ndarray | None = None) -> None:
        lat2d, lon2d = np.meshgrid(lat_deg, lon_deg, indexing="ij")
        self.spec = spec
        self.col_lat, self.col_lon = lat2d.ravel(), lon2d.ravel()
        self.ncol = self.col_lat.size
        self.static: dict[str, np.ndarray] = {}  # (column,) float32 per static geographic input
        for name in spec.geo:
            if name == "sin_lat":
                self.static[name] = np.sin(np.deg2rad(self.col_lat)).astype(np.float32)
            elif name == "cos_lat":
                self.static[name] = np.cos(np.deg2rad(self.col_lat)).astype(np.float32)
            elif name == "land_fraction":
                if land_fraction is None:
                    raise InputError("feature 'land_fraction' needs the model grid file")
                if np.shape(land_fraction) != lat2d.shape:
                    raise InputError(f"land fraction is {np.shape(land_fraction)}, the grid is {lat2d.shape}")
                self.static[name] = np.asarray(land_fraction).ravel().astype(np.float32)

    def __call__(self, fields: Mapping[str, np.ndarray], times: np.ndarray) -> np.ndarray:
        """Inputs ``(time, column, feature)`` from ``fields`` at ``times`` (:func:`column_features`)."""
        spec, ncol = self.spec, self.ncol
        nt = np.asarray(times).size
        levels = [np.asarray(fields[name], np.float32) for name in spec.level_inputs]
        n_features = sum(a.shape[1] for a in levels) + len(spec.surface_inputs) + len(spec.geo)
        x = np.empty((nt, ncol, n_features), np.float32)  # filled in place: no list of parts to concatenate
        j = 0
        for name, a in zip(spec.level_inputs, levels):
            nlev = a.shape[1]
            block = a.reshape(nt, nlev, ncol).transpose(0, 2, 1)
            if name == "q":
                # negative specific humidity is a transport undershoot (spectral models such as jcm make
                # it at the upper levels, more in free runs than in nudged ones): read it as dry. Left
                # negative, it sent most free-run columns out of the training range (the guard's fallback)
                np.maximum(block, np.float32(0.0), out=x[:, :, j:j + nlev])
            else:
                x[:, :, j:j + nlev] = block
            j += nlev
        for name in spec.surface_inputs:
            x[:, :, j] = np.asarray(fields[name], np.float32).reshape(nt, ncol)
            j += 1
        for name in spec.geo:
            # cos_zenith changes with time; the others are the grid's
            x[:, :, j] = self.static[name] if name in self.static else cos_solar_zenith(np.asarray(times), self.col_lat, self.col_lon)
            j += 1
        return x


def column_features(fields: Mapping[str, np.ndarray], spec: ColumnSpec, *, lat_deg: np.ndarray, lon_deg: np.ndarray, times: np.ndarray, land_fraction: np.ndarray | None = None) -> np.ndarray:
    """Inputs ``(time, column, feature)`` from canonical fields, in the manifest's feature order.

    ``fields`` holds the per-level inputs ``(time, lev, lat, lon)`` (level 0 at the surface) and the
    surface inputs ``(time, lat, lon)``; columns are (lat, lon) row-major. This one function builds the
    features both for training (extract) and online (the ML free run, through :class:`ColumnFeatures`),
    so the two cannot drift apart.
    """
    return ColumnFeatures(spec, lat_deg=lat_deg, lon_deg=lon_deg, land_fraction=land_fraction)(fields, times)


def column_targets(fields: Mapping[str, np.ndarray], spec: ColumnSpec) -> np.ndarray:
    """Targets ``(time, column, target)`` from canonical ``(time, lev, lat, lon)`` tendencies."""
    parts = []
    for name in spec.targets:
        a = np.asarray(fields[name], np.float32)
        parts.append(a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 2, 1))
    return np.concatenate(parts, axis=2)


def column_dataset(histhf: str | os.PathLike[str], guide: str | os.PathLike[str], grid_nc: str | os.PathLike[str] | None, spec: ColumnSpec, *, time_chunk: int = 8, correction: str | os.PathLike[str] | None = None) -> xr.Dataset:
    """Lazy ``inputs (time, column, feature)`` and ``targets (time, column, target)`` (dask, by time chunk).

    ``grid_nc`` provides the land fraction (the model grid file); needed only with ``land_fraction``.
    ``correction``: the correction a corrected nudged run applied (iterative training); the target is
    then the nudging tendency plus it (:func:`nudgeml.conventions.read_target`).
    """
    import dask
    import dask.array as da

    histhf, guide = Path(histhf), Path(guide)
    names = {k: spec.history_names[k] for k in (*spec.level_inputs, *spec.surface_inputs)}
    hist = read_histhf(histhf, names, chunks={"time_counter": time_chunk})
    g = read_target(guide, correction, chunks={"TIME": time_chunk})
    for name in spec.targets:
        if name not in g:
            hint = " (is the run nudging T / q? nudging.t, nudging.q)" if name in ("dt", "dq") else ""
            raise InputError(f"{guide}: no nudging tendency {name!r} (from {TARGET_SOURCES[name]!r}){hint}")
    g = _aligned_times(hist, g, histhf, guide)
    if hist.sizes["lat"] != g.sizes["lat"] or hist.sizes["lon"] != g.sizes["lon"] or not (
        np.allclose(hist["lat"].values, g["lat"].values, atol=1e-3) and np.allclose(hist["lon"].values, g["lon"].values, atol=1e-3)
    ):
        raise InputError(f"grids differ: {histhf} is {hist.sizes['lat']}x{hist.sizes['lon']}, {guide} is {g.sizes['lat']}x{g.sizes['lon']}")
    if hist.sizes["lev"] != g.sizes["lev"]:
        raise InputError(f"levels differ: {histhf} has {hist.sizes['lev']}, {guide} has {g.sizes['lev']}")
    # both label the model levels by presnivs (Pa): LMDZ's histories and guide_out alike
    if not np.allclose(hist["lev"].values, g["lev"].values, rtol=1e-3):
        raise InputError(f"levels differ: {histhf} presnivs {hist['lev'].values[:2].tolist()}.., {guide} LEVEL {g['lev'].values[:2].tolist()}..")
    nlev = hist.sizes["lev"]
    lat, lon = hist["lat"].values.astype(np.float64), hist["lon"].values.astype(np.float64)
    land = None
    if "land_fraction" in spec.geo:
        if grid_nc is None:
            raise InputError("feature 'land_fraction' needs the model grid file")
        model_grid = read_model_grid(grid_nc)
        if model_grid.land_fraction.shape != (lat.size, lon.size) or not (
            np.allclose(model_grid.lat_deg, lat, atol=1e-3) and np.allclose(model_grid.lon_deg, lon, atol=1e-3)
        ):  # e.g. the stand-in's grid file beside LMDZ's histories: the land fraction of other points
            raise InputError(f"{grid_nc}: model grid {model_grid.lat_deg.size}x{model_grid.lon_deg.size} is not the grid of {histhf} "
                             f"({lat.size}x{lon.size}): it must be the run's backend's grid")
        land = model_grid.land_fraction
    times = hist["time"].values
    ncol = lat.size * lon.size
    fblocks, tblocks = spec.feature_blocks(nlev), spec.target_blocks(nlev)
    nfeat, ntarg = sum(b["levels"] for b in fblocks), sum(b["levels"] for b in tblocks)

    def inputs_block(i0: int, i1: int) -> np.ndarray:
        block = hist.isel(time=slice(i0, i1)).load()
        return column_features({k: block[k].values for k in names}, spec, lat_deg=lat, lon_deg=lon, times=times[i0:i1], land_fraction=land)

    def targets_block(i0: int, i1: int) -> np.ndarray:
        block = g.isel(time=slice(i0, i1))[list(spec.targets)].load()
        return column_targets({k: block[k].values for k in spec.targets}, spec)

    starts = range(0, times.size, time_chunk)
    inputs = da.concatenate([da.from_delayed(dask.delayed(inputs_block)(i, min(i + time_chunk, times.size)), (min(i + time_chunk, times.size) - i, ncol, nfeat), np.float32) for i in starts])
    targets = da.concatenate([da.from_delayed(dask.delayed(targets_block)(i, min(i + time_chunk, times.size)), (min(i + time_chunk, times.size) - i, ncol, ntarg), np.float32) for i in starts])
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    return xr.Dataset(
        {"inputs": (("time", "column", "feature"), inputs), "targets": (("time", "column", "target"), targets)},
        coords={
            "time": ("time", times),
            "column_lat": ("column", lat2d.ravel()),
            "column_lon": ("column", lon2d.ravel()),
            "feature": ("feature", np.array(expand_names(fblocks), dtype=object)),
            "target": ("target", np.array(expand_names(tblocks), dtype=object)),
            "presnivs": ("lev", hist["lev"].values.astype(np.float64)),
        },
        attrs={
            "feature_blocks": json.dumps(fblocks),
            "target_blocks": json.dumps(tblocks),
            "level_order": "surface_first",
            "grid_shape": json.dumps([int(lat.size), int(lon.size)]),
            "sources": json.dumps([str(histhf), str(guide)] + ([str(correction)] if correction is not None else [])),
        },
    )


def file_digest(paths: Sequence[str | os.PathLike[str]], block: int = 1 << 20) -> str:
    """SHA-256 over the bytes of ``paths`` (the training data's identity, recorded in manifests)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            while chunk := fh.read(block):
                h.update(chunk)
    return h.hexdigest()


def write_columns(ds: xr.Dataset, out: str | os.PathLike[str]) -> Path:
    """Stream the column table to NetCDF, one time step per record, one time block in memory (bounded)."""
    ntime, ncol = ds.sizes["time"], ds.sizes["column"]
    nfeat, ntarg = ds.sizes["feature"], ds.sizes["target"]
    epoch = np.datetime64(ds["time"].values[0], "s")
    coords = {
        "column_lat": (("column",), ds["column_lat"].values, {"units": "degrees_north"}),
        "column_lon": (("column",), ds["column_lon"].values, {"units": "degrees_east"}),
        "feature": (("feature",), np.array(ds["feature"].values, dtype=object), {}),
        "target": (("target",), np.array(ds["target"].values, dtype=object), {}),
        "presnivs": (("lev",), ds["presnivs"].values, {"units": "Pa", "order": "surface_first"}),
    }
    writer = StreamingNetCDF(
        out,
        time_dim="time",
        time_var=VarSpec(("time",), "f8", {"units": f"seconds since {str(epoch).replace('T', ' ')}", "calendar": "gregorian"}),
        dims={"column": ncol, "feature": nfeat, "target": ntarg, "lev": ds.sizes["lev"]},
        coords=coords,
        records={
            "inputs": VarSpec(("time", "column", "feature"), "f4", {"long_name": "column state at the window start, physical units"}),
            "targets": VarSpec(("time", "column", "target"), "f4", {"units": "per target block (target_blocks): du, dv m s-2; dt K s-1; dq kg kg-1 s-1", "long_name": "window-mean nudging tendency"}),
        },
        global_attrs=dict(ds.attrs),
    )
    # one dask block (time_chunk steps) loaded at a time, then written step by step: loading step by
    # step recomputed the whole block for every step in it (8x the reads; benchmarks/data_path.py)
    chunks = ds["inputs"].chunks
    sizes = chunks[0] if chunks is not None else (1,) * ntime
    try:
        i0 = 0
        for size in sizes:
            block = ds[["inputs", "targets"]].isel(time=slice(i0, i0 + size)).load()
            for k in range(size):
                writer.append(seconds_since([ds["time"].values[i0 + k]], epoch)[0], inputs=block["inputs"].values[k], targets=block["targets"].values[k])
            del block
            i0 += size
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def open_columns(path: str | os.PathLike[str]) -> xr.Dataset:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: column table not found")
    ds = xr.open_dataset(path, chunks={"time": 1})
    for name in ("inputs", "targets", "feature", "target"):
        if name not in ds.variables:
            raise InputError(f"{path}: column table has no {name!r}")
    return ds
