"""The lmdz backend's model grid (nudgeml.lmdz_grid): LMDZ's physics grid, orography, land fraction and
hybrid levels read from reference start.nc / startphy.nc files written here with LMDZ's names and
shapes (dynredem0's start.nc, phyredem's startphy.nc), the truth regridded onto those hybrid levels by
the real cdo, and the mean tendency handed to LMDZ in its physics columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from factories import TIMES, smooth, write_era5
from nudgeml.errors import InputError
from nudgeml.gcm.registry import BACKENDS
from nudgeml.grid import read_hybrid_levels, read_model_grid
from nudgeml.lmdz_forcing import lmdz_points
from nudgeml.lmdz_grid import (
    canonical_to_rows,
    klon,
    mean_on_physics_grid,
    physics_to_rows,
    rows_to_canonical,
    rows_to_physics,
)
from nudgeml.regrid import regrid_month

IIM, JJM = 16, 10
# hybrid interfaces, surface first (ap in Pa): sigma-like near the ground, pressure aloft
AP = np.array([0.0, 1000.0, 3000.0, 6000.0, 8000.0, 5000.0, 0.0])
BP = np.array([1.0, 0.8, 0.55, 0.3, 0.1, 0.0, 0.0])
PREFF = 101325.0


def orography(lat_deg, lon_deg):
    """An analytic surface geopotential (m2 s-2), not symmetric in longitude (catches a wrong roll)."""
    la, lo = np.deg2rad(lat_deg), np.deg2rad(lon_deg)
    return 9.81 * (500.0 * np.cos(la) ** 2 * (1.0 + np.sin(lo)) + 100.0 * np.sin(la))


def land(lat_deg, lon_deg):
    return np.clip(np.sin(np.deg2rad(lon_deg)) + 0.5 * np.sin(np.deg2rad(lat_deg)), 0.0, 1.0)


def write_start(path: Path, *, iim=IIM, jjm=JJM, phis=None, drop=(), ap=AP, bp=BP, phis_name="phisinit", dtype=np.float64) -> Path:
    """start.nc as LMDZ's dynredem0 writes it: radians, north first, the periodic longitude repeated
    (LMDZE's restart.nc: ``phis_name="phis"``, float32)."""
    lon_s, lat_s = lmdz_points(iim, jjm, "scalar")
    lon_u, _ = lmdz_points(iim, jjm, "u")
    _, lat_v = lmdz_points(iim, jjm, "v")
    lo, la = np.meshgrid(lon_s, lat_s)
    presnivs = 0.5 * (ap[:-1] + ap[1:]) + 0.5 * (bp[:-1] + bp[1:]) * PREFF
    ds = xr.Dataset(
        {
            "controle": (("index",), np.zeros(100)),
            "rlonu": (("rlonu",), np.deg2rad(lon_u)), "rlatu": (("rlatu",), np.deg2rad(lat_s)),
            "rlonv": (("rlonv",), np.deg2rad(lon_s)), "rlatv": (("rlatv",), np.deg2rad(lat_v)),
            "ap": (("sig",), ap), "bp": (("sig",), bp), "presnivs": (("sigs",), presnivs),
            "cu": (("rlatu", "rlonu"), np.ones((jjm + 1, iim + 1))), "cv": (("rlatv", "rlonv"), np.ones((jjm, iim + 1))),
            phis_name: (("rlatu", "rlonv"), orography(la, lo) if phis is None else phis),
            "ps": (("temps", "rlatu", "rlonv"), np.full((1, jjm + 1, iim + 1), 1e5)),
        }
    ).drop_vars(list(drop))
    ds.astype(dtype).to_netcdf(path)
    return path


def physics_columns(iim=IIM, jjm=JJM):
    """Latitudes and longitudes (degrees) of the physics columns: north pole, rows from -180, south pole."""
    lon_s, lat_s = lmdz_points(iim, jjm, "scalar")
    lo, la = np.meshgrid(lon_s[:iim], lat_s[1:-1])
    return np.concatenate([[90.0], la.ravel(), [-90.0]]), np.concatenate([[0.0], lo.ravel(), [0.0]])


def write_startphy(path: Path, *, iim=IIM, jjm=JJM, drop=(), dim="points_physiques", dtype=np.float64) -> Path:
    """startphy.nc (LMDZE's restartphy.nc: ``dim="klon"``, float32)."""
    lat, lon = physics_columns(iim, jjm)
    ds = xr.Dataset({"longitude": ((dim,), lon), "latitude": ((dim,), lat),
                     "masque": ((dim,), land(lat, lon))}).drop_vars(list(drop))
    ds.astype(dtype).to_netcdf(path)
    return path


@pytest.fixture()
def reference(tmp_path):
    return {"start": write_start(tmp_path / "start.nc"), "startphy": write_startphy(tmp_path / "startphy.nc")}


def make_grid(reference, out: Path, iim=IIM, jjm=JJM):
    BACKENDS["lmdz"].runner("grid")({"lmdz": {"grid": {"iim": iim, "jjm": jjm}}}, reference, out / "model_grid.nc", out / "model_grid.txt")
    return out / "model_grid.nc", out / "model_grid.txt"


def test_grid_file_is_lmdz_physics_grid_with_its_orography_land_and_levels(reference, tmp_path):
    nc, txt = make_grid(reference, tmp_path)
    grid = read_model_grid(nc)
    # the physics grid: iim longitudes (no repeated point), jjm + 1 latitudes with the poles; canonical order
    assert grid.lon_deg.size == IIM and grid.lat_deg.size == JJM + 1
    np.testing.assert_allclose(grid.lat_deg[[0, -1]], [-90.0, 90.0])
    np.testing.assert_allclose(grid.lon_deg, np.arange(IIM) * 360.0 / IIM)
    lo, la = np.meshgrid(grid.lon_deg, grid.lat_deg)
    np.testing.assert_allclose(grid.surface_geopotential, orography(la, lo), rtol=1e-5, atol=1e-3)
    # land fraction from startphy's masque: a pole's one column fills its row
    interior = land(la, lo)
    np.testing.assert_allclose(grid.land_fraction[1:-1], interior[1:-1], atol=1e-6)
    np.testing.assert_allclose(grid.land_fraction[[0, -1]], land(np.array([[-90.0], [90.0]]), np.zeros((2, 1))) * np.ones((2, IIM)), atol=1e-6)
    # levels: presnivs labels them (as LMDZ's histories), the hybrid coefficients are the interfaces' means
    presnivs = 0.5 * (AP[:-1] + AP[1:]) + 0.5 * (BP[:-1] + BP[1:]) * PREFF
    np.testing.assert_allclose(grid.presnivs_pa, presnivs)
    a, b = read_hybrid_levels(nc)
    np.testing.assert_allclose(a, 0.5 * (AP[:-1] + AP[1:]))
    np.testing.assert_allclose(b, 0.5 * (BP[:-1] + BP[1:]))
    # the CDO description cdo regrids to: the same points
    text = txt.read_text()
    assert f"xsize     = {IIM}" in text and f"ysize     = {JJM + 1}" in text and "-90.0000000000" in text


def test_lmdze_start_files_give_the_grid_of_lmdze_histories(tmp_path):
    """LMDZE's ce0l writes restart.nc with the orography as ``phis`` (float32, radians) and
    restartphy.nc with ``masque(klon)``: read by the same reader, the grid is on the points of the
    histhf.nc LMDZE's guided run writes (nudgeml.lmdze_history), as read_histhf returns them (the
    orientation every stage reads), levels presnivs."""
    from nudgeml.conventions import histhf_record, open_histhf_writer, read_histhf
    from nudgeml.lmdz_grid import lmdz_grid_dataset, read_lmdz_grid
    from nudgeml.lmdze_history import histhf_grid

    iim, jjm = 16, 12  # LMDZE's default grid
    start = write_start(tmp_path / "restart.nc", iim=iim, jjm=jjm, phis_name="phis", dtype=np.float32)
    startphy = write_startphy(tmp_path / "restartphy.nc", iim=iim, jjm=jjm, dim="klon", dtype=np.float32)
    grid, ap_mid, bp_mid = read_lmdz_grid(start, startphy, iim, jjm, model="LMDZE", origin="ce0l", grid_key="lmdze")
    lo, la = np.meshgrid(grid.lon_deg, grid.lat_deg)
    np.testing.assert_allclose(grid.surface_geopotential, orography(la, lo), rtol=1e-5, atol=1e-2)  # phis, not phisinit
    np.testing.assert_allclose(grid.land_fraction[1:-1], land(la, lo)[1:-1], atol=1e-6)
    np.testing.assert_allclose(ap_mid, 0.5 * (AP[:-1] + AP[1:]), rtol=1e-6)
    nc = tmp_path / "model_grid.nc"
    lmdz_grid_dataset(grid, ap_mid, bp_mid, iim=iim, jjm=jjm, sources="test", backend="lmdze").to_netcdf(nc)
    g = read_model_grid(nc)
    with xr.open_dataset(nc) as ds:
        assert ds.attrs["backend"] == "lmdze" and "LMDZE" in ds.attrs["title"]
    # a histhf.nc as lmdze_history writes it (LMDZ's order in the file: north first, from -180 deg)
    hgrid = histhf_grid(iim, jjm, g.presnivs_pa)
    shape = (g.presnivs_pa.size, jjm + 1, iim)
    writer = open_histhf_writer(tmp_path / "histhf.nc", hgrid, epoch=np.datetime64("2000-01-31T00:00:00"), window_hours=6.0)
    writer.append(0.0, **histhf_record(hgrid, u=np.zeros(shape), v=np.zeros(shape), t=np.zeros(shape), q=np.zeros(shape),
                                        ps=np.zeros(shape[1:]), precip=np.zeros(shape[1:])))
    writer.close()
    with xr.open_dataset(tmp_path / "histhf.nc") as raw:
        assert raw["lat"].values[0] == 90.0 and raw["lon"].values[0] == -180.0  # the file itself: LMDZ's order
    h = read_histhf(tmp_path / "histhf.nc")
    np.testing.assert_array_equal(h["lat"].values, g.lat_deg.astype(np.float32))
    np.testing.assert_array_equal(h["lon"].values, g.lon_deg.astype(np.float32))
    np.testing.assert_allclose(h["lev"].values, g.presnivs_pa, rtol=1e-6)
    np.testing.assert_array_equal(g.lat_deg, hgrid.lat_deg)  # the grid is histhf_grid's, in float64 too
    np.testing.assert_array_equal(g.lon_deg, hgrid.lon_deg)
    assert g.lat_deg[0] == -90.0 and g.lat_deg[-1] == 90.0 and g.lon_deg[0] == 0.0 and g.lon_deg[-1] < 360.0


def test_standin_grid_has_no_hybrid_levels(tmp_path):
    from nudgeml.gcm.standin import ModelGrid
    from nudgeml.grid import write_model_grid

    g = ModelGrid(np.array([-45.0, 45.0]), np.array([0.0, 180.0]), np.array([0.9, 0.5]), np.zeros((2, 2)), np.zeros((2, 2)), 1)
    write_model_grid(g, tmp_path / "g.nc", tmp_path / "g.txt")
    assert read_hybrid_levels(tmp_path / "g.nc") is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: (d / "start.nc").unlink(), r"start.nc: LMDZ start file not found"),
        (lambda d: write_start(d / "start.nc", drop=("phisinit",)), r"start.nc: LMDZ start file has no orography \(none of \['phisinit', 'phis'\]"),
        (lambda d: write_start(d / "start.nc", drop=("ap",)), r"start.nc: LMDZ start file has no variable\(s\) \['ap'\]"),
        (lambda d: write_startphy(d / "startphy.nc", drop=("masque",)), r"startphy.nc: LMDZ physics start file has no variable\(s\) \['masque'\]"),
        (lambda d: write_start(d / "start.nc", iim=20), r"start.nc: rlonv has 21 points; lmdz.grid \{iim: 16, jjm: 10\} has 17"),
        (lambda d: write_startphy(d / "startphy.nc", jjm=8), r"startphy.nc: masque has 114 points; the 16x10 grid has klon = 146"),
        (lambda d: (d / "startphy.nc").write_text("not netcdf"), r"startphy.nc: LMDZ physics start file cannot be read as NetCDF"),
    ],
)
def test_bad_reference_files_are_named_and_nothing_written(reference, tmp_path, edit, message):
    edit(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match=message) as err:
        make_grid(reference, out)
    assert "\n" not in str(err.value)
    assert not list(out.iterdir())


def test_physics_columns_round_trip_and_canonical_order():
    lat, lon = physics_columns()
    rows = physics_to_rows(lat, IIM, JJM)
    assert rows.shape == (JJM + 1, IIM) and klon(IIM, JJM) == lat.size
    np.testing.assert_array_equal(rows_to_physics(rows), lat)
    f = np.arange(2 * (JJM + 1) * IIM, dtype=float).reshape(2, JJM + 1, IIM)
    np.testing.assert_array_equal(canonical_to_rows(rows_to_canonical(f, IIM), IIM), f)
    can = rows_to_canonical(physics_to_rows(lon, IIM, JJM), IIM)
    np.testing.assert_allclose(can[5], np.arange(IIM) * 360.0 / IIM - np.where(np.arange(IIM) * 360.0 / IIM >= 180, 360, 0))


def test_mean_tendency_goes_to_lmdz_in_its_physics_columns(reference, tmp_path):
    """du_mean(presnivs, points_physiques), the layout nudgeml_physiq_init reads (lmdz/INTEGRATION.md)."""
    nc, _ = make_grid(reference, tmp_path)
    grid = read_model_grid(nc)
    lo, la = np.meshgrid(grid.lon_deg, grid.lat_deg)
    nlev = grid.sigma.size
    field = np.stack([orography(la, lo) * (k + 1) for k in range(nlev)])
    field[:, [0, -1], :] = field[:, [0, -1], :1]  # a pole's value is the same along its row
    mean = xr.Dataset({"du_mean": (("lev", "lat", "lon"), field), "dv_mean": (("lev", "lat", "lon"), -field)},
                      coords={"lev": grid.presnivs_pa, "lat": grid.lat_deg, "lon": grid.lon_deg})
    out = mean_on_physics_grid(mean, IIM, JJM)
    assert out["du_mean"].dims == ("presnivs", "points_physiques") and out.sizes["points_physiques"] == klon(IIM, JJM)
    plat, plon = physics_columns()
    np.testing.assert_allclose(out["du_mean"].values[2], 3 * orography(plat, plon), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["presnivs"].values, grid.presnivs_pa)
    with pytest.raises(InputError, match=r"not LMDZ's 16x12 physics grid"):
        mean_on_physics_grid(mean, IIM, 12)


def test_truth_is_regridded_to_lmdz_hybrid_levels_and_poles(reference, tmp_path):
    """u = P(lat, lon) + 2 ln p + i, on LMDZ's layers p = a + b ps: known exactly, poles included. A
    flat LMDZ orography over a flat source keeps ps; the top layers (b = 0) are pure pressure levels."""
    reference["start"] = write_start(tmp_path / "start.nc", phis=np.zeros((JJM + 1, IIM + 1)))
    nc, txt = make_grid(reference, tmp_path)
    grid = read_model_grid(nc)
    hybrid = read_hybrid_levels(nc)
    paths = write_era5(tmp_path / "era5", np.linspace(-90.0, 90.0, 91), np.arange(180) * 2.0, ps_pa=98000.0)
    regrid_month(pressure_levels=paths["pressure_levels"], single_levels=paths["single_levels"], precipitation=paths["precipitation"],
                 invariant=paths["invariant"], grid=grid, grid_txt=txt, out_state=tmp_path / "out.nc", out_precip=tmp_path / "tp.nc",
                 threads=2, hybrid=hybrid)
    ds = xr.open_dataset(tmp_path / "out.nc")
    np.testing.assert_allclose(ds["lev"].values, grid.presnivs_pa)
    np.testing.assert_allclose(ds["lat"].values[[0, -1]], [-90.0, 90.0])
    p = hybrid[0][:, None, None] + hybrid[1][:, None, None] * 98000.0
    for i in range(len(TIMES)):
        expected = smooth(grid.lat_deg, grid.lon_deg)[None] + 2.0 * np.log(p) + i
        err = np.abs(ds["u"].values[i] - expected).max()
        assert err < 0.05, f"time {i}: max error {err:.3f} m/s"
    # on sigma levels (the stand-in's reading of the same grid) the upper layers would be off by far more
    sigma_p = grid.sigma[:, None, None] * 98000.0
    assert np.abs(2.0 * np.log(sigma_p[-1]) - 2.0 * np.log(p[-1])).max() > 0.01
    assert ds.attrs["model_levels"].startswith("hybrid")


def test_cli_writes_the_mean_lmdz_reads(reference, tmp_path, capsys):
    from nudgeml.cli import main

    nc, _ = make_grid(reference, tmp_path)
    grid = read_model_grid(nc)
    shape = (grid.sigma.size, grid.lat_deg.size, grid.lon_deg.size)
    field = np.ones(shape)
    mean = xr.Dataset({n: (("lev", "lat", "lon"), field) for n in ("du_mean", "dv_mean")}
                      | {n: (("month", "lev", "lat", "lon"), np.ones((12, *shape))) for n in ("du_monthly", "dv_monthly")},
                      coords={"lev": grid.presnivs_pa, "lat": grid.lat_deg, "lon": grid.lon_deg})
    mean.to_netcdf(tmp_path / "mean_tendency.nc")
    assert main(["lmdz-mean", str(tmp_path / "mean_tendency.nc"), str(tmp_path / "nudgeml_mean.nc"), "--iim", str(IIM), "--jjm", str(JJM)]) == 0
    with xr.open_dataset(tmp_path / "nudgeml_mean.nc") as out:
        assert out["du_mean"].shape == (grid.sigma.size, klon(IIM, JJM))
    # the stand-in's grid (or another LMDZ grid): one line naming the file, nothing written
    assert main(["lmdz-mean", str(tmp_path / "mean_tendency.nc"), str(tmp_path / "other.nc"), "--iim", "144", "--jjm", "142"]) == 2
    assert "mean_tendency.nc: mean tendency du_mean is" in capsys.readouterr().err and not (tmp_path / "other.nc").exists()
