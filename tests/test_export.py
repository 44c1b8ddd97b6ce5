"""Exporter and manifest: round trips, validation messages, atomic writes, the two artifacts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nudgeml import errors
from nudgeml import export as ex
from nudgeml import manifest as mf
from nudgeml.guard import apply_guard, apply_guard_f32, float32_bounds, guard_bounds, widen
from nudgeml.models import normalized as nn_models

KLEV = 8


def small_manifest(klev: int = KLEV, **over) -> mf.Manifest:
    features = (mf.Block("u", "m s-1", klev), mf.Block("v", "m s-1", klev),
                mf.Block("t", "K", klev), mf.Block("q", "kg kg-1", klev), mf.Block("ps", "Pa", 1))
    targets = (mf.Block("du", "m s-2", klev), mf.Block("dv", "m s-2", klev))
    nf, nt = 4 * klev + 1, 2 * klev
    kw = dict(
        name="mlp", kind="mlp", features=features, targets=targets,
        levels=mf.Levels(tuple(float(p) for p in np.linspace(95000, 5000, klev))),
        guard=mf.Guard(0.1, (-50.0,) * nf, (50.0,) * nf, (-1e-3,) * nt, (1e-3,) * nt),
        grid=mf.Grid("t21", 64, 32), dataset_sha256="0" * 64,
    )
    kw.update(over)
    return mf.Manifest(**kw)


def small_model(m: mf.Manifest, seed: int = 0) -> nn_models.NormalizedModel:
    torch.manual_seed(seed)
    return nn_models.NormalizedModel(
        nn_models.mlp(m.n_features, [16, 16], m.n_targets),
        x_mean=torch.randn(m.n_features), x_std=torch.rand(m.n_features) + 0.5,
        y_mean=torch.randn(m.n_targets) * 1e-5, y_std=torch.rand(m.n_targets) * 1e-4,
    )


def test_names_expand_surface_first():
    m = small_manifest()
    assert m.feature_names[:2] == ["u_000", "u_001"]
    assert m.feature_names[-1] == "ps"
    assert m.target_names[-1] == "dv_007"
    assert m.n_features == 33 and m.n_targets == 16


def test_manifest_round_trip(tmp_path: Path):
    m = small_manifest()
    p = mf.write_manifest(m, tmp_path / "model.json")
    back = mf.read_manifest(tmp_path)
    assert back == m and back.aoti_precision == "float32"
    d = json.loads(p.read_text())
    assert "aoti_precision" not in d  # float32: the key is left out, as in every earlier manifest
    assert d["format"] == "nudgeml-model" and d["format_version"] == 1
    assert len(d["guard"]["feature_min"]) == 33
    assert d["levels"]["order"] == "surface_first"
    assert list(tmp_path.iterdir()) == [p]  # no temporary file left behind


def _write_raw(tmp_path: Path, mutate) -> Path:
    d = small_manifest().to_dict()
    mutate(d)
    p = tmp_path / "model.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="other"), "key 'format'"),
        (lambda d: d.update(format_version=2), "key 'format_version'"),
        (lambda d: d.update(n_features=34), "key 'n_features'"),
        (lambda d: d.update(n_targets=15), "key 'n_targets'"),
        (lambda d: d["feature_names"].reverse(), "key 'feature_names'"),
        (lambda d: d["guard"]["feature_min"].pop(), "key 'guard.feature_min' has 32 entries"),
        (lambda d: d["guard"]["target_max"].__setitem__(0, -1.0), "key 'guard.target_min[0]'"),
        (lambda d: d["levels"].update(order="top_first"), "key 'levels.order'"),
        (lambda d: d["levels"]["values"].pop(), "key 'features[0].levels'"),
        (lambda d: d["features"][0].pop("units"), "key 'features[0].units' is missing"),
        (lambda d: d["features"][1].update(name="u"), "appears twice"),
        (lambda d: d["artifacts"].update(aoti="../x.pt2"), "key 'artifacts.aoti'"),
        (lambda d: d["guard"].update(margin=True), "key 'guard.margin'"),
        (lambda d: d.pop("guard"), "key 'guard' is missing"),
        (lambda d: d.update(tree_backend="walker"), "key 'tree_backend'"),
        (lambda d: d.update(tree_backend="tl2cgen"), "key 'artifacts.trees' is missing"),
        (lambda d: (d.update(tree_backend="tl2cgen"), d["artifacts"].update(trees="../m.so")), "key 'artifacts.trees'"),
        (lambda d: d.update(aoti_precision="float16"), "key 'aoti_precision'"),
    ],
)
def test_manifest_rejections_name_file_and_key(tmp_path: Path, mutate, message):
    p = _write_raw(tmp_path, mutate)
    with pytest.raises(errors.ManifestError) as e:
        mf.read_manifest(p)
    assert str(p) in str(e.value)
    assert message in str(e.value)


def test_manifest_klev_check(tmp_path: Path):
    mf.write_manifest(small_manifest(), tmp_path / "model.json")
    assert mf.read_manifest(tmp_path, klev=KLEV).n_features == 33
    with pytest.raises(errors.ManifestError, match="klev = 79"):
        mf.read_manifest(tmp_path, klev=79)


def test_missing_and_broken_manifest(tmp_path: Path):
    with pytest.raises(errors.ManifestError, match="not found"):
        mf.read_manifest(tmp_path / "nope.json")
    (tmp_path / "model.json").write_text("{")
    with pytest.raises(errors.ManifestError, match="not valid JSON"):
        mf.read_manifest(tmp_path)


def test_write_manifest_refuses_invalid_and_keeps_old(tmp_path: Path):
    good = small_manifest()
    p = mf.write_manifest(good, tmp_path / "model.json")
    bad = small_manifest(guard=mf.Guard(0.1, (0.0,), (1.0,), (0.0,), (1.0,)))
    with pytest.raises(errors.ManifestError, match="guard.feature_min"):
        mf.write_manifest(bad, p)
    assert mf.read_manifest(p) == good


def test_normalized_model_maths():
    m = small_manifest()
    net = nn_models.mlp(m.n_features, [8], m.n_targets)
    x_mean, x_std = torch.randn(33), torch.rand(33) + 0.5
    x_std[3] = 0.0  # constant feature: must not divide by zero
    y_mean, y_std = torch.randn(16), torch.rand(16)
    mod = nn_models.NormalizedModel(net, x_mean, x_std, y_mean, y_std)
    x = torch.randn(5, 33)
    safe_std = x_std.clone()
    safe_std[3] = 1.0
    expected = net((x - x_mean) / safe_std) * y_std + y_mean
    assert torch.equal(mod(x), expected)
    clipped = nn_models.NormalizedModel(net, x_mean, x_std, y_mean, y_std,
                                 x_clip=(torch.full((33,), -0.5), torch.full((33,), 0.5)))
    assert torch.equal(clipped(x), mod(x.clamp(-0.5, 0.5)))


def test_torchscript_export_matches_eager(tmp_path: Path):
    m = small_manifest()
    mod = small_model(m)
    p = ex.export_torchscript(mod, tmp_path / "model.pt")
    loaded = torch.jit.load(str(p))
    x = torch.randn(64, 33)
    with torch.no_grad():
        assert torch.equal(loaded(x), mod(x))
    assert sorted(q.name for q in tmp_path.iterdir()) == ["model.pt"]


def test_export_model_writes_three_files_with_dynamic_batch(tmp_path: Path):
    m = small_manifest()
    mod = small_model(m)
    paths = ex.export_model(mod, m, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"model.pt", "model.pt2", "model.json"}
    assert paths["aoti"] == tmp_path / "model.pt2"
    pkg = torch._inductor.aoti_load_package(str(paths["aoti"]))
    ts = torch.jit.load(str(paths["torchscript"]))
    for n in (1, 3, 200):  # the batch dimension is dynamic, including a single column
        x = torch.randn(n, 33)
        with torch.no_grad():
            ref = mod(x)
            assert torch.equal(ts(x), ref)
            got = pkg(x)
        assert got.shape == (n, 16)
        # AOTInductor may fuse the normalisation differently: a few ulp at most.
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-9)


def test_bfloat16_pt2_keeps_the_standardisation_and_interface_in_float32(tmp_path: Path):
    """The bfloat16 .pt2 computes the hidden layers in bfloat16 only: a surface pressure of ~1e5 Pa
    standardised in bfloat16 (512-Pa steps against a 1 000-Pa spread) would move the output by more
    than the tolerance below, which the float32 standardisation stays well within."""
    m = small_manifest()
    torch.manual_seed(3)
    x_mean, x_std = torch.randn(33), torch.rand(33) + 0.5
    x_mean[-1], x_std[-1] = 1.0e5, 1.0e3  # ps (Pa)
    mod = nn_models.NormalizedModel(nn_models.mlp(33, [32, 32], 16), x_mean=x_mean, x_std=x_std,
                                    y_mean=torch.randn(16) * 1e-5, y_std=torch.rand(16) * 1e-4 + 1e-5).eval()
    with torch.no_grad():
        mod.net[0].weight[:, -1] *= 4.0  # a network that reads ps, as the wind tendencies do
    paths = ex.export_model(mod, m, tmp_path, aoti_precision="bfloat16")
    assert mf.read_manifest(tmp_path).aoti_precision == "bfloat16"
    assert json.loads(paths["manifest"].read_text())["aoti_precision"] == "bfloat16"
    x = x_mean + x_std * torch.randn(256, 33)
    pkg = torch._inductor.aoti_load_package(str(paths["aoti"]))
    ts = torch.jit.load(str(paths["torchscript"]))
    with torch.no_grad():
        ref = mod(x)
        assert torch.equal(ts(x), ref)  # model.pt stays float32
        got = pkg(x)
        naive = copy.deepcopy(mod).to(torch.bfloat16)(x.to(torch.bfloat16)).float()  # everything in bfloat16
    assert got.dtype == torch.float32 and got.shape == (256, 16)
    err = ((got - ref).abs() / mod.y_std).max().item()
    naive_err = ((naive - ref).abs() / mod.y_std).max().item()
    print(f"bfloat16 .pt2: max error {err:.4f} of the target spread; all in bfloat16: {naive_err:.4f}")
    assert 0 < err <= 0.05 < naive_err
    assert ((got - ref) / mod.y_std).pow(2).mean().sqrt().item() <= 0.01


def test_aoti_precision_auto_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(ex, "native_bfloat16", lambda: True)
    assert ex.resolve_aoti_precision("auto") == "bfloat16"
    # a narrow network's bfloat16 call is the slower one (measured): auto keeps it float32
    assert ex.resolve_aoti_precision("auto", hidden=[128, 256, 128]) == "bfloat16"
    assert ex.resolve_aoti_precision("auto", hidden=[128, 64, 128]) == "float32"
    assert ex.resolve_aoti_precision("auto", hidden=[32, 32, 32]) == "float32"
    assert ex.resolve_aoti_precision("auto", hidden=[]) == "float32"
    assert ex.resolve_aoti_precision("bfloat16", hidden=[32]) == "bfloat16"  # asked for by name: kept
    net = nn_models.NormalizedModel(nn_models.mlp(33, [32, 64, 128], 16), torch.zeros(33), torch.ones(33), torch.zeros(16), torch.ones(16))
    assert ex.hidden_widths(net) == [32, 64, 128]
    monkeypatch.setattr(ex, "native_bfloat16", lambda: False)
    assert ex.resolve_aoti_precision("auto") == "float32"
    assert ex.resolve_aoti_precision("bfloat16") == "bfloat16"
    with pytest.raises(errors.InputError, match="'export.aoti_precision' is 'half'"):
        ex.resolve_aoti_precision("half")
    with pytest.raises(ValueError, match="NormalizedModel"):
        ex.export_aoti(torch.nn.Linear(33, 16), torch.zeros(4, 33), "/nonexistent/model.pt2", precision="bfloat16")


def test_export_model_rejects_shape_mismatch(tmp_path: Path):
    m = small_manifest()
    wrong = nn_models.NormalizedModel(nn_models.mlp(33, [4], 15), torch.zeros(33), torch.ones(33),
                               torch.zeros(15), torch.ones(15))
    with pytest.raises(ValueError, match="manifest expects"):
        ex.export_model(wrong, m, tmp_path, aoti=False)
    assert not any(tmp_path.iterdir())


def test_guard_reference():
    m = small_manifest(klev=1, features=(mf.Block("u", "m s-1", 1), mf.Block("ps", "Pa", 1)),
                       targets=(mf.Block("du", "m s-2", 1), mf.Block("dv", "m s-2", 1)),
                       levels=mf.Levels((95000.0,)),
                       guard=mf.Guard(0.5, (0.0, 1e5), (10.0, 1e5), (-1.0, 0.0), (1.0, 2.0)))
    b = guard_bounds(m.guard)
    np.testing.assert_array_equal(b.feature_lo, [-5.0, 1e5])
    np.testing.assert_array_equal(b.target_hi, [2.0, 3.0])
    x = np.array([[1.0, 1e5], [16.0, 1e5], [np.nan, 1e5], [1.0, 1e5], [1.0, 1e5]], np.float32)
    y = np.array([[5.0, -4.0], [0.0, 0.0], [0.0, 0.0], [np.inf, 0.0], [0.5, 2.5]], np.float32)
    fb = np.full((5, 2), 7.0)
    r = apply_guard(x, y, fb, b)
    np.testing.assert_array_equal(r.fallback, [False, True, True, True, False])
    np.testing.assert_array_equal(r.tendency[0], [2.0, -1.0])
    np.testing.assert_array_equal(r.tendency[1:4], 7.0)
    np.testing.assert_array_equal(r.tendency[4], [0.5, 2.5])
    assert r.n_clipped == 2 and r.n_fallback == 3
    lo, hi = widen([1.0], [3.0], 0.1)
    assert lo[0] == 1.0 - 0.1 * 2.0 and hi[0] == 3.0 + 0.1 * 2.0
    r32 = apply_guard_f32(x, y, fb.astype(np.float32), float32_bounds(b))
    np.testing.assert_array_equal(r32.tendency, r.tendency.astype(np.float32))
    assert r32.n_clipped == 2 and r32.n_fallback == 3


def test_guard_f32_equals_float64_reference():
    """The online float32 guard is the float64 reference cast to float32, bit for bit, on columns that
    sit on, just inside and just outside bounds that float32 cannot represent."""
    rng = np.random.default_rng(3)
    nf, nt, n = 6, 5, 4000
    fmin = rng.normal(size=nf) * 10.0 ** rng.integers(-6, 6, nf)
    fmax = fmin + rng.random(nf) * 10.0 ** rng.integers(-6, 6, nf)
    tmin = rng.normal(size=nt) * 1e-5
    tmax = tmin + rng.random(nt) * 1e-5
    tmax[0] = 1e39  # beyond float32's range: every finite float32 is inside
    b = guard_bounds(mf.Guard(0.1, tuple(fmin), tuple(fmax), tuple(tmin), tuple(tmax)))
    b32 = float32_bounds(b)
    assert np.all(b32.feature_lo.astype(np.float64) >= b.feature_lo) and np.all(b32.target_hi.astype(np.float64) <= b.target_hi)

    def near(lo, hi, shape):  # uniform, plus values at and one float32 step around each bound
        v = (lo + (hi - lo) * rng.uniform(-0.2, 1.2, shape)).astype(np.float32)
        pick = rng.random(shape)
        for edge, frac in ((lo, 0.1), (hi, 0.2)):
            e = np.broadcast_to(np.asarray(edge, np.float64).astype(np.float32), shape)
            step = rng.choice(np.array([-1, 0, 1]), shape)
            e = np.where(step < 0, np.nextafter(e, np.float32(-np.inf)), np.where(step > 0, np.nextafter(e, np.float32(np.inf)), e))
            v = np.where((pick > frac - 0.1) & (pick < frac), e, v)
        return v.astype(np.float32)

    with np.errstate(over="ignore", invalid="ignore"):
        x = near(b.feature_lo, b.feature_hi, (n, nf))
        y = near(b.target_lo, np.minimum(b.target_hi, 1e-3), (n, nt))
    x[rng.random(n) < 0.01, 0] = np.nan
    y[rng.random(n) < 0.01, 1] = np.inf
    fb64 = rng.normal(size=(n, nt)) * 1e-5
    ref = apply_guard(x, y, fb64, b)
    got = apply_guard_f32(x, y, fb64.astype(np.float32), b32)
    assert 0 < ref.n_fallback < n and ref.n_clipped > 0
    np.testing.assert_array_equal(got.fallback, ref.fallback)
    assert got.n_clipped == ref.n_clipped
    np.testing.assert_array_equal(got.tendency, ref.tendency.astype(np.float32))
    assert got.tendency.dtype == np.float32
    with pytest.raises(ValueError, match="float32"):
        apply_guard_f32(x.astype(np.float64), y, fb64.astype(np.float32), b32)
