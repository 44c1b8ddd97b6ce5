"""Iterative training: a corrected nudged run records what the corrected model still needs.

The set-up has a known answer. The truth is the T21 stand-in with an extra, constant zonal-wind forcing
``a = A cos(lat)`` (solid-body acceleration: exactly representable at T21); the model is the same
stand-in without it. Same physics, same resolution, same initial state: the model's only error is the
missing ``a``, so nudging must supply ``a``, a correction of exactly ``a`` must leave no residual but
the floor of 6-hourly, linearly interpolated targets (measured here by that very run), and a
mean-tendency iteration must move the mean toward that fixed point. Ratios are area-weighted rms over
two-day means, relative to |a|.
"""

import numpy as np
import pytest
import torch

from factories import forced_truth
from nudgeml.checks import check_consistency, load_config
from nudgeml.conventions import read_guide
from nudgeml.errors import ConfigError
from nudgeml.export import export_model
from nudgeml.extract import ColumnSpec, column_dataset, expand_names
from nudgeml.iterate import run_corrected_nudged
from nudgeml.manifest import Block, Grid, Guard, Levels, Manifest
from nudgeml.mean_tendency import mean_tendency, write_mean_tendency
from nudgeml.naming import chain_correction, chains
from nudgeml.nudged import run_nudged

T0 = np.datetime64("2000-03-01T00:00", "s")
WINDOWS = 8  # two days of 6-h windows
A_MS2 = 1.0e-4  # 8.6 m/s per day at the equator
T21_LAT = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(32)[0]))  # Gaussian latitudes, ascending


def base_config(jax_dir):
    cfg = load_config("config/config.yaml", {
        "jax_cache_dir": str(jax_dir),
        "period": {"start": "2000-03-01T00:00", "end": "2000-03-03T00:00"},
        "dataset": {"split": {"dates": {"train": ["2000-03-01T00:00", "2000-03-01T06:00"], "val": ["2000-03-01T12:00", "2000-03-01T12:00"], "test": ["2000-03-01T18:00", "2000-03-01T18:00"]}, "gap_hours": 0}},
        "free_runs": {"start": "2000-03-02T00:00", "end": "2000-03-03T00:00"},
    })
    cfg["model"]["physics"] = {}  # the truth's physics: the missing forcing is the only error
    return cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Truth = spun-up T21 run forced by ``a``, written as regridded ERA5; the grid file; a config."""
    root = tmp_path_factory.mktemp("iterate")
    grid, a = forced_truth(root, T0, A_MS2, WINDOWS)
    np.testing.assert_allclose(grid.lat_deg, T21_LAT, atol=1e-6)
    return root, grid, a, base_config(root / "jax")


def rms(x):
    """Area-weighted (cos lat) rms of ``(..., lat, lon)`` fields on the T21 grid: unweighted, the
    Gaussian grid's many polar points would weigh most the pole, where the interpolation floor is."""
    w = np.cos(np.deg2rad(T21_LAT))[:, None]
    x = np.asarray(x, np.float64)
    return float(np.sqrt(np.sum(np.square(x) * w) / np.sum(np.ones_like(x) * w)))


def window_mean(guide_path, first=0):
    g = read_guide(guide_path)
    return g["du"].values[first:].mean(axis=0), g["dv"].values[first:].mean(axis=0)


@pytest.fixture(scope="module")
def plain(setup):
    """Iteration 0: the plain nudged run."""
    root, _, _, cfg = setup
    run_nudged(cfg, root / "grid.nc", [root / "forcing.nc"], root / "k0_histhf.nc", root / "k0_guide.nc")
    return root / "k0_guide.nc"


def export_perfect(root, grid, columns):
    """An exported model whose du is ``A cos(lat)`` on every level (from its cos_lat input), dv zero."""
    nlev = grid.sigma.size
    fb, tb = columns.feature_blocks(nlev), columns.target_blocks(nlev)
    nf, nt = sum(b["levels"] for b in fb), sum(b["levels"] for b in tb)
    icos = expand_names(fb).index("cos_lat")

    class Perfect(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.icos, self.nlev, self.amplitude = icos, nlev, A_MS2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            du = self.amplitude * x[:, self.icos : self.icos + 1].expand(-1, self.nlev)
            return torch.cat([du, torch.zeros_like(du)], dim=1)

    manifest = Manifest(
        name="perfect", kind="mlp",
        features=tuple(Block(b["name"], b["units"], b["levels"]) for b in fb),
        targets=tuple(Block(b["name"], b["units"], b["levels"]) for b in tb),
        levels=Levels(tuple(grid.presnivs_pa)),
        guard=Guard(0.1, (-1e9,) * nf, (1e9,) * nf, (-1.0,) * nt, (1.0,) * nt),
        grid=Grid("t21", nlon=grid.lon_deg.size, nlat=grid.lat_deg.size),
    )
    export_model(Perfect(), manifest, root / "perfect", torch.zeros(4, nf), aoti=False)
    return root / "perfect"


@pytest.fixture(scope="module")
def perfect(setup, plain, tmp_path_factory):
    """A nudged run corrected by exactly ``a``, through an exported model and the free runs' corrector."""
    root, grid, _, cfg = setup
    d = tmp_path_factory.mktemp("perfect")
    model = export_perfect(d, grid, ColumnSpec.from_config(cfg["columns"]))
    write_mean_tendency(mean_tendency(plain, [(T0, T0 + np.timedelta64(2, "D"))]), d / "mean.nc")  # the guard's fallback
    out = {k: d / f"{k}.nc" for k in ("histhf", "guide", "correction")}
    spec = {"correction": "ml", "model": "perfect", "backend": "torchscript"}
    run_corrected_nudged(cfg, spec, root / "grid.nc", [root / "forcing.nc"], out["histhf"], out["guide"], out["correction"], mean_file=d / "mean.nc", model_dir=model)
    return out


@pytest.mark.slow
def test_nudging_supplies_the_missing_forcing(setup, plain, perfect):
    """Plain minus perfectly corrected mean nudging over the second day = a, to 20 % (measured 11 %
    for du, 7 % for dv: the first day holds the relaxation's spin-up, e -> a tau; the rest is the
    model's dynamical response to the lag)."""
    _, _, a, _ = setup
    du = window_mean(plain, first=WINDOWS // 2)[0] - window_mean(perfect["guide"], first=WINDOWS // 2)[0]
    dv = window_mean(plain, first=WINDOWS // 2)[1] - window_mean(perfect["guide"], first=WINDOWS // 2)[1]
    assert rms(du - a) < 0.2 * rms(a), rms(du - a) / rms(a)
    assert rms(dv) < 0.2 * rms(a), rms(dv) / rms(a)


@pytest.mark.slow
def test_perfect_correction_leaves_no_residual(setup, plain, perfect):
    """Corrected with exactly a, the residual nudging is only the floor any model has with 6-hourly,
    linearly interpolated targets (the truth is not linear in time between analyses): measured 13 %
    (du) and 16 % (dv) of |a| for two-day means, against 83 % without the correction. The correction
    file holds a as applied, and the extracted target is correction + residual."""
    root, _, a, cfg = setup
    residual_u, residual_v = window_mean(perfect["guide"])
    plain_u, _ = window_mean(plain)
    applied_u, applied_v = window_mean(perfect["correction"])
    assert rms(residual_u) < 0.25 * rms(a), rms(residual_u) / rms(a)
    assert rms(residual_v) < 0.25 * rms(a), rms(residual_v) / rms(a)
    assert rms(residual_u) < rms(plain_u) / 4
    assert rms(applied_u - a) < 1e-3 * rms(a) and rms(applied_v) < 1e-3 * rms(a)

    cols = column_dataset(perfect["histhf"], perfect["guide"], root / "grid.nc", ColumnSpec.from_config(cfg["columns"]), correction=perfect["correction"])
    du_columns = cols["targets"].values[:, :, 0].mean(axis=0)  # lowest level, (lat, lon) row-major
    np.testing.assert_allclose(du_columns, (applied_u + residual_u)[0].ravel(), rtol=1e-4, atol=1e-9)


@pytest.mark.slow
def test_a_mean_iteration_moves_the_mean_to_the_fixed_point(setup, plain, perfect, tmp_path):
    """mean_1 = mean_0 + mean residual of the run corrected by mean_0. The iteration's fixed point is the
    perfectly corrected run's total (a + its floor): mean_1 is closer to it than mean_0 (measured 0.20
    -> 0.15 of |a|; two days hold only a few independent samples of the floor), and the residual
    drops to the floor (measured 0.83 -> 0.20 of |a|, the floor being 0.13)."""
    root, _, a, cfg = setup
    end = T0 + np.timedelta64(2, "D")
    mean0 = mean_tendency(plain, [(T0, end)])
    write_mean_tendency(mean0, tmp_path / "mean0.nc")
    out = {k: tmp_path / f"{k}.nc" for k in ("histhf", "guide", "correction")}
    run_corrected_nudged(cfg, chain_correction("mean-annual", cfg["models"]), root / "grid.nc", [root / "forcing.nc"], out["histhf"], out["guide"], out["correction"], mean_file=tmp_path / "mean0.nc")
    mean1 = mean_tendency(out["guide"], [(T0, end)], correction=out["correction"])
    fixed = mean_tendency(perfect["guide"], [(T0, end)], correction=perfect["correction"])["du_mean"].values

    err0, err1 = rms(mean0["du_mean"].values - fixed), rms(mean1["du_mean"].values - fixed)
    residual0, residual1 = rms(window_mean(plain)[0]), rms(window_mean(out["guide"])[0])
    assert err1 < err0, (err0 / rms(a), err1 / rms(a))
    assert residual1 < 0.4 * residual0, (residual0 / rms(a), residual1 / rms(a))
    assert residual1 < 2 * rms(window_mean(perfect["guide"])[0])


# --------------------------------------------------------------------------------------------------
# Configuration of the chains
# --------------------------------------------------------------------------------------------------


def test_chains_from_the_config(tmp_path):
    cfg = base_config(tmp_path)
    assert chains(cfg) == {}
    cfg["models"]["mlp"]["iterations"] = 2
    cfg["free_runs"]["runs"]["mean-it"] = {"correction": "mean", "iterations": 3}
    cfg["free_runs"]["runs"]["mean-it1"] = {"correction": "mean", "climatology": "annual", "iterations": 1}
    check_consistency(cfg)
    assert chains(cfg) == {"mlp": 2, "mean-annual": 3}
    assert chain_correction("mlp", cfg["models"]) == {"correction": "ml", "model": "mlp", "backend": "torchscript"}
    assert chain_correction("mean-monthly", cfg["models"]) == {"correction": "mean", "climatology": "monthly"}
    with pytest.raises(ConfigError, match="xgb2"):
        chain_correction("xgb2", cfg["models"])


@pytest.mark.parametrize("change, key", [
    (lambda c: c["models"]["mlp"].update(target="replay", iterations=1), "models.mlp.iterations"),
    (lambda c: c["free_runs"]["runs"].update({"ml-it": {"correction": "ml", "model": "mlp", "iterations": 1}}), "free_runs.runs.ml-it.iterations"),
    (lambda c: c["models"].update({"mean-annual": {"kind": "mlp", "iterations": 1}}), "models.mean-annual"),
])
def test_inconsistent_iterations_are_refused_naming_the_key(tmp_path, change, key):
    cfg = base_config(tmp_path)
    change(cfg)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_consistency(cfg)


def test_schema_rejects_negative_iterations():
    with pytest.raises(ConfigError, match="models.mlp.iterations"):
        load_config("config/config.yaml", {"models": {"mlp": {"iterations": -1}}})
