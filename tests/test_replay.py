"""Initial-tendency (replay) targets recover a known physics error."""

import numpy as np
import pytest

from factories import spun_up_t21
from nudgeml.checks import load_config
from nudgeml.conventions import read_guide, read_histhf
from nudgeml.grid import write_model_grid
from nudgeml.replay import run_replay
from nudgeml.simulate import HistoryWriter

pytestmark = pytest.mark.slow
T0 = np.datetime64("2000-03-01T00:00", "s")


@pytest.fixture(scope="module")
def nudged_like(tmp_path_factory):
    """A spun-up T21 trajectory written as a nudged-run history (the replay's input states)."""
    root = tmp_path_factory.mktemp("replay")
    g = spun_up_t21(T0)
    hist = HistoryWriter(root / "histhf.nc", g.grid, T0, {"run": "test"})
    for _ in range(4):
        hist.append(g.run_window())
    hist.close()
    write_model_grid(g.grid, root / "grid.nc", root / "grid.txt")
    return root


def config(root, model_physics):
    cfg = load_config("config/config.yaml", {
        "jax_cache_dir": str(root / "jax"),
        "period": {"start": "2000-03-01T00:00", "end": "2000-03-03T00:00"},
        "dataset": {"split": {"dates": {"train": ["2000-03-01T00:00", "2000-03-01T06:00"], "val": ["2000-03-01T12:00", "2000-03-01T12:00"], "test": ["2000-03-01T18:00", "2000-03-01T18:00"]}, "gap_hours": 0}},
        "free_runs": {"start": "2000-03-02T00:00", "end": "2000-03-03T00:00"},
    })
    cfg["model"]["physics"] = dict(model_physics)  # replaced, not merged into the default perturbations
    return cfg


def test_identical_physics_gives_zero_target(nudged_like, tmp_path):
    n = run_replay(config(nudged_like, {}), nudged_like / "grid.nc", nudged_like / "histhf.nc", tmp_path / "h.nc", tmp_path / "g.nc")
    g = read_guide(tmp_path / "g.nc")
    assert n == 4 and g.sizes["time"] == 4
    assert float(np.abs(g["du"]).max()) == 0.0 and float(np.abs(g["dv"]).max()) == 0.0


def test_stronger_sea_drag_is_recovered_at_the_lowest_level(nudged_like, tmp_path):
    """Model drag over sea x1.5: the target re-accelerates the lowest-level wind over the sea, along it,
    and vanishes aloft (SPEEDY's momentum physics is the surface drag)."""
    run_replay(config(nudged_like, {"surface_flux.cds": 1.5e-3}), nudged_like / "grid.nc", nudged_like / "histhf.nc", tmp_path / "h.nc", tmp_path / "g.nc")
    g = read_guide(tmp_path / "g.nc")
    h = read_histhf(tmp_path / "h.nc")
    from nudgeml.grid import read_model_grid

    sea = read_model_grid(nudged_like / "grid.nc").land_fraction < 0.01
    du0, u0 = g["du"].values[:, 0], h["u"].values[:, 0]
    corr = np.corrcoef(du0[:, sea].ravel(), u0[:, sea].ravel())[0, 1]
    assert corr > 0.8, corr
    assert np.abs(g["du"].values[:, 3:]).max() < 0.05 * np.abs(du0).max(), "no target aloft"
    np.testing.assert_array_equal(h["u"].values.shape, g["du"].values.shape)
