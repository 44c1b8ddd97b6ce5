"""The compat library LMDZE is built with (``fortran/lmdze_compat``): its ctest suite.

Each numerical routine LMDZE takes from Numer_Rec_95 is checked against values known in closed form
(one ctest per routine), and the MPI/XIOS stand-ins accept LMDZE's calls. Needs cmake and gfortran
only: no NetCDF, no LMDZE source, so it runs in CI.
"""

import re

import pytest

from nudgeml import lmdze_build


@pytest.fixture(scope="module")
def ctest(tmp_path_factory):
    if missing := lmdze_build.compat_missing_tools():
        pytest.skip(f"lmdze_compat tests need {', '.join(missing)}")
    return lmdze_build.run_compat_tests(tmp_path_factory.mktemp("lmdze_compat"))


def test_every_routine_passes(ctest):
    output = ctest.stdout + ctest.stderr
    assert ctest.returncode == 0, output[-6000:]
    passed = set(re.findall(r"Test\s+#\d+: (\S+) \.+\s+Passed", output))
    assert passed == set(lmdze_build.COMPAT_TESTS), output[-4000:]


def test_installed_packages_give_lmdzes_target_names(tmp_path):
    """The install tree holds one CMake package per name LMDZE's find_package asks for."""
    if missing := lmdze_build.compat_missing_tools():
        pytest.skip(f"lmdze_compat tests need {', '.join(missing)}")
    prefix = tmp_path / "prefix"
    lmdze_build.install_compat(tmp_path / "work", prefix)
    targets = {}
    for package in ("Numer_Rec_95", "XIOS", "MPI"):
        assert (prefix / "lib" / "cmake" / package / f"{package}Config.cmake").is_file()
        text = (prefix / "lib" / "cmake" / package / f"{package}Targets.cmake").read_text()
        targets[package] = set(re.findall(r"add_library\((\S+) ", text))
    assert targets == {"Numer_Rec_95": {"Numer_Rec_95::numer_rec_95"}, "XIOS": {"XIOS::xios"},
                       "MPI": {"MPI::MPI_Fortran", "MPI::MPI_CXX"}}
    for module in ("numer_rec_95.mod", "xios.mod", "mpi_f08.mod"):
        assert (prefix / "include" / "lmdze_compat" / module).is_file()


def test_set_nqmx_changes_one_line(tmp_path):
    f = tmp_path / "dimensions.f90"
    f.write_text("  INTEGER, protected:: llm = 11\n  integer, parameter:: nqmx = 5 ! maximum number of tracers\n")
    lmdze_build.set_nqmx(f)
    assert "integer, parameter:: nqmx = 4 ! maximum" in f.read_text()
    f.write_text("integer nqmx\n")
    with pytest.raises(lmdze_build.LmdzeBuildError, match="nqmx"):
        lmdze_build.set_nqmx(f)


def test_find_sources_names_what_is_missing(tmp_path):
    (tmp_path / "Jumble").mkdir()
    (tmp_path / "Jumble" / "jumble.f90").write_text("")
    found, missing = lmdze_build.find_sources(tmp_path / "build", env={"LMDZE_SOURCES": str(tmp_path)})
    assert set(found) == {"Jumble"}
    assert len(missing) == 3 and any("LMDZE_SOURCES/LMDZE" in m and "dimensions.f90" in m for m in missing)
    _, missing = lmdze_build.find_sources(tmp_path / "build", env={})
    assert len(missing) == 4 and any("$LMDZE_SRC" in m and "github.com/lguez/LMDZE" in m for m in missing)


def test_tree_digest_follows_contents_not_times(tmp_path):
    (tmp_path / "a.f90").write_text("x = 1\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref\n")
    first = lmdze_build.tree_digest(tmp_path)
    (tmp_path / ".git" / "HEAD").write_text("other\n")  # git metadata is not an input
    (tmp_path / "a.f90").write_text("x = 1\n")  # rewritten, same contents
    assert lmdze_build.tree_digest(tmp_path) == first
    (tmp_path / "a.f90").write_text("x = 2\n")
    assert lmdze_build.tree_digest(tmp_path) != first
    assert lmdze_build.tree_digest(tmp_path, "nqmx=4") != lmdze_build.tree_digest(tmp_path, "nqmx=5")
