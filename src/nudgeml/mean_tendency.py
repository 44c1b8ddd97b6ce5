"""Mean nudging tendency: the baseline correction the ML one must beat.

The time mean of the nudging tendency (per grid point and level) over the **training** period only
(the training split's time blocks in the store), as one mean and as a monthly climatology. A calendar
month without training data takes the overall mean (a single-season mean hurts in another season, so
the report shows which months were actually covered).

Output (canonical layout, m s-2): ``du_mean``/``dv_mean`` ``(lev, lat, lon)``; ``du_monthly``/``dv_monthly``
``(month, lev, lat, lon)``; ``samples_per_month``. When the nudged run relaxed temperature / humidity
too (``nudging.t`` / ``nudging.q``: ``guide_ins`` holds LMDZ's ``teta`` / ``q``), the same for them:
``dt_mean``, ``dt_monthly`` (K s-1) and ``dq_mean``, ``dq_monthly`` (kg kg-1 s-1), over the same blocks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from nudgeml.atomic import atomic_path
from nudgeml.conventions import read_target
from nudgeml.errors import InputError
from nudgeml.shard import open_store
from nudgeml.split import in_blocks, recorded_blocks


TimeBlocks = Sequence[tuple[np.datetime64, np.datetime64]]

#: the tendencies a mean file can hold, in this order, with their units (the winds always)
VARIABLES = {"du": "m s-2", "dv": "m s-2", "dt": "K s-1", "dq": "kg kg-1 s-1"}
_LONG_NAMES = {"du": "zonal wind", "dv": "meridional wind", "dt": "temperature", "dq": "specific humidity"}


def split_blocks(store: str | os.PathLike[str], split: str) -> list[tuple[np.datetime64, np.datetime64]]:
    """One split's time blocks ``[(first, last), ...]`` (inclusive) as the store records them; empty
    when the split is (:func:`nudgeml.split.recorded_blocks`)."""
    return recorded_blocks(open_store(store).attrs["splits"].get(split, {}))


def training_blocks(store: str | os.PathLike[str]) -> list[tuple[np.datetime64, np.datetime64]]:
    """The training split's time blocks (:func:`split_blocks`); an empty training split is an error."""
    blocks = split_blocks(store, "train")
    if not blocks:
        raise InputError(f"{store}: the training split is empty")
    return blocks


def mean_tendency(guide: str | os.PathLike[str], blocks: TimeBlocks, correction: str | os.PathLike[str] | None = None) -> xr.Dataset:
    """The time mean of the nudging tendency in ``guide`` over the time ``blocks`` (inclusive).

    With ``correction`` (a nudged run of the mean-corrected model, :mod:`nudgeml.iterate`) it is the
    mean of correction + residual nudging, i.e. the previous mean plus the mean residual: the next
    mean of an iterated mean-tendency correction.
    """
    g = read_target(guide, correction, chunks={"TIME": 64})
    if not np.issubdtype(g["time"].dtype, np.datetime64):
        raise InputError(f"{guide}: has no TIME values; the training period cannot be selected")
    spans = [(str(np.datetime64(a, "s")), str(np.datetime64(b, "s"))) for a, b in blocks]
    names = [k for k in VARIABLES if k in g]  # du, dv and, when nudged, dt, dq
    sel = g[names].isel(time=np.flatnonzero(in_blocks(g["time"].values, spans)))
    if sel.sizes["time"] == 0:
        raise InputError(f"{guide}: no nudging tendency in the training blocks {spans}")
    annual = sel.mean("time").load()
    month = sel["time"].dt.month
    monthly = sel.groupby(month).mean("time").load()
    counts = sel["du"].isel(lev=0, lat=0, lon=0).groupby(month).count().load()
    months = np.arange(1, 13)
    monthly = monthly.reindex(month=months)
    counts = counts.reindex(month=months, fill_value=0)
    variables: dict[str, xr.DataArray] = {}
    for k in names:
        variables[f"{k}_mean"] = annual[k].astype(np.float32).assign_attrs(units=VARIABLES[k], long_name=f"mean {_LONG_NAMES[k]} nudging tendency over the training period")
        variables[f"{k}_monthly"] = monthly[k].where(counts > 0, annual[k]).astype(np.float32).assign_attrs(
            units=VARIABLES[k], long_name=f"monthly climatology of the {_LONG_NAMES[k]} nudging tendency (months without data: the overall mean)"
        )
    ds = xr.Dataset(
        {**variables, "samples_per_month": counts.astype(np.int32).drop_vars([c for c in counts.coords if c != "month"])},
        attrs={"training_start": spans[0][0], "training_end": spans[-1][1], "training_blocks": json.dumps(spans), "n_samples": int(sel.sizes["time"]), "source": str(guide), **({"correction": str(correction)} if correction is not None else {})},
    )
    ds.attrs["variables"] = " ".join(names)
    return ds


def mean_variables(ds: xr.Dataset) -> tuple[str, ...]:
    """The tendencies a mean file holds (annual and monthly), in :data:`VARIABLES` order."""
    return tuple(k for k in VARIABLES if f"{k}_mean" in ds and f"{k}_monthly" in ds)


def write_mean_tendency(ds: xr.Dataset, out: str | os.PathLike[str]) -> Path:
    with atomic_path(out) as tmp:
        ds.to_netcdf(tmp)
    return Path(out)


def read_mean_tendency(path: str | os.PathLike[str]) -> xr.Dataset:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: mean tendency file not found")
    ds = xr.open_dataset(path).load()
    for name in ("du_mean", "dv_mean", "du_monthly", "dv_monthly"):
        if name not in ds:
            raise InputError(f"{path}: mean tendency file has no {name!r}")
    for k in ("dt", "dq"):  # optional, but as a pair of annual and monthly
        if (f"{k}_mean" in ds) != (f"{k}_monthly" in ds):
            raise InputError(f"{path}: mean tendency file has {k + '_mean' if k + '_mean' in ds else k + '_monthly'!r} without {k + '_monthly' if k + '_mean' in ds else k + '_mean'!r}")
    return ds
