"""ERA5 as GRIB (``era5.cds.data_format: grib``), read through the ``cdo`` the regrid stage already uses.

GRIB is the CDS's native format: the CDS converts it to netCDF on request, and ECMWF calls that
netCDF "not a long-term stable format". CDO reads ERA5 GRIB natively and writes netCDF, so the
regrid stage takes a GRIB file where it takes a netCDF one (``cdo -f nc4 remapbil ... file.grib``).

Names: this CDO is built on ecCodes (``cdo --config has-cgribex`` is ``no``), so its variable names
are ecCodes' ``shortName`` of the paramId (``u`` 131, ``v`` 132, ``t`` 130, ``q`` 133, ``z`` 129,
``sp`` 134, ``tp`` 228, ``lsm`` 172: the names the netCDF files carry). ``cdo -t ecmwf`` is not
used: on CDO 2.1.1 with ecCodes it aborts (``basic_string: construction from null``) on real ERA5
GRIB. Levels: ``isobaricInhPa`` comes out as CDO level type 100 with levels in Pa; times are
the validity times (``dataDate``/``dataTime`` + ``step``), as the netCDF ``valid_time``.

Checks (:func:`check_era5_grib`), each failing with one :class:`InputError` naming the file:
the file starts with ``GRIB`` and its last message ends with ``7777`` (a cut download does not);
cdo scans it without a warning of an inconsistent or corrupt record; every variable of the kind is
there exactly once (an ensemble request gives one per member), pressure-level variables on
pressure levels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nudgeml.errors import InputError

#: The end of every GRIB message; ECMWF pads messages with zero bytes after it.
GRIB_END = b"7777"
#: CDO's level type of ``isobaricInhPa`` (GRIB1 indicatorOfTypeOfLevel 100; levels then in Pa).
CDO_LTYPE_PRESSURE = 100
#: What CDO says on stderr when a GRIB file's records do not add up (a cut or corrupt file).
_CDO_TROUBLE = ("Inconsistent timestep", "Parameter not found", "corrupted", "Inconsistent length", "ECCODES ERROR", "Abort")


def is_grib(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts like a GRIB file (edition 1 or 2)."""
    with Path(path).open("rb") as fh:
        return fh.read(4) == b"GRIB"


@dataclass(frozen=True)
class GribInventory:
    """What CDO sees in a GRIB file: one entry per CDO variable, in file order."""

    names: tuple[str, ...]
    levels: tuple[tuple[float, ...], ...]  # per variable, as CDO gives them (Pa for pressure levels)
    on_pressure_levels: frozenset[str]  # names of the variables on isobaricInhPa
    times: np.ndarray  # validity times, datetime64[s]

    def levels_hpa(self, name: str) -> list[float]:
        """Pressure levels of ``name`` in hPa, decreasing; empty if it is not on pressure levels."""
        if name not in self.on_pressure_levels:
            return []
        return sorted((p / 100.0 for p in self.levels[self.names.index(name)]), reverse=True)


def _cdo_show(path: Path, operator: str, *select: str) -> str:
    exe = shutil.which("cdo")
    if exe is None:
        raise InputError(f"{path}: reading GRIB needs the 'cdo' program, not on PATH (Debian: apt-get install cdo; Jean Zay: module load cdo)")
    res = subprocess.run([exe, "-s", operator, *select, str(path)], capture_output=True, text=True)
    trouble = [line.strip() for line in res.stderr.splitlines() if any(t in line for t in _CDO_TROUBLE)]
    if res.returncode != 0 or trouble:
        detail = (trouble or [line.strip() for line in res.stderr.splitlines() if line.strip()] or [f"exit status {res.returncode}"])[0]
        raise InputError(f"{path}: not a complete GRIB file (cdo {operator}: {detail}); download it again")
    return res.stdout


def grib_inventory(path: str | os.PathLike[str]) -> GribInventory:
    """Variables, level types, levels and validity times of a GRIB file, through ``cdo -s show*``.

    Raises :class:`InputError` naming ``path`` if it is missing, not GRIB, cut short or corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: GRIB file not found")
    if not is_grib(path):
        raise InputError(f"{path}: not a GRIB file (does not start with 'GRIB')")
    with path.open("rb") as fh:  # the last message's end marker, then nothing but ECMWF's zero padding
        fh.seek(max(0, path.stat().st_size - 4096))
        tail = fh.read()
    end = tail.rfind(GRIB_END)  # a cut inside a run of packed zeros finds an earlier message's end, followed by 'GRIB'
    if end < 0 or tail[end + len(GRIB_END):].strip(b"\x00"):
        raise InputError(f"{path}: GRIB file cut short (its last message does not end with '7777'); download it again")
    names = tuple(_cdo_show(path, "showname").split())
    levels = tuple(tuple(float(x) for x in line.split()) for line in _cdo_show(path, "showlevel").splitlines() if line.strip())
    ltypes = {int(x) for x in _cdo_show(path, "showltype").split()}  # the file's level types (not per variable)
    if ltypes == {CDO_LTYPE_PRESSURE}:  # a pressure-level download: no second scan of the file
        on_pl = frozenset(names)
    elif CDO_LTYPE_PRESSURE in ltypes:
        on_pl = frozenset(_cdo_show(path, "showname", f"-selltype,{CDO_LTYPE_PRESSURE}").split())
    else:
        on_pl = frozenset()
    stamps = _cdo_show(path, "showtimestamp").split()
    times = np.array(sorted(np.datetime64(s, "s") for s in stamps), dtype="datetime64[s]")
    if len(names) != len(levels):
        raise InputError(f"{path}: cdo lists {len(names)} variables but {len(levels)} level sets")
    return GribInventory(names=names, levels=levels, on_pressure_levels=on_pl, times=times)


def check_era5_grib(path: str | os.PathLike[str], kind: str, names: tuple[str, ...], has_levels: bool) -> GribInventory:
    """Raise :class:`InputError` naming the file and the problem unless ``path`` is a readable GRIB
    file with each of ``names`` exactly once (on pressure levels when ``has_levels``); return its
    inventory."""
    path = Path(path)
    inv = grib_inventory(path)
    for name in names:
        count = inv.names.count(name)
        if count == 0:
            raise InputError(f"{path}: ERA5 {kind} GRIB file has no variable {name!r} (has {sorted(set(inv.names))})")
        if count > 1:
            raise InputError(f"{path}: ERA5 {kind} GRIB file has {count} fields named {name!r} (ensemble members or several level types?); "
                             "the workflow requests product_type 'reanalysis' on one level type")
        if has_levels and name not in inv.on_pressure_levels:
            raise InputError(f"{path}: ERA5 {kind} GRIB variable {name!r} is not on pressure levels (isobaricInhPa)")
    if kind != "invariant" and inv.times.size == 0:
        raise InputError(f"{path}: ERA5 {kind} GRIB file has zero time steps")
    return inv
