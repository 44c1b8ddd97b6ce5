"""LMDZE run settings and namelists (nudgeml.lmdze_run); the runs themselves are in test_lmdze.py."""

import math

import numpy as np
import pytest

from nudgeml.errors import ConfigError, InputError
from nudgeml.lmdze_run import CE0L_GROUPS, GCM_GROUPS, LmdzeSettings, nudging_alpha, render_namelists


def _groups(text):
    return [line.split()[0][1:] for line in text.splitlines()]


def test_groups_in_the_order_the_programs_read_them():
    nml = render_namelists(LmdzeSettings(start="2000-01-31T00", days=2, guide=("u", "v")))
    assert _groups(nml["ce0l"]) == list(CE0L_GROUPS)
    assert _groups(nml["gcm"]) == list(GCM_GROUPS)
    assert all(line.endswith("/") for line in nml["gcm"].splitlines())


def test_grid_dates_length_and_nudging_time_scale():
    nml = render_namelists(LmdzeSettings(start="2000-02-01T00", days=3, iim=48, jjm=32, llm=19, guide=("u", "v", "t"), tau_hours=3.0))
    assert "&dimensions_nml iim = 48, jjm = 32, llm = 19 /" in nml["ce0l"].splitlines()
    assert "&dynetat0_nml day_ref = 31, annee_ref = 2000 /" in nml["ce0l"].splitlines()
    gcm = nml["gcm"]
    assert "nday = 3" in gcm and "&dynetat0_nml /" in gcm.splitlines()  # gcm takes its date from start.nc
    guide = next(line for line in gcm.splitlines() if line.startswith("&conf_guide_nml"))
    for flag in ("u", "v", "t"):
        assert f"guide_{flag} = t" in guide and f"tau_max_{flag} = 0.125" in guide  # days
    assert "guide_q" not in guide


def test_temperature_has_its_own_time_scale():
    s = LmdzeSettings(start="2000-02-01T00", days=1, guide=("u", "v", "t"), tau_hours=6.0, tau_t_hours=12.0)
    guide = next(line for line in render_namelists(s)["gcm"].splitlines() if line.startswith("&conf_guide_nml"))
    assert "tau_max_u = 0.25" in guide and "tau_max_t = 0.5" in guide
    assert nudging_alpha(s, "t") == pytest.approx(1.0 - math.exp(-(5 / 240) / 0.5), rel=1e-15)


def test_free_run_has_no_guide():
    gcm = render_namelists(LmdzeSettings(start="2000-02-01T00", days=1))["gcm"]
    assert "&conf_guide_nml /" in gcm.splitlines()


def test_alpha_is_lmdzes_regular_grid_formula():
    s = LmdzeSettings(start="2000-02-01T00", days=1, guide=("u",), tau_hours=6.0)
    assert nudging_alpha(s) == pytest.approx(1.0 - math.exp(-(5 / 240) / 0.25), rel=1e-15)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"day_step": 250}, r"day_step=250 must be a multiple of 4 \* iperiod = 20"),
    ({"iphysiq": 7}, r"iphysiq=7 must be a multiple of iperiod=5"),
    ({"guide": ("w",)}, r"cannot guide \['w'\]"),
    ({"days": 0}, r"at least 1"),
    ({"tau_hours": 0.0}, r"tau_hours=0.0 \(t: None, q: None\) must be > 0"),
    ({"extra": {"nosuch_nml": {"a": 1}}}, r"namelist group\(s\) \['nosuch_nml'\]"),
])
def test_bad_settings_are_one_clear_error(kwargs, match):
    base = {"start": "2000-02-01T00", "days": 1, "guide": ("u", "v")}
    with pytest.raises(ConfigError, match=match):
        render_namelists(LmdzeSettings(**{**base, **kwargs}))


# the lmdze backend's settings from the workflow's configuration (nudgeml.gcm.runners)


def _cfg(**nudging):
    return {"period": {"start": "2000-01-31T00:00", "end": "2000-02-03T00:00"}, "nudging": {"tau_hours": 6.0, "project_target": False, **nudging}}


def test_backend_settings_from_the_workflow_config():
    from nudgeml.gcm.runners import lmdze_settings

    s = lmdze_settings({**_cfg(t={"tau_hours": 12.0}), "lmdze": {"iim": 48, "jjm": 32, "llm": 19}})
    assert (s.days, s.guide, s.tau_hours, s.tau_t_hours, s.iim, s.jjm, s.llm) == (3, ("u", "v", "t"), 6.0, 12.0, 48, 32, 19)
    assert s.start == "2000-01-31T00:00:00"
    assert lmdze_settings(_cfg()).guide == ("u", "v")
    q = lmdze_settings(_cfg(q={"tau_hours": 24.0}))
    assert q.guide == ("u", "v", "q") and q.tau_of("q") == 24.0 and q.tau_of("t") == 6.0
    guide = next(line for line in render_namelists(q)["gcm"].splitlines() if line.startswith("&conf_guide_nml"))
    assert "guide_q = t" in guide and "tau_max_q = 1.0" in guide


@pytest.mark.parametrize(("cfg", "match"), [
    ({**_cfg(), "period": {"start": "2000-01-31T00:00", "end": "2000-02-01T06:00"}}, r"'period' .* whole days"),
])
def test_backend_settings_refuse_what_lmdze_cannot_run(cfg, match):
    from nudgeml.gcm.runners import lmdze_settings

    with pytest.raises(ConfigError, match=match):
        lmdze_settings(cfg)


def test_run_dir_is_emptied_only_when_it_is_ours(tmp_path):
    from nudgeml.errors import InputError
    from nudgeml.lmdze_run import RUN_MARKER, fresh_run_dir

    run = fresh_run_dir(tmp_path / "run")
    (run / "du_guide.nc").write_text("from an earlier run")
    again = fresh_run_dir(tmp_path / "run")
    assert sorted(p.name for p in again.iterdir()) == [RUN_MARKER]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match=r"other: not empty and not an LMDZE run folder"):
        fresh_run_dir(other)
    assert (other / "keep.txt").read_text() == "user data"


def test_free_run_correction_namelist_for_the_physics_hook(tmp_path):
    from nudgeml.lmdze_run import Correction

    assert Correction("none").namelist() == ("&nudgeml_nml mode_name = 'off', interval_hours = 6.0, mean_file = '', "
                                             "model_dir = '', dump_file = '', mean_residual = f, eddy_only = f /\n")
    text = Correction("ml", mean_file=tmp_path / "m.nc", model_dir=tmp_path / "model", interval_hours=3.0, dump="d.nc").namelist()
    assert "mode_name = 'ml'" in text and f"mean_file = '{tmp_path / 'm.nc'}'" in text and "interval_hours = 3.0" in text
    assert "dump_file = 'd.nc'" in text and f"model_dir = '{tmp_path / 'model'}'" in text
    assert "mean_residual = t" in Correction("ml", mean_file=tmp_path / "m.nc", model_dir=tmp_path / "model", mean_residual=True).namelist()
    assert "eddy_only = t" in Correction("ml", mean_file=tmp_path / "m.nc", model_dir=tmp_path / "model", eddy_only=True).namelist()
    with pytest.raises(ConfigError, match="'mean': eddy_only filters a model's part"):
        Correction("mean", mean_file=tmp_path / "m.nc", eddy_only=True).namelist()
    with pytest.raises(ConfigError, match="'mean': mean_residual shifts a model's output"):
        Correction("mean", mean_file=tmp_path / "m.nc", mean_residual=True).namelist()
    with pytest.raises(ConfigError, match="'mean' needs the mean tendency file"):
        Correction("mean").namelist()
    with pytest.raises(ConfigError, match="'ml' needs the exported model's folder"):
        Correction("ml", mean_file=tmp_path / "m.nc").namelist()
    with pytest.raises(ConfigError, match="correction 'replay': use one of none, mean, ml"):
        Correction("replay").namelist()


def test_hook_counts_from_the_gcm_log():
    from nudgeml.lmdze_run import hook_counts

    log = "x\n nudgeml: mode 2 refreshes 4 columns 712 fallbacks 244\n nudgeml: clipped 1395\nEverything is cool\n"
    assert hook_counts(log) == {"mode": 2, "refreshes": 4, "columns": 712, "fallbacks": 244, "clipped": 1395}
    # gfortran's f0.6 writes no leading zero
    timed = log + " nudgeml: wall seconds init .213000 steps 1.500000\n"
    assert hook_counts(timed)["hook_init_s"] == 0.213 and hook_counts(timed)["hook_steps_s"] == 1.5
    assert hook_counts("Everything is cool\n") == {}


def test_features_are_built_as_the_lmdz_routine_builds_them():
    import numpy as np

    from nudgeml.lmdze_run import lmdz_routine_features
    from nudgeml.manifest import Block

    rng = np.random.default_rng(0)
    klon, klev = 5, 3
    cols = {k: rng.normal(size=(klon, klev)) for k in ("u", "v", "t", "q", "play")}
    cols |= {"paprs": rng.normal(size=(klon, klev + 1)), "lat_deg": rng.uniform(-90, 90, klon),
             "land_fraction": rng.uniform(0, 1, klon), "cos_zenith": rng.uniform(0, 1, klon)}
    blocks = [Block("v", "m s-1", klev), Block("p", "Pa", klev), Block("ps", "Pa", 1), Block("cos_lat", "1", 1),
              Block("land_fraction", "1", 1)]
    x = lmdz_routine_features(blocks, cols)
    assert x.dtype == np.float32 and x.shape == (klon, 2 * klev + 3)
    np.testing.assert_array_equal(x[:, :klev], cols["v"].astype(np.float32))
    np.testing.assert_array_equal(x[:, klev:2 * klev], cols["play"].astype(np.float32))
    np.testing.assert_array_equal(x[:, 2 * klev], cols["paprs"][:, 0].astype(np.float32))
    np.testing.assert_array_equal(x[:, 2 * klev + 1], np.cos(cols["lat_deg"] * (np.pi / 180)).astype(np.float32))
    with pytest.raises(InputError, match="'omega' has no LMDZ source"):
        lmdz_routine_features([Block("omega", "Pa s-1", klev)], cols)


def test_free_settings_span_whole_days():
    from nudgeml.gcm.runners import lmdze_free_settings

    s = lmdze_free_settings({"free_runs": {"start": "2000-02-06T00:00", "end": "2000-02-08T00:00"}, "lmdze": {"iim": 8}})
    assert (s.start, s.days, s.iim, tuple(s.guide)) == ("2000-02-06T00:00:00", 2, 8, ())
    with pytest.raises(ConfigError, match="'free_runs.start', 'free_runs.end'.*whole days"):
        lmdze_free_settings({"free_runs": {"start": "2000-02-06T00:00", "end": "2000-02-07T06:00"}})


def test_routine_eddy_only_reference_removes_the_row_means_of_the_kept_columns():
    """The Python twin of the LMDZ routine's eddies only: on a case worked by hand, the kept columns'
    part about the mean loses its row mean (over the kept columns), fallback columns keep the mean, a
    row split in two parts sums to the same; rows come from the columns' latitudes in LMDZ's order."""
    from nudgeml.lmdze_run import latitude_rows, routine_eddy_only

    lat = np.array([90.0, 45.0, 45.0, 45.0, -45.0, -45.0, -45.0, -90.0])
    rows = latitude_rows(lat)
    assert rows.tolist() == [1, 2, 2, 2, 3, 3, 3, 4]
    mean = np.full((8, 2), 1.0)
    part = np.array([[5.0, -1.0], [1.0, 2.0], [3.0, 4.0], [9.0, 9.0], [2.0, 0.0], [4.0, 0.0], [0.0, 6.0], [7.0, 7.0]])
    kept = np.array([True, True, True, False, True, True, True, True])
    out = routine_eddy_only(mean + part, mean, kept, rows)
    np.testing.assert_array_equal(out[0], mean[0])  # a pole is its own row: its part is its row mean
    np.testing.assert_array_equal(out[1:3], mean[1:3] + np.array([[-1.0, -1.0], [1.0, 1.0]]))  # row 2 over columns 2, 3
    np.testing.assert_array_equal(out[3], mean[3] + part[3])  # a fallback column is left as it is (the mean)
    np.testing.assert_array_equal(out[4:7], mean[4:7] + np.array([[0.0, -2.0], [2.0, -2.0], [-2.0, 4.0]]))
    np.testing.assert_array_equal(routine_eddy_only(mean + part, mean, kept, rows, [(0, 5), (5, 8)]), out)
