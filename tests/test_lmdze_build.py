"""The build copy's changes to LMDZE (nudgeml.lmdze_build), on a stand-in tree: no LMDZE source needed."""

import pytest

from nudgeml.lmdze_build import GUIDE_DIAG_F90, PHYSICS_HOOK_F90, LmdzeBuildError, add_guide_diagnostic, add_physics_hook

GUIDE = """MODULE guide_m
CONTAINS
  SUBROUTINE guide(itau, ucov, vcov, teta, q, ps)
    use writefield_m, only: writefield
    INTEGER, INTENT(IN):: itau
    tau = mod(real(itau) / real(day_step / 4), 1.)
    IF (guide_u) ucov = 0.
  END SUBROUTINE guide
END MODULE guide_m
"""


def _tree(tmp_path, guide=GUIDE):
    d = tmp_path / "dyn3d" / "Guide"
    d.mkdir(parents=True)
    (d / "guide.f90").write_text(guide)
    (d / "CMakeLists.txt").write_text("target_sources(LMDZE_objects PRIVATE conf_guide.f90 coordij.f90\n  guide.f90)\n")
    return d


def test_diagnostic_calls_wrap_the_relaxation(tmp_path):
    d = _tree(tmp_path)
    add_guide_diagnostic(tmp_path)
    lines = [line.strip() for line in (d / "guide.f90").read_text().splitlines()]
    use = lines.index("use nudgeml_guide_diag_m, only: nudgeml_guide_before, nudgeml_guide_after")
    before = lines.index("call nudgeml_guide_before(ucov, vcov, teta, q)")
    after = lines.index("call nudgeml_guide_after(itau, ucov, vcov, teta, q)")
    assert lines[use - 1].startswith("use writefield_m")
    assert lines[before + 1].startswith("tau = mod(") and lines[after + 1] == "END SUBROUTINE guide"
    assert (d / GUIDE_DIAG_F90.name).read_text() == GUIDE_DIAG_F90.read_text()
    assert "nudgeml_guide_diag.f90" in (d / "CMakeLists.txt").read_text().splitlines()[1]


def test_a_changed_guide_is_one_clear_error(tmp_path):
    _tree(tmp_path, GUIDE.replace("    tau = mod(real(itau) / real(day_step / 4), 1.)\n", ""))
    with pytest.raises(LmdzeBuildError, match=r"guide.f90: expected one line matching .*tau = mod.*found 0"):
        add_guide_diagnostic(tmp_path)


PHYSIQ = """module physiq_m
contains
  SUBROUTINE physiq(lafin, dayvrai, gmtime, paprs, play, zphi, pphis, u, v, t, qx, omega, d_u, d_v, d_t, d_qx)
    use zenang_m, only: zenang
    u_seri = u
    ! SORTIES
    d_u = (u_seri - u) / dtphys
  END SUBROUTINE physiq
end module physiq_m
"""


def _physics_tree(tmp_path, physiq=PHYSIQ):
    (tmp_path / "phylmd").mkdir()
    (tmp_path / "phylmd" / "physiq.f90").write_text(physiq)
    (tmp_path / "CMakeLists.txt").write_text("project(LMDZE)\nadd_subdirectory(phylmd)\ninclude(TAGS)\n")


def test_physics_hook_is_called_before_the_outputs_and_built_with_the_bridge(tmp_path):
    _physics_tree(tmp_path)
    add_physics_hook(tmp_path)
    lines = [line.strip() for line in (tmp_path / "phylmd" / "physiq.f90").read_text().splitlines()]
    call = next(i for i, line in enumerate(lines) if line.startswith("call nudgeml_lmdze_correct("))
    # after the physics (and its kinetic-energy-to-heat conversion), just before the outputs
    assert lines[call + 2] == "! SORTIES" and lines.index("u_seri = u") < call
    assert lines[lines.index("use zenang_m, only: zenang") + 2] == "use nudgeml_lmdze_m, only: nudgeml_lmdze_correct"
    top = (tmp_path / "CMakeLists.txt").read_text().splitlines()
    assert top.index("add_subdirectory(nudgeml)") == top.index("include(TAGS)") - 1
    hook = (tmp_path / "nudgeml" / "CMakeLists.txt").read_text()
    for f90 in PHYSICS_HOOK_F90:
        assert (tmp_path / "nudgeml" / f90.name).read_text() == f90.read_text() and f90.name in hook
    assert "${NUDGEML_TORCH_LIBRARY}" in hook and "-ffp-contract=off" in hook


def test_a_changed_physiq_is_one_clear_error(tmp_path):
    _physics_tree(tmp_path, PHYSIQ.replace("    ! SORTIES\n", ""))
    with pytest.raises(LmdzeBuildError, match=r"physiq.f90: expected one line matching .*SORTIES.*found 0"):
        add_physics_hook(tmp_path)
