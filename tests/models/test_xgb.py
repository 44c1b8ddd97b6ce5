import json

import numpy as np
import pytest
import torch
import xgboost as xgb

from nudgeml.evaluate import evaluate
from nudgeml.export import export_trained
from nudgeml.manifest import read_manifest
from nudgeml.models.common import load_trained
from nudgeml.models.xgb import XGBConfig, booster_predict, target_modes, train_xgb, tree_module
from nudgeml.shard import load_stats, open_store
from nudgeml.trees import CompiledTrees
from synthetic import linear_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return linear_store(tmp_path_factory.mktemp("xgb") / "ds.zarr", nlev=3)[0]


@pytest.mark.parametrize("n_modes", [0, 3])
def test_conversion_to_torch_matches_the_booster(tmp_path, store, n_modes):
    """Tolerance: 1e-5 of each target's standard deviation (float32 sums of up to ~10^3 leaves)."""
    train_xgb(store, tmp_path / "m", XGBConfig(n_estimators=40, max_depth=4, n_modes=n_modes, checkpoint_every=10))
    stats = load_stats(open_store(store))
    modes = target_modes(store, stats, n_modes)
    booster = xgb.Booster(model_file=str(tmp_path / "m" / "booster.ubj"))
    x = np.asarray(open_store(store)["test"]["inputs"][:])
    x[:5, 2] = np.nan  # missing values follow the trees' default directions
    ref = booster_predict(booster, x, modes, stats)
    module = load_trained(tmp_path / "m" / "trained.pt")["module"]
    got = module(torch.from_numpy(x)).detach().numpy()
    assert np.all(np.abs(got - ref) <= 1e-5 * stats["target_std"]), np.abs(got - ref).max(axis=0) / stats["target_std"]
    paths = export_trained(tmp_path / "m" / "trained.pt", store, tmp_path / "out", name="xgb", margin=0.1, aoti=False)
    ts = torch.jit.load(str(paths["torchscript"]))(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ts, got, rtol=0, atol=1e-6 * stats["target_std"].max())


def test_skill_and_resume(tmp_path, store):
    out = tmp_path / "m"
    first = train_xgb(store, out, XGBConfig(n_estimators=20, max_depth=4, checkpoint_every=10, early_stopping_rounds=0))
    (out / "checkpoints" / "COMPLETE").unlink()  # cut short after 20 rounds
    second = train_xgb(store, out, XGBConfig(n_estimators=120, max_depth=4, checkpoint_every=10, early_stopping_rounds=0))
    assert second["resumed_rounds"] == first["rounds"] == 20 and second["rounds"] == 120
    export_trained(out / "trained.pt", store, tmp_path / "out", name="xgb", margin=0.1, aoti=False)
    result = evaluate(tmp_path / "out", store)
    assert all(res["r2_overall"] > 0.8 for res in result["targets"].values()), {k: v["r2_overall"] for k, v in result["targets"].items()}


@pytest.mark.parametrize("n_modes", [0, 3])
def test_compiled_trees_match_the_booster(tmp_path, store, n_modes):
    """The exported C library (treelite + tl2cgen) equals the booster's own prediction within float32
    rounding (1e-5 of each target's std, as the walker) on random columns, missing values included."""
    train_xgb(store, tmp_path / "m", XGBConfig(n_estimators=30, max_depth=4, n_modes=n_modes, checkpoint_every=10, early_stopping_rounds=0))
    paths = export_trained(tmp_path / "m" / "trained.pt", store, tmp_path / "out", name="xgb", margin=0.1, aoti=False)
    manifest = read_manifest(paths["manifest"])
    assert manifest.tree_backend == "tl2cgen" and (tmp_path / "out" / manifest.artifacts["trees"]).is_file()
    stats = load_stats(open_store(store))
    booster = xgb.Booster(model_file=str(tmp_path / "m" / "booster.ubj"))
    test = np.asarray(open_store(store)["test"]["inputs"][:])
    rng = np.random.default_rng(0)
    # random columns spread over the features' ranges (and past them), so every branch is taken
    x = (test.mean(0) + 2 * test.std(0) * rng.standard_normal((3000, test.shape[1]))).astype(np.float32)
    x[:50, 1] = np.nan
    ref = booster_predict(booster, x, target_modes(store, stats, n_modes), stats)
    compiled = CompiledTrees(tmp_path / "out" / manifest.artifacts["trees"])
    got = compiled(x)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_array_equal(compiled(torch.from_numpy(x)).numpy(), got)  # the free run passes tensors
    assert np.all(np.abs(got - ref) <= 1e-5 * stats["target_std"]), np.abs(got - ref).max(axis=0) / stats["target_std"]
    with pytest.raises(ValueError, match=r"expects \(n, "):
        compiled(x[:, 1:])


def test_one_test_per_split_keeps_every_branch(tmp_path):
    """The compiled library folds tl2cgen's missing-value test into each split's comparison. On a booster
    trained with missing values (so default-left splits exist, both forms are rewritten), the library
    still equals the booster, NaN columns included; a source in another form is left untouched."""
    from nudgeml.trees import compile_trees, one_test_per_split

    right = "if ( (data[4].missing != -1) && (data[4].fvalue < (float)0.11121869087)) {"
    left = "if (!(data[12].missing != -1) || (data[12].fvalue < (float)-1.5e-05)) {"
    assert one_test_per_split(right) == ("if ( (data[4].fvalue < (float)0.11121869087)) {", 1)
    assert one_test_per_split(left) == ("if (!(data[12].fvalue >= (float)-1.5e-05)) {", 1)
    other = "if ( (data[4].missing != -1) && (data[5].fvalue < (float)0.1)) {"
    assert one_test_per_split(other) == (other, 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 12)).astype(np.float32)
    z = np.stack([x[:, 0] + np.sin(x[:, 1]), x[:, 2] * x[:, 3]], axis=1).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    booster = xgb.train({"max_depth": 4, "tree_method": "hist", "multi_strategy": "one_output_per_tree"}, xgb.DMatrix(x, z), 20)
    trees = json.loads(booster.save_raw("json").decode())["learner"]["gradient_booster"]["model"]["trees"]
    assert 0 < sum(sum(t["default_left"]) for t in trees) < sum(len(t["default_left"]) for t in trees)
    stats = {"target_mean": np.zeros(2, np.float32), "target_std": np.ones(2, np.float32)}
    modes = np.eye(2)
    compile_trees(booster, tmp_path / "t.so", intercept=tree_module(booster, modes, stats).base.numpy(), modes=modes, **stats)
    xt = rng.standard_normal((2000, 12)).astype(np.float32)
    xt[rng.random(xt.shape) < 0.2] = np.nan
    got = CompiledTrees(tmp_path / "t.so")(xt)
    np.testing.assert_allclose(got, booster_predict(booster, xt, modes, stats), rtol=0, atol=1e-5)
