"""The CNN on the lat-lon grid: it uses neighbours (across the date line), wraps exactly in longitude,
and its exported artefacts are the trained function on whole fields only."""

import numpy as np
import pytest
import torch

from nudgeml.errors import InputError
from nudgeml.evaluate import evaluate
from nudgeml.export import export_trained
from nudgeml.manifest import read_manifest
from nudgeml.models.cnn import CNNConfig, FieldModel, FieldTable, build_net, train_cnn
from nudgeml.models.common import load_trained
from nudgeml.sensitivity import model_sensitivity
from synthetic import neighbour_fields

pytestmark = pytest.mark.slow
NLAT, NLON = 8, 16
FAST = dict(channels=16, depth=1, activation="tanh", learning_rate=1e-2, batch_size=4, max_epochs=15, patience=15, seed=0)


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    root = tmp_path_factory.mktemp("fields")
    columns, store = neighbour_fields(root, nlat=NLAT, nlon=NLON)
    return root, columns, store


@pytest.fixture(scope="module")
def trained(fields):
    root, columns, store = fields
    summary = train_cnn(store, columns, root / "cnn", CNNConfig(**FAST))
    return root / "cnn" / "trained.pt", summary


def test_uses_the_store_split(fields):
    _, columns, store = fields
    table = FieldTable(columns, store)
    try:
        import zarr

        splits = zarr.open_group(str(store), mode="r").attrs["splits"]
        for name in ("train", "val", "test"):
            idx = table.fields(name)
            assert idx.size == splits[name]["n_times"] and idx.size * NLAT * NLON == splits[name]["n_samples"]
            assert str(table.times[idx[0]]) == splits[name]["start"]
        assert table.fields("val")[0] - table.fields("train")[-1] == 2, "the 12-h gap is kept"
    finally:
        table.close()


def test_an_interleaved_split_reads_each_split_s_own_blocks(tmp_path):
    """A cycle split's train blocks span the val and test blocks between them: the table reads the
    recorded blocks, the store's times exactly (it read start..end and refused the store before)."""
    import zarr

    columns, store = neighbour_fields(tmp_path, nlat=4, nlon=8, ntime=60, cycle={"train_days": 4, "val_days": 1, "test_days": 1})
    splits = zarr.open_group(str(store), mode="r").attrs["splits"]
    assert len(splits["train"]["blocks"]) > 1
    table = FieldTable(columns, store)
    try:
        seen = set()
        for name in ("train", "val", "test"):
            idx = table.fields(name)
            assert idx.size == splits[name]["n_times"] and idx.size * 4 * 8 == splits[name]["n_samples"]
            assert not seen & set(idx.tolist())
            seen |= set(idx.tolist())
            for first, last in splits[name]["blocks"]:
                inside = (table.times[idx] >= np.datetime64(first)) & (table.times[idx] <= np.datetime64(last))
                assert inside.any()
    finally:
        table.close()


def test_learns_what_a_column_model_cannot(fields, trained):
    root, columns, store = fields
    table = FieldTable(columns, store)
    try:  # the best column model (linear least squares) explains nothing: the answer is next door
        xtr, ytr = table.read(table.fields("train"))
        xte, yte = table.read(table.fields("test"))
    finally:
        table.close()
    a = np.c_[xtr.reshape(-1, xtr.shape[-1]), np.ones(xtr.shape[0] * xtr.shape[1])]
    coef = np.linalg.lstsq(a.astype(np.float64), ytr.reshape(-1, ytr.shape[-1]), rcond=None)[0]
    yt = yte.reshape(-1, yte.shape[-1])
    pred = np.c_[xte.reshape(-1, xte.shape[-1]), np.ones(yt.shape[0])] @ coef
    r2_column = 1 - ((pred - yt) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0)
    assert (r2_column < 0.05).all(), r2_column

    export_trained(trained[0], store, root / "export", name="cnn", margin=0.1, aoti=False)
    result = evaluate(root / "export", store, columns=columns)
    assert result["kind"] == "cnn" and result["n_samples"] == yt.shape[0]
    for var, res in result["targets"].items():
        assert res["r2_overall"] > 0.9, (var, res["r2"])
    assert trained[1]["halo_cells"] == 1 and trained[1]["grid_shape"] == [NLAT, NLON]
    with pytest.raises(InputError, match="whole fields"):
        evaluate(root / "export", store)
    with pytest.raises(InputError, match="column models"):  # store rows are not a field
        model_sensitivity(root / "export", store)


def test_longitude_wrap_is_exact():
    torch.manual_seed(0)
    nf, nt = 5, 4
    model = FieldModel(build_net(nf, nt, CNNConfig(channels=8, depth=3)), (NLAT, NLON), torch.zeros(nf), torch.ones(nf), torch.zeros(nt), torch.ones(nt)).eval()
    x = torch.randn(NLAT, NLON, nf)
    with torch.no_grad():
        y = model(x.reshape(-1, nf)).reshape(NLAT, NLON, nt)
        for k in (1, 5, NLON - 1):
            yk = model(torch.roll(x, k, dims=1).reshape(-1, nf)).reshape(NLAT, NLON, nt)
            torch.testing.assert_close(yk, torch.roll(y, k, dims=1), rtol=0, atol=1e-6 * float(y.abs().max()))
        # the poles are edges: a latitude shift is not a symmetry
        y1 = model(torch.roll(x, 1, dims=0).reshape(-1, nf)).reshape(NLAT, NLON, nt)
        assert not torch.allclose(y1, torch.roll(y, 1, dims=0), atol=1e-4)


def test_export_round_trip_and_wrong_grid(fields, trained, tmp_path, monkeypatch):
    _, columns, store = fields
    # a bfloat16 .pt2 is the MLP's: the CNN's stays float32 and its manifest says so
    paths = export_trained(trained[0], store, tmp_path / "out", name="cnn", margin=0.1, aoti=True, aoti_precision="bfloat16")
    assert read_manifest(tmp_path / "out").aoti_precision == "float32"
    module = load_trained(trained[0])["module"].eval()
    table = FieldTable(columns, store)
    try:
        x, _ = table.read(table.fields("test")[:1])
    finally:
        table.close()
    x = torch.from_numpy(x[0])
    monkeypatch.setenv("AOTI_RUNTIME_CHECK_INPUTS", "1")  # AOTInductor checks input shapes only then
    ts = torch.jit.load(str(paths["torchscript"]))
    aoti = torch._inductor.aoti_load_package(str(paths["aoti"]))
    with torch.no_grad():
        ref = module(x)
        scale = ref.abs().max()
        assert (ts(x) - ref).abs().max() <= 1e-5 * scale
        assert (aoti(x) - ref).abs().max() <= 1e-5 * scale
        with pytest.raises(Exception, match=rf"whole {NLAT}x{NLON} grid"):
            ts(x[:-1])
        with pytest.raises(Exception, match=r"whole .* grid"):
            module(x[:NLON])
        with pytest.raises(Exception, match="unmatched dim value"):
            aoti(x[:-1])
    manifest = read_manifest(paths["manifest"])
    assert manifest.kind == "cnn" and (manifest.grid.nlat, manifest.grid.nlon) == (NLAT, NLON)


def test_unknown_setting_is_named():
    with pytest.raises(KeyError, match="chanels"):
        CNNConfig.from_config({"kind": "cnn", "chanels": 8})
    with pytest.raises(ValueError, match="odd"):
        CNNConfig(kernel_size=4)
