import json

import numpy as np
import pytest

from nudgeml.errors import ManifestError
from nudgeml.evaluate import MetricAccumulator, check_manifest_matches_store
from nudgeml.export import manifest_from_store
from nudgeml.manifest import Block
from synthetic import linear_store


def test_metrics_against_numpy():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(1000, 3))
    pred = y + rng.normal(scale=0.5, size=y.shape)
    acc = MetricAccumulator(3)
    for s in range(0, 1000, 128):
        acc.update(y[s:s + 128], pred[s:s + 128])
    mse, r2 = acc.result()
    np.testing.assert_allclose(mse, ((pred - y) ** 2).mean(axis=0))
    np.testing.assert_allclose(r2, 1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0))


def test_targets_without_variance_have_no_r2():
    y = np.zeros((100, 2))
    y[:, 0] = np.linspace(-1, 1, 100)
    acc = MetricAccumulator(2)
    acc.update(y, y + 0.1)
    _, r2 = acc.result()
    assert np.isfinite(r2[0]) and np.isnan(r2[1])


def test_manifest_must_match_the_dataset(tmp_path):
    store, _ = linear_store(tmp_path / "ds.zarr", ntime=10, ncol=50)
    good = manifest_from_store(store, name="m", kind="mlp", margin=0.1)
    check_manifest_matches_store(good, store, "model.json")
    swapped = good.__class__(**{**good.__dict__, "features": (good.features[1], good.features[0], *good.features[2:])})
    with pytest.raises(ManifestError, match=r"model\.json: feature order differs.*position 0"):
        check_manifest_matches_store(swapped, store, "model.json")
    other_levels = good.__class__(**{**good.__dict__, "levels": good.levels.__class__(tuple(v + 1.0 for v in good.levels.values))})
    with pytest.raises(ManifestError, match="levels"):
        check_manifest_matches_store(other_levels, store, "model.json")
    fewer = good.__class__(**{**good.__dict__, "targets": (Block("du", "m s-2", 3),)})
    with pytest.raises(ManifestError, match="targets differ"):
        check_manifest_matches_store(fewer, store, "model.json")
    assert json.loads(json.dumps(good.to_dict()))["guard"]["margin"] == 0.1


def test_variance_is_judged_within_each_variable_not_across_units():
    """dq (kg kg-1 s-1, ~1e-9) beside du (m s-2, ~1e-5): against du's variance every dq target looked
    constant and got no R² (NaN, as on config/tq.yaml); judged within its own block it has one."""
    rng = np.random.default_rng(1)
    du = rng.normal(scale=1e-5, size=(500, 2))
    dq = rng.normal(scale=1e-9, size=(500, 2))
    y = np.concatenate([du, dq], axis=1)
    pred = y + np.concatenate([rng.normal(scale=5e-6, size=du.shape), rng.normal(scale=5e-10, size=dq.shape)], axis=1)
    one_block = MetricAccumulator(4)
    one_block.update(y, pred)
    assert np.isnan(one_block.result()[1][2:]).all(), "the old threshold, across units"
    acc = MetricAccumulator(4, [slice(0, 2), slice(2, 4)])
    acc.update(y, pred)
    r2 = acc.result()[1]
    assert np.isfinite(r2).all() and (0.5 < r2).all() and (r2 < 0.95).all()
