"""Build LMDZE (github lguez/LMDZE, the Fortran 2003 LMDZ by L. Guez) with nudgeml's compat library.

LMDZE needs four public GitHub repositories: lguez/LMDZE, lguez/Jumble, lguez/NetCDF95 and
lguez/cmake (the CMake find modules both LMDZE and NetCDF95 hold as a git submodule). Each comes from
an environment variable naming a source folder (``LMDZE_SRC``, ``JUMBLE_SRC``, ``NETCDF95_SRC``,
``LGUEZ_CMAKE_SRC``), else from ``$LMDZE_SOURCES/<name>``, else from ``<build>/sources/<name>``,
where ``clone=True`` puts a ``git clone --depth 1``. Nothing is copied into the repository.

LMDZE also asks for Numer_Rec_95, XIOS and MPI, which are not built here: ``fortran/lmdze_compat``
provides what LMDZE calls of them (``Numer_Rec_95::numer_rec_95``, ``XIOS::xios``,
``MPI::MPI_Fortran``), installed as CMake package configurations into the same prefix as Jumble and
NetCDF95, and LMDZE is configured with ``CMAKE_FIND_PACKAGE_PREFER_CONFIG=ON`` so that its
``find_package`` calls find them. The only change to LMDZE's own files is made in a copy under the
build folder: ``nqmx = 4`` in ``dimensions.f90`` (with 5 the Cariolle ozone tracer is on and needs a
``coefoz.nc``; with 4 the built-in tracers apply and no ``traceur.def`` is needed), and the record of
the nudging increments: ``fortran/lmdze_guide/nudgeml_guide_diag.f90`` added to ``dyn3d/Guide`` and
called around the relaxation in ``guide.f90`` (:func:`add_guide_diagnostic`); and nudgeml's online
correction in the physics: the bridge's Fortran module, the LMDZ routine ``nudgeml_lmdz`` and the
LMDZE hook ``fortran/lmdze_physiq/nudgeml_lmdze.f90`` compiled into LMDZE and called from ``physiq``
(:func:`add_physics_hook`), linked to the bridge's C shim over the venv's libtorch, built first
(``nudgeml.bridge``, target ``nudgeml_torch`` only).

Every step records a fingerprint of its inputs (file contents, options) and is skipped on a rerun
when the fingerprint and the step's outputs are unchanged. Imports nothing from Snakemake.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPAT_DIR = REPO_ROOT / "fortran" / "lmdze_compat"
GUIDE_DIAG_F90 = REPO_ROOT / "fortran" / "lmdze_guide" / "nudgeml_guide_diag.f90"
#: nudgeml's online correction compiled into LMDZE's physics: the Fortran side of the bridge, the
#: LMDZ-shaped routine LMDZ6 calls on Jean Zay, and the LMDZE hook that calls it from physiq
PHYSICS_HOOK_F90 = (REPO_ROOT / "fortran" / "src" / "nudgeml_torch.f90", REPO_ROOT / "fortran" / "src" / "nudgeml_trees.f90",
                    REPO_ROOT / "fortran" / "lmdz" / "nudgeml_lmdz.F90",
                    REPO_ROOT / "fortran" / "lmdze_physiq" / "nudgeml_lmdze.f90")
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "lmdze"
MIN_CMAKE = (3, 21)  # NetCDF95's cmake_minimum_required
NQMX = 4
NQMX_LINE = re.compile(r"(integer, parameter:: *nqmx *= *)(\d+)", re.IGNORECASE)
# the GitHub repository, the environment variable naming a source folder, a file proving the folder
SOURCES = {
    "LMDZE": ("https://github.com/lguez/LMDZE.git", "LMDZE_SRC", "dimensions.f90"),
    "Jumble": ("https://github.com/lguez/Jumble.git", "JUMBLE_SRC", "jumble.f90"),
    "NetCDF95": ("https://github.com/lguez/NetCDF95.git", "NETCDF95_SRC", "netcdf95.f90"),
    "cmake": ("https://github.com/lguez/cmake.git", "LGUEZ_CMAKE_SRC", "FindNetCDF_Fortran.cmake"),
}
SOURCES_ROOT_ENV = "LMDZE_SOURCES"


class LmdzeBuildError(RuntimeError):
    """A source, a tool or a build step is missing or failed; the message says which."""


@dataclass
class BuildResult:
    build_dir: Path
    gcm: Path
    ce0l: Path
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall seconds (0 when skipped)
    skipped: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- sources

def executable(name: str = "gcm") -> Path:
    """LMDZE's ``gcm`` or ``ce0l`` where :func:`build` puts them in the default build folder (read at
    the call, so a test may point :data:`DEFAULT_BUILD_DIR` elsewhere)."""
    sub = "dyn3d" if name == "gcm" else "dynphy_lonlat"
    return DEFAULT_BUILD_DIR / "work" / "LMDZE" / sub / name


def find_sources(build_dir: Path = DEFAULT_BUILD_DIR, *, env: dict[str, str] | None = None) -> tuple[dict[str, Path], list[str]]:
    """The source folder of each repository found without a network, and a line for each missing one."""
    env = dict(os.environ) if env is None else env
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name, (url, var, marker) in SOURCES.items():
        candidates = []
        if env.get(var):
            candidates.append((Path(env[var]), f"${var}"))
        if env.get(SOURCES_ROOT_ENV):
            candidates.append((Path(env[SOURCES_ROOT_ENV]) / name, f"${SOURCES_ROOT_ENV}/{name}"))
        candidates.append((Path(build_dir) / "sources" / name, None))
        for path, origin in candidates:
            if (path / marker).is_file():
                found[name] = path.resolve()
                break
            if origin is not None:  # a folder the user named must be right: say so rather than fall back
                missing.append(f"{name}: {origin} = {path} has no {marker}")
                break
        else:
            missing.append(f"{name} (${var} or ${SOURCES_ROOT_ENV}/{name}; {url.removesuffix('.git')})")
    return found, missing


def clone_missing(build_dir: Path, names: list[str]) -> None:
    """git clone --depth 1 the named repositories into ``<build>/sources`` (needs a network)."""
    if shutil.which("git") is None:
        raise LmdzeBuildError("git not found: cannot clone LMDZE's sources (or set LMDZE_SRC, JUMBLE_SRC, ...)")
    for name in names:
        dest = Path(build_dir) / "sources" / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _check(["git", "clone", "--depth", "1", SOURCES[name][0], str(dest)], f"git clone {SOURCES[name][0]}")


# ------------------------------------------------------------------------------------------ tools

def missing_tools() -> list[str]:
    """What is missing to build LMDZE here, each with how to get it (empty when all is there)."""
    out = []
    for tool, how in (("cmake", "apt cmake or pip cmake"), ("gfortran", "apt gfortran"), ("g++", "apt g++"),
                      ("make", "apt make"), ("nf-config", "apt libnetcdff-dev")):
        if shutil.which(tool) is None:
            out.append(f"{tool} ({how})")
    if shutil.which("cmake") is not None and cmake_version() < MIN_CMAKE:
        out.append(f"cmake >= {'.'.join(map(str, MIN_CMAKE))} (found {'.'.join(map(str, cmake_version()))}; pip cmake)")
    return out


def cmake_version() -> tuple[int, ...]:
    out = subprocess.run(["cmake", "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    if m is None:
        raise LmdzeBuildError(f"cannot read the cmake version from: {out[:200]!r}")
    return int(m.group(1)), int(m.group(2))


def _check(cmd: list[str], what: str, cwd: Path | None = None, log: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        raise LmdzeBuildError(f"{what} failed (status {proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}")


# ----------------------------------------------------------------------------------- fingerprints

def tree_digest(root: Path, extra: str = "") -> str:
    """SHA-256 of every file's relative path and contents under ``root`` (.git left out), plus ``extra``."""
    h = hashlib.sha256(extra.encode())
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def _up_to_date(stamp: Path, digest: str, outputs: list[Path]) -> bool:
    return stamp.is_file() and stamp.read_text() == digest and all(p.exists() for p in outputs)


# ------------------------------------------------------------------------------------------ steps

def _insert_once(path: Path, pattern: str, text: str, *, before: bool) -> None:
    """Insert ``text`` (a line) before or after the one line of ``path`` matching ``pattern``."""
    lines = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if re.search(pattern, line, re.IGNORECASE)]
    if len(hits) != 1:
        raise LmdzeBuildError(f"{path}: expected one line matching {pattern!r} to add nudgeml's code, found {len(hits)}")
    lines.insert(hits[0] if before else hits[0] + 1, text + "\n")
    path.write_text("".join(lines))


def add_guide_diagnostic(tree: Path) -> None:
    """Record the increments LMDZE's guide applies (the module's header says how): in the build copy,
    add ``nudgeml_guide_diag.f90`` to ``dyn3d/Guide`` and call it just before and just after the
    relaxation of ``guide`` (before ``tau = mod(...)``, at the end of the subroutine)."""
    guide_dir = tree / "dyn3d" / "Guide"
    shutil.copyfile(GUIDE_DIAG_F90, guide_dir / GUIDE_DIAG_F90.name)
    _insert_once(guide_dir / "CMakeLists.txt", r"^target_sources\(LMDZE_objects PRIVATE", f"  {GUIDE_DIAG_F90.name}", before=False)
    guide = guide_dir / "guide.f90"
    _insert_once(guide, r"^\s*use writefield_m, only: writefield\s*$",
                 "    use nudgeml_guide_diag_m, only: nudgeml_guide_before, nudgeml_guide_after", before=False)
    _insert_once(guide, r"^\s*tau = mod\(real\(itau\) / real\(day_step / 4\), 1\.\)", "    call nudgeml_guide_before(ucov, vcov, teta, q)", before=True)
    _insert_once(guide, r"^\s*END SUBROUTINE guide\s*$", "    call nudgeml_guide_after(itau, ucov, vcov, teta, q)", before=True)


HOOK_CMAKE = """# nudgeml's online correction in LMDZE's physics (added to this build copy by nudgeml.lmdze_build)
target_sources(LMDZE_objects PRIVATE {sources})
# the guard's float64 arithmetic must be numpy's, bit for bit: no FMA contraction
set_source_files_properties({sources} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")
# the C shim over libtorch (nudgeml.bridge); its RUNPATH finds libtorch. dlopen (nudgeml_trees) is in libdl
target_link_libraries(LMDZE_objects PUBLIC "${{NUDGEML_TORCH_LIBRARY}}" ${{CMAKE_DL_LIBS}})
"""


def add_physics_hook(tree: Path) -> None:
    """Put nudgeml's online correction into LMDZE's physics, in the build copy: the Fortran files of
    :data:`PHYSICS_HOOK_F90` in a new ``nudgeml/`` folder compiled into ``LMDZE_objects`` and linked to
    the bridge's shim (the CMake variable ``NUDGEML_TORCH_LIBRARY``), and one call in ``physiq``, just
    before its outputs (``! SORTIES``): after LMDZE's conversion of the physics' kinetic-energy change
    into heat, so the correction is not converted (``fortran/lmdze_physiq/nudgeml_lmdze.f90`` says
    what it reads and does). Without a ``nudgeml.nml`` in the run directory the call does nothing."""
    hook = tree / "nudgeml"
    hook.mkdir(exist_ok=True)
    for f90 in PHYSICS_HOOK_F90:
        shutil.copyfile(f90, hook / f90.name)
    (hook / "CMakeLists.txt").write_text(HOOK_CMAKE.format(sources=" ".join(f.name for f in PHYSICS_HOOK_F90)))
    _insert_once(tree / "CMakeLists.txt", r"^include\(TAGS\)", "add_subdirectory(nudgeml)", before=True)
    physiq = tree / "phylmd" / "physiq.f90"
    _insert_once(physiq, r"^\s*use zenang_m, only: zenang\s*$",
                 "    use phyetat0_m, only: nml_rlat => rlat, nml_masque => masque\n"
                 "    use nudgeml_lmdze_m, only: nudgeml_lmdze_correct", before=False)
    _insert_once(physiq, r"^\s*! SORTIES\s*$",
                 "    call nudgeml_lmdze_correct(itap, dtphys, u, v, t, qx(:, :, ivap), paprs, play, nml_rlat, nml_masque, mu0, &\n"
                 "         lafin, u_seri, v_seri)", before=True)


def copy_with_cmake_modules(src: Path, dest: Path, cmake_src: Path) -> None:
    """Copy a source tree whose ``cmake/`` is a git submodule (empty in a plain checkout) and fill it."""
    if dest.exists():
        shutil.rmtree(dest)
    # symlinks stay links: LMDZE's Tests_input holds links to files outside the repository
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    modules = dest / "cmake"
    if not (modules / "FindNetCDF_Fortran.cmake").is_file():
        if modules.exists():
            shutil.rmtree(modules)
        shutil.copytree(cmake_src, modules, ignore=shutil.ignore_patterns(".git"))


def set_nqmx(dimensions_f90: Path, nqmx: int = NQMX) -> None:
    """Set LMDZE's number of tracers (module dimensions) in the build copy; one clear error if absent."""
    text = dimensions_f90.read_text()
    new, count = NQMX_LINE.subn(lambda m: f"{m.group(1)}{nqmx}", text)
    if count != 1:
        raise LmdzeBuildError(f"{dimensions_f90}: expected one 'integer, parameter:: nqmx = N' line, found {count}")
    dimensions_f90.write_text(new)


def _cmake_project(name: str, src: Path, work: Path, prefix: Path, *, jobs: int, install: bool,
                   targets: list[str] | None = None, options: list[str] | None = None,
                   log: Path | None) -> None:
    configure = ["cmake", "-S", str(src), "-B", str(work), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DCMAKE_PREFIX_PATH={prefix}", *(options or [])]
    _check(configure, f"{name}: cmake configure", log=log)
    build = ["cmake", "--build", str(work), "-j", str(jobs)]
    for t in targets or []:
        build += ["--target", t]
    _check(build, f"{name}: build", log=log)
    if install:
        _check(["cmake", "--install", str(work)], f"{name}: install", log=log)


COMPAT_TESTS = ("rtsafe", "locate", "hunt", "spline", "splint", "jacobi", "eigsrt", "nr_erf", "regr",
                "stubs", "mpi_abort_status")


def compat_missing_tools() -> list[str]:
    """Tools the compat library's own tests need (no NetCDF, no LMDZE source)."""
    return [t for t in ("cmake", "ctest", "gfortran") if shutil.which(t) is None]


def run_compat_tests(work: Path, *, jobs: int = 2) -> subprocess.CompletedProcess[str]:
    """Configure and build ``fortran/lmdze_compat`` with its tests into ``work`` and run ctest."""
    if missing := compat_missing_tools():
        raise LmdzeBuildError(f"missing build tools: {', '.join(missing)} (apt-get install cmake gfortran)")
    work = Path(work)
    _check(["cmake", "-S", str(COMPAT_DIR), "-B", str(work), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=ON"],
           "lmdze_compat: cmake configure")
    _check(["cmake", "--build", str(work), "-j", str(jobs)], "lmdze_compat: build")
    return subprocess.run(["ctest", "--test-dir", str(work), "--output-on-failure"], capture_output=True,
                          text=True, check=False)


def install_compat(work: Path, prefix: Path, *, jobs: int = 2, log: Path | None = None) -> None:
    """Build ``fortran/lmdze_compat`` (without its tests) in ``work`` and install it into ``prefix``."""
    _cmake_project("lmdze_compat", COMPAT_DIR, Path(work), Path(prefix), jobs=jobs, install=True,
                   options=["-DBUILD_TESTING=OFF"], log=log)


def build(build_dir: Path = DEFAULT_BUILD_DIR, *, jobs: int = 2, clone: bool = False,
          sources: dict[str, Path] | None = None, log=print) -> BuildResult:
    """Build the compat library, Jumble, NetCDF95 and LMDZE's ``gcm`` and ``ce0l`` under ``build_dir``.

    ``sources`` overrides the lookup of :func:`find_sources`; with ``clone`` the missing
    repositories are cloned from GitHub first. Steps whose inputs did not change are skipped.
    """
    build_dir = Path(build_dir).resolve()
    if missing := missing_tools():
        raise LmdzeBuildError("missing to build LMDZE: " + "; ".join(missing))
    if sources is None:
        sources, missing_src = find_sources(build_dir)
        if missing_src and clone:
            clone_missing(build_dir, [n for n in SOURCES if n not in sources])
            sources, missing_src = find_sources(build_dir)
        if missing_src:
            raise LmdzeBuildError("LMDZE sources missing (docs/lmdze.md; or clone=True / --clone where a network allows):\n  "
                                  + "\n  ".join(missing_src))
    prefix = build_dir / "prefix"
    stamps = build_dir / "stamps"
    stamps.mkdir(parents=True, exist_ok=True)
    logfile = build_dir / "build.log"
    lmdze_work = build_dir / "work" / "LMDZE"
    result = BuildResult(build_dir, lmdze_work / "dyn3d" / "gcm", lmdze_work / "dynphy_lonlat" / "ce0l")

    def step(name: str, digest: str, outputs: list[Path], action) -> None:
        stamp = stamps / name
        if _up_to_date(stamp, digest, outputs):
            result.skipped.append(name)
            result.seconds[name] = 0.0
            log(f"lmdze: {name}: up to date")
            return
        stamp.unlink(missing_ok=True)
        t0 = time.perf_counter()
        log(f"lmdze: {name} ...")
        action()
        result.seconds[name] = time.perf_counter() - t0
        stamp.write_text(digest)
        log(f"lmdze: {name}: done in {result.seconds[name]:.1f} s")

    cmake_digest = tree_digest(sources["cmake"])
    # The LMDZE step's digest holds those of the libraries it links: a library rebuilt relinks LMDZE.
    compat_digest = tree_digest(COMPAT_DIR)
    step("compat", compat_digest, [prefix / "lib" / "cmake" / p / f"{p}Config.cmake" for p in ("Numer_Rec_95", "XIOS", "MPI")],
         lambda: install_compat(build_dir / "work" / "compat", prefix, jobs=jobs, log=logfile))
    jumble_digest = tree_digest(sources["Jumble"])
    step("Jumble", jumble_digest, [prefix / "lib" / "cmake" / "Jumble"],
         lambda: _cmake_project("Jumble", sources["Jumble"], build_dir / "work" / "jumble-build", prefix,
                                jobs=jobs, install=True, log=logfile))
    netcdf95_digest = tree_digest(sources["NetCDF95"], cmake_digest)

    def netcdf95() -> None:
        tree = build_dir / "work" / "NetCDF95"
        copy_with_cmake_modules(sources["NetCDF95"], tree, sources["cmake"])
        _cmake_project("NetCDF95", tree, build_dir / "work" / "netcdf95-build", prefix, jobs=jobs, install=True,
                       options=["-DBUILD_TESTING=OFF"], log=logfile)

    step("NetCDF95", netcdf95_digest, [prefix / "lib" / "cmake" / "NetCDF95"], netcdf95)
    # the bridge's shim (C++ over the venv's libtorch), which the physics hook links
    import torch

    bridge_dir = build_dir / "work" / "bridge"
    torch_lib = bridge_dir / "libnudgeml_torch.so"
    bridge_digest = tree_digest(REPO_ROOT / "fortran" / "src", (REPO_ROOT / "fortran" / "CMakeLists.txt").read_text()
                                + f"torch={torch.__version__}")

    def bridge() -> None:
        from nudgeml.bridge import configure_and_build

        configure_and_build(bridge_dir, jobs=jobs, targets=("nudgeml_torch",), testing=False)

    step("bridge", bridge_digest, [torch_lib], bridge)
    hook_text = "".join(f.read_text() for f in PHYSICS_HOOK_F90) + HOOK_CMAKE
    tree_digest_lmdze = tree_digest(sources["LMDZE"], cmake_digest + f"nqmx={NQMX}" + GUIDE_DIAG_F90.read_text()
                                    + "guide-diag-1" + hook_text + "physics-hook-1")
    tree = build_dir / "work" / "LMDZE-src"

    def lmdze_tree() -> None:
        copy_with_cmake_modules(sources["LMDZE"], tree, sources["cmake"])
        set_nqmx(tree / "dimensions.f90")
        add_guide_diagnostic(tree)
        add_physics_hook(tree)

    step("LMDZE-tree", tree_digest_lmdze, [tree / "dimensions.f90"], lmdze_tree)
    options = ["-DCMAKE_FIND_PACKAGE_PREFER_CONFIG=ON",  # the compat packages before any Find module
               f"-DNUDGEML_TORCH_LIBRARY={torch_lib}"]
    step("LMDZE", "".join((compat_digest, jumble_digest, netcdf95_digest, bridge_digest, tree_digest_lmdze, *options)),
         [result.gcm, result.ce0l],
         lambda: _cmake_project("LMDZE", tree, lmdze_work, prefix, jobs=jobs, install=False,
                                targets=["gcm", "ce0l"], options=options, log=logfile))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="build_lmdze", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR, help="default: build/lmdze")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--clone", action="store_true", help="git clone the repositories not found (needs a network)")
    args = ap.parse_args(argv)
    try:
        res = build(args.build_dir, jobs=args.jobs, clone=args.clone, log=lambda line: print(line, flush=True))
    except LmdzeBuildError as err:
        print(f"build_lmdze: {err}", file=sys.stderr)
        return 1
    total = sum(res.seconds.values())
    print(f"build_lmdze: gcm  {res.gcm}\nbuild_lmdze: ce0l {res.ce0l}\nbuild_lmdze: {total:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in res.seconds.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
