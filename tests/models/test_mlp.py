import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nudgeml.evaluate import evaluate
from nudgeml.export import export_trained
from nudgeml.manifest import read_manifest
from nudgeml.models.common import load_trained
from nudgeml.models.mlp import MLPConfig, penalised_inputs, read_metrics, train_mlp
from nudgeml.shard import load_stats, open_store
from synthetic import linear_store

pytestmark = pytest.mark.slow
FAST = dict(hidden=(64,), learning_rate=3e-3, batch_size=256, patience=50, seed=1)


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    root = tmp_path_factory.mktemp("linear")
    store, _ = linear_store(root / "ds.zarr")
    return root, store


def test_learns_a_known_linear_relation(linear):
    root, store = linear
    train_mlp(store, root / "mlp", MLPConfig(max_epochs=40, **FAST))
    export_trained(root / "mlp" / "trained.pt", store, root / "mlp" / "export", name="mlp", margin=0.1, aoti=False)
    result = evaluate(root / "mlp" / "export", store)
    for var, res in result["targets"].items():
        assert res["r2_overall"] > 0.99, (var, res["r2"])


def test_resume_continues_an_interrupted_run(tmp_path, linear):
    _, store = linear
    out = tmp_path / "mlp"
    first = train_mlp(store, out, MLPConfig(max_epochs=2, **FAST))
    assert first["epochs_run"] == 2 and first["resumed_from"] is None
    (out / "checkpoints" / "COMPLETE").unlink()  # as if the job had been cut after epoch 2
    second = train_mlp(store, out, MLPConfig(max_epochs=4, **FAST))
    assert second["resumed_from"] == "checkpoints/last.ckpt", "relative to the model folder"
    assert not Path(second["best_checkpoint"]).is_absolute()
    assert second["epochs_run"] == 4
    assert second["global_step"] == 2 * first["global_step"], "epochs 3-4 only, not 1-4 again"
    metrics = read_metrics(out)
    assert sorted(metrics["epoch"].dropna().unique().astype(int)) == [0, 1, 2, 3]
    third = train_mlp(store, out, MLPConfig(max_epochs=1, **FAST))
    assert third["resumed_from"] is None and third["epochs_run"] == 1, "a finished run is retrained from scratch"


def test_same_seed_same_model(tmp_path, linear):
    _, store = linear
    a = train_mlp(store, tmp_path / "a", MLPConfig(max_epochs=2, **FAST))
    b = train_mlp(store, tmp_path / "b", MLPConfig(max_epochs=2, **FAST))
    ma, mb = load_trained(tmp_path / "a" / "trained.pt")["module"], load_trained(tmp_path / "b" / "trained.pt")["module"]
    for (na, pa), (nb, pb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(pa, pb), na
    assert a["best_score"] == b["best_score"]


def test_exported_artifacts_reproduce_the_trained_module(tmp_path, linear):
    root, store = linear
    train_mlp(store, tmp_path / "mlp", MLPConfig(max_epochs=1, **FAST))
    paths = export_trained(tmp_path / "mlp" / "trained.pt", store, tmp_path / "out", name="mlp", margin=0.1, aoti=True)
    module = load_trained(tmp_path / "mlp" / "trained.pt")["module"].eval()
    import zarr

    x = torch.from_numpy(np.asarray(zarr.open_group(str(store), mode="r")["test"]["inputs"][:512]))
    with torch.no_grad():
        ref = module(x)
        ts = torch.jit.load(str(paths["torchscript"]))(x)
        aoti = torch._inductor.aoti_load_package(str(paths["aoti"]))(x)
    scale = ref.abs().max()
    assert (ts - ref).abs().max() <= 1e-5 * scale
    assert (aoti - ref).abs().max() <= 1e-5 * scale
    manifest = read_manifest(paths["manifest"])
    assert manifest.kind == "mlp" and manifest.n_features == x.shape[1]
    assert manifest.dataset_sha256 == "synthetic"
    assert json.loads(paths["manifest"].read_text())["levels"]["order"] == "surface_first"


def test_jacobian_penalty_removes_the_sensitivity_to_the_winds(tmp_path, linear):
    """The targets depend linearly on every input; with a strong penalty on u and v the model's
    response to the winds collapses while its response to the other inputs stays."""
    _, store = linear
    root = open_store(store)
    st = load_stats(root)
    wind = torch.tensor(penalised_inputs(list(root.attrs["feature_names"]), ("u", "v")))
    mean, std = (torch.as_tensor(st[k], dtype=torch.float32) for k in ("input_mean", "input_std"))
    x = mean + std * torch.as_tensor(np.random.default_rng(0).normal(size=(512, mean.numel())), dtype=torch.float32)

    def sensitivity(penalty: float) -> tuple[float, float]:
        out = tmp_path / f"jac{penalty}"
        train_mlp(store, out, MLPConfig(max_epochs=15, jacobian_penalty=penalty, **FAST))
        model = load_trained(out / "trained.pt")["module"]
        with torch.no_grad():
            base = model(x)
            return tuple((model(x + 0.1 * std * m) - base).abs().mean().item() for m in (wind, ~wind))

    free_wind, free_rest = sensitivity(0.0)
    pen_wind, pen_rest = sensitivity(30.0)
    assert pen_wind < 0.2 * free_wind, (pen_wind, free_wind)
    assert pen_rest > 0.5 * free_rest, (pen_rest, free_rest)


def test_penalised_inputs_mask_and_unknown_block():
    names = ["u_000", "u_001", "v_000", "v_001", "t_000", "ps", "sin_lat"]
    assert penalised_inputs(names, ("u", "v")).tolist() == [True] * 4 + [False] * 3
    assert penalised_inputs(names, ("ps",)).tolist() == [False] * 5 + [True, False]
    with pytest.raises(KeyError, match="jacobian_inputs"):
        penalised_inputs(names, ("w",))


@pytest.mark.parametrize("kind", ["mlp", "xgboost", "cnn"])
def test_model_settings_ignore_the_workflow_keys_and_name_unknown_ones(kind):
    """kind, target and iterations are read by the workflow; every model kind must accept them."""
    from nudgeml.models.cnn import CNNConfig
    from nudgeml.models.xgb import XGBConfig

    cls = {"mlp": MLPConfig, "xgboost": XGBConfig, "cnn": CNNConfig}[kind]
    cls.from_config({"kind": kind, "target": "nudging", "iterations": 2, "seed": 3})
    with pytest.raises(KeyError, match="bogus"):
        cls.from_config({"kind": kind, "bogus": 1})
