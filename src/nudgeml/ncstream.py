"""Streaming NetCDF writer: one record along an unlimited time axis per ``append``.

Runs write their output window by window, so memory stays bounded whatever the run length. The file
is written under a temporary name and renamed when closed: readers never see a half-written file
under the final name. A run that fails can keep what it wrote under a ``.failed`` name instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np


@dataclass(frozen=True)
class VarSpec:
    """One variable: its dimensions (time first for records), dtype and attributes."""

    dims: tuple[str, ...]
    dtype: str = "f4"
    attrs: Mapping[str, Any] = field(default_factory=dict)


class StreamingNetCDF:
    """Write a NetCDF4 file record by record along ``time_dim``.

    ``coords`` are static variables written once (name -> (dims, values, attrs)); ``records`` are the
    variables whose first dimension is ``time_dim``; ``time_var`` holds the time value of each record
    (seconds since ``time_units``' epoch, as CF numbers).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        time_dim: str,
        time_var: VarSpec,
        dims: Mapping[str, int],
        coords: Mapping[str, tuple[tuple[str, ...], np.ndarray, Mapping[str, Any]]],
        records: Mapping[str, VarSpec],
        global_attrs: Mapping[str, Any] | None = None,
        complevel: int = 1,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".tmp.nc", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._time_dim = time_dim
        self._n = 0
        self._ds = netCDF4.Dataset(self._tmp, "w", format="NETCDF4")
        try:
            self._ds.createDimension(time_dim, None)
            for name, size in dims.items():
                self._ds.createDimension(name, size)
            tv = self._ds.createVariable(time_dim, time_var.dtype, (time_dim,))
            tv.setncatts(dict(time_var.attrs))
            for name, (cdims, values, attrs) in coords.items():
                values = np.asarray(values)
                if values.dtype == object or values.dtype.kind == "U":  # names: variable-length strings
                    var = self._ds.createVariable(name, str, cdims)
                    for i, v in enumerate(values.ravel()):
                        var[i] = str(v)
                else:
                    var = self._ds.createVariable(name, values.dtype, cdims)
                    var[...] = values
                var.setncatts(dict(attrs))
            self._records = dict(records)
            for name, spec in self._records.items():
                if spec.dims[0] != time_dim:
                    raise ValueError(f"record variable {name!r} must have {time_dim!r} first, has {spec.dims}")
                if spec.dtype == "str":  # variable-length strings (e.g. ERA5's expver)
                    var = self._ds.createVariable(name, str, spec.dims)
                else:
                    chunks = [1] + [dims[d] for d in spec.dims[1:]]
                    var = self._ds.createVariable(
                        name, spec.dtype, spec.dims, zlib=complevel > 0, complevel=complevel or None, chunksizes=chunks
                    )
                var.setncatts(dict(spec.attrs))
            if global_attrs:
                self._ds.setncatts(dict(global_attrs))
        except BaseException:
            self._ds.close()
            self._tmp.unlink(missing_ok=True)
            raise

    @property
    def n_records(self) -> int:
        return self._n

    def append(self, time_value: float | int, **fields: np.ndarray) -> None:
        """Write one record; every record variable must be given, with its non-time shape."""
        missing = set(self._records) - set(fields)
        extra = set(fields) - set(self._records)
        if missing or extra:
            raise KeyError(f"{self.path}: record needs {sorted(self._records)}; missing {sorted(missing)}, unknown {sorted(extra)}")
        i = self._n
        self._ds.variables[self._time_dim][i] = time_value
        for name, value in fields.items():
            var = self._ds.variables[name]
            if var.dtype is str:
                var[i] = str(value)
                continue
            expected = var.shape[1:]
            value = np.asarray(value)
            if value.shape != expected:
                raise ValueError(f"{self.path}: {name!r} record has shape {value.shape}, expected {expected}")
            var[i, ...] = value
        self._n += 1

    def set_attrs(self, **attrs: Any) -> None:
        self._ds.setncatts(attrs)

    def close(self) -> Path:
        """Finish the file and move it to its final name."""
        self._ds.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self, keep_as: str | os.PathLike[str] | None = None) -> Path | None:
        """Close without publishing; keep what was written under ``keep_as`` if given."""
        try:
            self._ds.close()
        except RuntimeError:
            pass
        if keep_as is not None and self._n > 0:
            os.replace(self._tmp, keep_as)
            return Path(keep_as)
        self._tmp.unlink(missing_ok=True)
        return None


def seconds_since(times: Sequence[np.datetime64] | np.ndarray, epoch: np.datetime64) -> np.ndarray:
    """Whole seconds between ``epoch`` and each time (CF time encoding)."""
    t = np.asarray(times, dtype="datetime64[s]")
    return (t - np.datetime64(epoch, "s")).astype(np.int64)
