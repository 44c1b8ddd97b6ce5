"""Stand-in GCM: jcm 3.0.0 (SPEEDY physics on dinosaur's JAX spectral core), driven in fixed windows.

The same class plays both roles of the embedded default:

* the *truth* ("ERA5"): finer truncation, default physics, no external wind tendency;
* the *model* ("LMDZ"): coarse truncation, perturbed physics, optionally relaxed toward a target
  (nudged run) or given an external wind tendency (mean-tendency and ML-corrected free runs).

Layouts. jcm's physics state is ``(level, lon, lat)`` with level 0 at the **model top** and latitudes
ascending. Everything this module returns is in the package's canonical grid layout
``(level, lat, lon)`` with level 0 at the **surface** (as LMDZ's ``klev = 1``), latitudes ascending and
longitudes ascending in [0, 360). The two conversions below are the only places that know jcm's order.

The relaxation tendency is computed by :class:`WindTendencyTerm`, a physics term that puts what it
returns into the model's diagnostics; its window mean (``output_averages=True``) is therefore exactly
the tendency the model applied, as ``docs/science.md`` asks (no offline reconstruction). The same term
relaxes temperature and specific humidity when asked (LMDZ's ``guide_T``, ``guide_Q``, each with its
own time scale: :meth:`StandinGCM.set_thermo_relaxation`), recorded the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

log = logging.getLogger(__name__)

#: Reference pressure used to label sigma levels as LMDZ ``presnivs`` (LMDZ's ``preff``).
PREFF_PA = 101325.0
GRAVITY_M_S2 = 9.80665
RD_J_KG_K = 287.05
SECONDS_PER_HOUR = 3600.0


def enable_jax_compilation_cache(cache_dir: str | os.PathLike[str] | None) -> None:
    """Persist XLA compilations across processes (a T21 compile drops from ~25 s to a few s)."""
    if not cache_dir:
        return
    import jax

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(Path(cache_dir).resolve()))
    # every compilation, not only those over 1 s: building a model and its first state dispatches ~200
    # small eager ops, each compiled on its own (10 s at T21), which every process used to redo; cached,
    # a later process builds in 7-9 s instead of 17-19 s (benchmarks/standin_cost.py; 2 MB per truncation)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@dataclass(frozen=True)
class GCMConfig:
    """What defines one stand-in model configuration.

    ``physics`` maps SPEEDY parameter paths (``"<group>.<name>"``, e.g. ``"convection.trcnv"``) to the
    values that replace jcm's defaults. Physics parameters are fixed at compile time in jcm, so they
    belong to the model's identity, not to a run.
    """

    truncation: int
    layers: int = 8
    physics: Mapping[str, float] = field(default_factory=dict)


@dataclass
class GridState:
    """Instantaneous model state on the model grid, canonical layout.

    ``u``, ``v`` (m s-1), ``t`` (K), ``q`` (kg kg-1): ``(level, lat, lon)``, level 0 at the surface;
    ``ps`` (Pa): ``(lat, lon)``; ``z`` (geopotential on the levels, m2 s-2) when the model provides it.
    """

    u: np.ndarray
    v: np.ndarray
    t: np.ndarray
    q: np.ndarray
    ps: np.ndarray
    z: np.ndarray | None = None

    def is_finite(self) -> bool:
        return all(np.isfinite(a).all() for a in (self.u, self.v, self.t, self.q, self.ps))


@dataclass
class WindowOutput:
    """What one window of integration produced.

    ``state`` is the instantaneous state at the window start (the ML input); the tendencies are means
    over the window in m s-2, canonical layout, of what the model *applied*: the per-step terms
    recorded by :class:`WindTendencyTerm`, averaged, then projected as the dycore projects them
    (``du_nudge_raw``/``dv_nudge_raw`` keep the gridpoint mean before that projection);
    ``du_physics``/``dv_physics`` are the SPEEDY physics' own wind tendency (applied part); ``precip`` holds the mean precipitation flux
    (kg m-2 s-1) over each of the window's sub-intervals, ``(n_sub, lat, lon)``.
    """

    start: np.datetime64
    state: GridState
    du_nudge: np.ndarray
    dv_nudge: np.ndarray
    du_extra: np.ndarray
    dv_extra: np.ndarray
    precip: np.ndarray
    du_nudge_raw: np.ndarray
    dv_nudge_raw: np.ndarray
    du_physics: np.ndarray
    dv_physics: np.ndarray
    #: temperature (K s-1) and specific humidity (kg kg-1 s-1) nudging, applied window means as for
    #: the winds; zero when T and q are not relaxed (``*_raw``: the gridpoint means before projection)
    dt_nudge: np.ndarray | None = None
    dq_nudge: np.ndarray | None = None
    dt_nudge_raw: np.ndarray | None = None
    dq_nudge_raw: np.ndarray | None = None
    #: external temperature (K s-1) and humidity (kg kg-1 s-1) tendency (a correction), applied
    #: window means as ``du_extra``; zero when none was given
    dt_extra: np.ndarray | None = None
    dq_extra: np.ndarray | None = None
    #: the precipitation the applied humidity correction implies, minus its column integral
    #: (kg m-2 s-1, ``(lat, lon)``): the water a drying correction removes falls out, a moistening one
    #: takes from the rain (fv3net's closure of the column water budget); None without a humidity correction
    precip_correction: np.ndarray | None = None


@dataclass(frozen=True)
class ModelGrid:
    """Horizontal and vertical description of a model grid (canonical order).

    ``lat_deg`` ascending, ``lon_deg`` ascending in [0, 360); ``sigma`` surface first;
    ``surface_geopotential`` (m2 s-2) and ``land_fraction`` (0-1) are ``(lat, lon)``.
    """

    lat_deg: np.ndarray
    lon_deg: np.ndarray
    sigma: np.ndarray
    surface_geopotential: np.ndarray
    land_fraction: np.ndarray
    truncation: int

    @property
    def presnivs_pa(self) -> np.ndarray:
        return self.sigma * PREFF_PA

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.sigma.size, self.lat_deg.size, self.lon_deg.size)


# --------------------------------------------------------------------------------------------------
# Layout conversions (the only two places that know jcm's order)
# --------------------------------------------------------------------------------------------------


def to_jcm(a: np.ndarray) -> np.ndarray:
    """Canonical ``(lev surface-first, lat, lon)`` or ``(lat, lon)`` -> jcm ``(lev top-first, lon, lat)``."""
    a = np.asarray(a)
    if a.ndim == 2:
        return np.ascontiguousarray(a.T)
    if a.ndim == 3:
        return np.ascontiguousarray(a[::-1].transpose(0, 2, 1))
    raise ValueError(f"expected a 2-D or 3-D field, got shape {a.shape}")


def from_jcm(a: Any) -> np.ndarray:
    """jcm ``(lev top-first, lon, lat)`` or ``(lon, lat)`` -> canonical; a leading time axis is kept."""
    a = np.asarray(a)
    if a.ndim == 2:
        return np.ascontiguousarray(a.T)
    if a.ndim == 3:
        return np.ascontiguousarray(a[::-1].transpose(0, 2, 1))
    if a.ndim == 4:
        return np.ascontiguousarray(a[:, ::-1].transpose(0, 1, 3, 2))
    raise ValueError(f"expected a 2-D to 4-D field, got shape {a.shape}")


# --------------------------------------------------------------------------------------------------
# jcm pieces
# --------------------------------------------------------------------------------------------------


def build_parameters(overrides: Mapping[str, float]) -> Any:
    """SPEEDY ``Parameters`` with ``overrides`` applied; an unknown path raises naming it."""
    import jax.numpy as jnp
    from jcm.physics.speedy.params import Parameters

    params = Parameters.default()
    groups = {f.name for f in dataclasses.fields(params)}
    for path, value in overrides.items():
        group, _, name = path.partition(".")
        if group not in groups or not name:
            raise KeyError(
                f"unknown SPEEDY parameter {path!r}: expected '<group>.<name>' with group one of "
                f"{sorted(groups)}"
            )
        part = getattr(params, group)
        names = {f.name for f in dataclasses.fields(part)}
        if name not in names:
            raise KeyError(f"unknown SPEEDY parameter {path!r}: group {group!r} has {sorted(names)}")
        part = part.replace(**{name: jnp.asarray(value, dtype=jnp.asarray(getattr(part, name)).dtype)})
        params = params.replace(**{group: part})
    return params


def _wind_term_classes() -> tuple[type, type]:
    """Build the jcm-dependent classes lazily so importing this module does not import JAX."""
    global _WIND_CLASSES
    if _WIND_CLASSES is not None:
        return _WIND_CLASSES
    import jax.numpy as jnp
    import tree_math
    from jcm.physics.physics_term import PhysicsTerm
    from jcm.physics_interface import PhysicsTendency

    @tree_math.struct
    class WindForcing:
        """Per-step wind inputs riding on ``ForcingData.nudging_target`` (sliced by date by jcm).

        ``u_target``/``v_target``: relaxation target, a ``TimeSeries`` (linear in time) or a static
        array, jcm layout. ``inv_tau_per_s``: ``(nlev,)``, top first; zero means a free run.
        ``du_extra``/``dv_extra``: external tendency (m s-2), constant over the window.
        ``t_target``/``q_target`` with ``inv_tau_t_per_s``/``inv_tau_q_per_s``: the same for
        temperature and specific humidity (zero rates: not relaxed); ``dt_extra``/``dq_extra``: their
        external tendency (K s-1, kg kg-1 s-1), constant over the window.
        """

        u_target: Any
        v_target: Any
        inv_tau_per_s: Any
        du_extra: Any
        dv_extra: Any
        t_target: Any
        q_target: Any
        inv_tau_t_per_s: Any
        inv_tau_q_per_s: Any
        dt_extra: Any
        dq_extra: Any

    class WindTendencyTerm(PhysicsTerm):
        """Relaxation toward the target plus an external tendency, both recorded as diagnostics.

        ``du_nudge = inv_tau * (u_target(t_n) - u(t_n))`` with the state at the start of the step, the
        same formula as jcm's ``NudgingTerm``; the sum is what the model applies (forward Euler,
        projected to the model's spectral space by the dycore). ``dt_nudge``, ``dq_nudge``: the same
        for temperature and specific humidity, whose external tendencies ``dt_extra``, ``dq_extra`` are
        added the same way as the winds' (one path: what is recorded is what is applied).
        """

        name: ClassVar[str] = "nudgeml"
        category: ClassVar[str] = "nudging"

        def __call__(self, state, diagnostics, forcing, terrain):
            wind = getattr(forcing, "nudging_target", None)
            zero = jnp.zeros_like(state.u_wind)
            if wind is None:
                du_n = dv_n = du_e = dv_e = dt_n = dq_n = dt_e = dq_e = zero
            else:
                shape = state.u_wind.shape
                per_level = lambda rate: jnp.reshape(rate, (-1,) + (1,) * (state.u_wind.ndim - 1))  # noqa: E731
                inv_tau = per_level(wind.inv_tau_per_s)
                du_n = inv_tau * (jnp.reshape(wind.u_target, shape) - state.u_wind)
                dv_n = inv_tau * (jnp.reshape(wind.v_target, shape) - state.v_wind)
                du_e = jnp.reshape(wind.du_extra, shape)
                dv_e = jnp.reshape(wind.dv_extra, shape)
                dt_n = per_level(wind.inv_tau_t_per_s) * (jnp.reshape(wind.t_target, shape) - state.temperature)
                dq_n = per_level(wind.inv_tau_q_per_s) * (jnp.reshape(wind.q_target, shape) - state.specific_humidity)
                dt_e = jnp.reshape(wind.dt_extra, shape)
                dq_e = jnp.reshape(wind.dq_extra, shape)
            # this term runs last: the running sum is every SPEEDY term's wind tendency this step
            run = diagnostics.get("_tendency_run", {})
            du_p = jnp.reshape(run.get("u_wind", zero), state.u_wind.shape)
            dv_p = jnp.reshape(run.get("v_wind", zero), state.u_wind.shape)
            diagnostics = {
                **diagnostics,
                "nudgeml": {
                    "du_nudge": du_n, "dv_nudge": dv_n, "du_extra": du_e, "dv_extra": dv_e, "du_physics": du_p, "dv_physics": dv_p,
                    "dt_nudge": dt_n, "dq_nudge": dq_n, "dt_extra": dt_e, "dq_extra": dq_e,
                },
            }
            tendency = PhysicsTendency(
                u_wind=du_n + du_e,
                v_wind=dv_n + dv_e,
                temperature=dt_n + dt_e,
                specific_humidity=dq_n + dq_e,
                tracers={k: jnp.zeros_like(v) for k, v in state.tracers.items()},
            )
            return tendency, diagnostics

    _WIND_CLASSES = (WindForcing, WindTendencyTerm)
    return _WIND_CLASSES


_WIND_CLASSES: tuple[type, type] | None = None


def _boundary_dir() -> Path:
    import jcm

    return Path(jcm.__file__).parent / "data" / "bc" / "t30" / "clim"


class StandinGCM:
    """One jcm model instance driven window by window.

    Parameters
    ----------
    cfg : the model configuration (truncation, levels, physics overrides).
    start_time : model date of the initial state.
    window_hours : length of one window (6 h: the nudging-tendency sampling and ML call interval).
    sub_hours : averaging interval of the precipitation output inside a window (1 h for ERA5-like
        hourly accumulations, = ``window_hours`` otherwise).
    """

    def __init__(
        self,
        cfg: GCMConfig,
        start_time: np.datetime64,
        *,
        window_hours: float = 6.0,
        sub_hours: float | None = None,
    ) -> None:
        import jax
        import jax.numpy as jnp
        from jcm.forcing import ForcingData
        from jcm.model import Model
        from jcm.physics.speedy.speedy_coords import get_speedy_coords
        from jcm.physics.speedy.speedy_terms import speedy_physics
        from jcm.terrain import TerrainData

        self.cfg = cfg
        self.window_hours = float(window_hours)
        self.sub_hours = float(sub_hours if sub_hours is not None else window_hours)
        n_sub = self.window_hours / self.sub_hours
        if abs(n_sub - round(n_sub)) > 1e-9:
            raise ValueError(f"sub_hours={self.sub_hours} must divide window_hours={self.window_hours}")
        self.n_sub = int(round(n_sub))
        self.start_time = np.datetime64(start_time, "s")

        WindForcing, WindTendencyTerm = _wind_term_classes()
        self._WindForcing = WindForcing
        coords = get_speedy_coords(layers=cfg.layers, spectral_truncation=cfg.truncation)
        bc = _boundary_dir()
        terrain = TerrainData.from_file(str(bc / "terrain.nc"), coords)
        self._base_forcing = ForcingData.from_file(str(bc / "forcing.nc"), coords, align_mode="wrap_year")
        physics = speedy_physics(build_parameters(cfg.physics)) + WindTendencyTerm()
        self.model = Model(
            coords=coords,
            terrain=terrain,
            physics=physics,
            start_time=str(self.start_time.astype("datetime64[s]")),
        )
        self.dt_seconds = float(self.model.dt_si.m)
        steps = self.window_hours * SECONDS_PER_HOUR / self.dt_seconds
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"window of {self.window_hours} h is not a whole number of {self.dt_seconds} s steps")
        self.p0_pa = float(self.model.dycore.constants.p0)
        nlon, nlat = coords.horizontal.nodal_shape
        self._nlev, self._nlon, self._nlat = cfg.layers, nlon, nlat
        lat = np.rad2deg(np.asarray(coords.horizontal.latitudes, dtype=np.float64))
        lon = np.rad2deg(np.asarray(coords.horizontal.longitudes, dtype=np.float64))
        sigma_top_first = np.asarray(coords.vertical.centers, dtype=np.float64)
        # layer thickness in sigma, surface first: the column integral of a tendency is sum(x dsigma) ps / g
        self._dsigma = np.asarray(coords.vertical.layer_thickness, dtype=np.float64)[::-1].copy()
        self.grid = ModelGrid(
            lat_deg=lat,
            lon_deg=lon,
            sigma=sigma_top_first[::-1].copy(),
            surface_geopotential=from_jcm(self._dynamics_surface_geopotential()),
            land_fraction=from_jcm(np.asarray(terrain.fmask, dtype=np.float64)),
            truncation=cfg.truncation,
        )
        self._to_physics = jax.jit(self.model.dycore.to_physics_state)
        self._project_tendency = jax.jit(self._make_tendency_projection())
        zeros = jnp.zeros((self._nlev, nlon, nlat), dtype=jnp.float32)
        self._zeros = zeros
        self._targets: tuple[Any, Any] = (zeros, zeros)
        self._inv_tau = jnp.zeros((self._nlev,), dtype=jnp.float32)
        self._thermo_targets: tuple[Any, Any] = (zeros, zeros)
        self._inv_tau_thermo: tuple[Any, Any] = (self._inv_tau, self._inv_tau)
        self.time = self.start_time
        self._started = False

    def _dynamics_surface_geopotential(self) -> np.ndarray:
        """The surface geopotential (m2 s-2, jcm layout) that the dynamics integrate over.

        jcm hands the dinosaur core ``terrain.orog`` spectrally truncated with the two highest
        wavenumbers clipped, while ``terrain.phis0`` (the physics' surface geopotential) is another,
        smoother truncation: at T21 the two differ by up to ~1200 m over the Himalaya. The model's
        surface pressure sits on the dynamics' orography, so a truth moved to ``phis0`` would
        disagree with the model's own ps by tens of hPa there and put the truth's winds on the
        wrong sigma levels (docs/standin.md, "Surface pressure sits on the dynamics' orography").
        """
        dycore = self.model.dycore
        modal = getattr(dycore, "_truncated_orography", None)
        if modal is None:  # jcm is pinned; a layout change there must fail loudly, not silently
            raise RuntimeError("jcm's dinosaur dycore has no '_truncated_orography': the pinned jcm version changed; update StandinGCM._dynamics_surface_geopotential")
        orog_m = np.asarray(dycore.coords.horizontal.to_nodal(modal), dtype=np.float64)
        return GRAVITY_M_S2 * orog_m  # ERA5's convention for z; the regrid divides by the same g

    def _make_tendency_projection(self) -> Any:
        """``(du, dv, dt, dq)`` on the grid (jcm layout) -> the part the dycore actually applies.

        The dycore adds a gridpoint tendency after projecting it onto vorticity and divergence at the
        model truncation (``physics_tendency_to_dynamics_tendency``), which drops what the truncation
        cannot hold, mostly near the poles. ``after_physics_state`` of a state at rest, minus that state,
        is ``dt`` times exactly that projection. The projection is linear, so projecting a window mean
        of the per-step tendencies gives the window mean of what was applied.
        """
        import jax.numpy as jnp
        from jcm.physics_interface import PhysicsTendency

        dyn = self.model.dycore
        shape = (self._nlev, self._nlon, self._nlat)
        rest = GridState(
            u=np.zeros(self.grid.shape, np.float32),
            v=np.zeros(self.grid.shape, np.float32),
            t=np.full(self.grid.shape, 250.0, np.float32),
            q=np.zeros(self.grid.shape, np.float32),
            ps=np.full(self.grid.shape[1:], self.p0_pa, np.float32),
        )
        rest_state = dyn.initial_state(self._physics_state(rest))
        before = dyn.to_physics_state(rest_state)
        dt = self.dt_seconds
        zeros = jnp.zeros(shape, dtype=jnp.float32)
        tracers = {k: jnp.zeros_like(v) for k, v in before.tracers.items()}

        def project(du: Any, dv: Any, dtemp: Any = zeros, dq: Any = zeros) -> tuple[Any, Any, Any, Any]:
            # temperature and humidity go through the same spectral transform as the winds (the
            # dycore's ``physics_tendency_to_dynamics_tendency``): linear, so the rest state serves
            tend = PhysicsTendency(u_wind=du, v_wind=dv, temperature=dtemp, specific_humidity=dq, tracers=tracers)
            after = dyn.after_physics_state(rest_state, tend)
            return (
                (after.u_wind - before.u_wind) / dt,
                (after.v_wind - before.v_wind) / dt,
                (after.temperature - before.temperature) / dt,
                (after.specific_humidity - before.specific_humidity) / dt,
            )

        return project

    def applied_tendency(self, du: np.ndarray, dv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The part of a gridpoint wind tendency (canonical, m s-2) the model applies, canonical."""
        import jax.numpy as jnp

        pu, pv, _, _ = self._project_tendency(jnp.asarray(to_jcm(du), jnp.float32), jnp.asarray(to_jcm(dv), jnp.float32))
        return from_jcm(pu).astype(np.float32), from_jcm(pv).astype(np.float32)

    def applied_thermo_tendency(self, dt: np.ndarray, dq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The part of gridpoint temperature (K s-1) and humidity (kg kg-1 s-1) tendencies the model
        applies (canonical in and out)."""
        import jax.numpy as jnp

        zero = self._zeros
        _, _, pt, pq = self._project_tendency(zero, zero, jnp.asarray(to_jcm(dt), jnp.float32), jnp.asarray(to_jcm(dq), jnp.float32))
        return from_jcm(pt).astype(np.float32), from_jcm(pq).astype(np.float32)

    def project_scalar(self, a: np.ndarray) -> np.ndarray:
        """Round-trip a scalar field (canonical, one time) through the model's spectral space."""
        h = self.model.coords.horizontal
        return from_jcm(np.asarray(h.to_nodal(h.to_modal(to_jcm(np.asarray(a, np.float32)))))).astype(np.float32)

    # ------------------------------------------------------------------ state in and out
    def _physics_state(self, state: GridState) -> Any:
        import jax.numpy as jnp
        from jcm.physics_interface import PhysicsState

        return PhysicsState(
            u_wind=jnp.asarray(to_jcm(state.u), dtype=jnp.float32),
            v_wind=jnp.asarray(to_jcm(state.v), dtype=jnp.float32),
            temperature=jnp.asarray(to_jcm(state.t), dtype=jnp.float32),
            specific_humidity=jnp.asarray(np.clip(to_jcm(state.q), 0.0, None), dtype=jnp.float32),
            # jcm derives geopotential from temperature; the input value is ignored
            geopotential=jnp.zeros((self._nlev, self._nlon, self._nlat), dtype=jnp.float32),
            normalized_surface_pressure=jnp.asarray(to_jcm(state.ps) / self.p0_pa, dtype=jnp.float32),
        )

    def _grid_state(self, physics_state: Any) -> GridState:
        return GridState(
            u=from_jcm(physics_state.u_wind).astype(np.float32),
            v=from_jcm(physics_state.v_wind).astype(np.float32),
            t=from_jcm(physics_state.temperature).astype(np.float32),
            q=from_jcm(physics_state.specific_humidity).astype(np.float32),
            ps=(from_jcm(physics_state.normalized_surface_pressure) * self.p0_pa).astype(np.float32),
            z=from_jcm(physics_state.geopotential).astype(np.float32),
        )

    def start(self, state: GridState | None = None) -> None:
        """Set the initial state: a gridded state, or jcm's resting atmosphere when ``None``."""
        if state is not None:
            expected = self.grid.shape
            for name in ("u", "v", "t", "q"):
                got = getattr(state, name).shape
                if got != expected:
                    raise ValueError(f"initial state {name!r} has shape {got}, model grid is {expected}")
            if state.ps.shape != expected[1:]:
                raise ValueError(f"initial state 'ps' has shape {state.ps.shape}, model grid is {expected[1:]}")
        self.model.bootstrap_state(None if state is None else self._physics_state(state))
        self.time = self.start_time
        self._started = True

    def start_at(self, state: GridState, time: np.datetime64) -> None:
        """Start from ``state`` at ``time`` (a whole number of steps after the construction date).

        ``bootstrap_state`` always restarts the clock at ``start_time``; the date matters (solar
        geometry, SST climatology), so the fresh state is re-labelled with the wanted time and step.
        """
        import jax.numpy as jnp
        from jax_datetime import to_datetime as jdt_to_datetime

        offset = (np.datetime64(time, "s") - self.start_time).astype(np.int64)
        step, rest = divmod(int(offset), int(self.dt_seconds))
        if rest or step < 0:
            raise ValueError(f"{time} is not a whole number of {self.dt_seconds:.0f}-s steps after {self.start_time}")
        self.start(state)
        rs = self.model.run_state
        self.model.restore_state(rs.dynamics, rs.physics, time=jdt_to_datetime(str(np.datetime64(time, "s"))), step=jnp.int32(step))
        self.time = np.datetime64(time, "s")

    def checkpoint(self) -> tuple[Any, np.datetime64]:
        """An opaque, in-memory copy of the resumable state (dynamics, physics carry, clock)."""
        if not self._started:
            raise RuntimeError("call start() before checkpoint()")
        return (self.model.run_state, self.time)

    def restore(self, checkpoint: tuple[Any, np.datetime64]) -> None:
        """Continue from a :meth:`checkpoint` (e.g. to integrate the same state twice)."""
        run_state, time = checkpoint
        self.model.restore_state(run_state.dynamics, run_state.physics, time=run_state.time, step=run_state.step)
        self.time = time
        self._started = True

    def current_state(self) -> GridState:
        """The instantaneous state now (canonical layout)."""
        return self._grid_state(self._to_physics(self.model.dycore_state))

    def project_winds(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Round-trip ``u``, ``v`` (canonical, one time) through the model's spectral space.

        What the truncation cannot hold is removed, so a relaxation toward the result only contains
        what the model can actually represent (and therefore apply).
        """
        shape2d = (self.grid.lat_deg.size, self.grid.lon_deg.size)
        dummy = GridState(
            u=u,
            v=v,
            t=np.full(self.grid.shape, 250.0, np.float32),
            q=np.zeros(self.grid.shape, np.float32),
            ps=np.full(shape2d, self.p0_pa, np.float32),
        )
        ps = self.model.dycore.to_physics_state(self.model.dycore.initial_state(self._physics_state(dummy)))
        return from_jcm(ps.u_wind).astype(np.float32), from_jcm(ps.v_wind).astype(np.float32)

    def large_scale_winds(self, u: np.ndarray, v: np.ndarray, truncation: int) -> tuple[np.ndarray, np.ndarray]:
        """``u``, ``v`` (canonical, one time) kept at total wavenumbers ``<= truncation`` only.

        Filtered through vorticity and divergence (``u`` and ``v`` are not scalars on the sphere, a
        scalar filter of each would smear the poles). At the model truncation this is exactly
        :meth:`project_winds`; lower, it removes the synoptic scales.
        """
        from dinosaur import spherical_harmonic as sh

        if not 0 <= truncation <= self.grid.truncation:
            raise ValueError(f"filter truncation {truncation} is outside 0..{self.grid.truncation} (the model truncation)")
        h = self.model.coords.horizontal
        vor, div = sh.uv_nodal_to_vor_div_modal(h, to_jcm(u), to_jcm(v))
        keep = (h.modal_axes[1] <= truncation).astype(np.float32)  # total wavenumber l, last modal axis
        uu, vv = sh.vor_div_to_uv_nodal(h, vor * keep, div * keep)
        return from_jcm(np.asarray(uu)).astype(np.float32), from_jcm(np.asarray(vv)).astype(np.float32)

    def rotational_winds(self, u: np.ndarray, v: np.ndarray, iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
        """The rotational (non-divergent) part of ``u``, ``v`` (canonical, one time): winds whose vorticity,
        as the dycore reads a wind tendency (``uv_nodal_to_vor_div_modal``), is that of ``u``, ``v`` and
        whose divergence is zero. A tendency through it adds no convergence.

        One synthesis from (vorticity, 0) leaves a divergence of 4-10 % of the input's at T21 when read
        back (the cos-latitude derivatives at the top total wavenumber): each of ``iterations``
        Richardson steps feeds the read-back error back, at least halving it (12 steps on random T21
        winds: divergence 1.6e-5 of the input's, vorticity within 1.7e-5; 3.7 ms a call)."""
        import jax.numpy as jnp
        from dinosaur import spherical_harmonic as sh

        h = self.model.coords.horizontal
        target, _ = sh.uv_nodal_to_vor_div_modal(h, to_jcm(u), to_jcm(v))
        vor, div = target, jnp.zeros_like(target)
        uu, vv = sh.vor_div_to_uv_nodal(h, vor, div)
        for _ in range(iterations):
            got_vor, got_div = sh.uv_nodal_to_vor_div_modal(h, uu, vv)
            vor, div = vor + (target - got_vor), div - got_div
            uu, vv = sh.vor_div_to_uv_nodal(h, vor, div)
        return from_jcm(np.asarray(uu)).astype(np.float32), from_jcm(np.asarray(vv)).astype(np.float32)

    # ------------------------------------------------------------------ forcing of the wind equation
    def set_relaxation(
        self,
        times: np.ndarray | None,
        u_target: np.ndarray | None,
        v_target: np.ndarray | None,
        tau_hours: float | None,
    ) -> None:
        """Relax u, v toward a target series ``(time, level, lat, lon)``, linear in time between samples.

        ``None`` everywhere switches relaxation off (a free run). Times outside the series hold the end
        samples.
        """
        import jax.numpy as jnp
        from jcm.forcing import BY_DATE_INTERP, make_time_series

        if times is None:
            self._targets = (self._zeros, self._zeros)
            self._inv_tau = jnp.zeros((self._nlev,), dtype=jnp.float32)
            return
        if tau_hours is None or tau_hours <= 0:
            raise ValueError(f"relaxation time must be positive, got {tau_hours!r} h")
        u_target = np.asarray(u_target)
        v_target = np.asarray(v_target)
        expected = (len(times),) + self.grid.shape
        for name, arr in (("u", u_target), ("v", v_target)):
            if arr.shape != expected:
                raise ValueError(f"relaxation target {name!r} has shape {arr.shape}, expected {expected}")
        to_series = np.stack  # one jcm-layout array per time
        u_j = to_series([to_jcm(a) for a in u_target]).astype(np.float32)
        v_j = to_series([to_jcm(a) for a in v_target]).astype(np.float32)
        t64 = np.asarray(times, dtype="datetime64[s]")
        self._targets = (
            make_time_series(u_j, t64, align_mode=BY_DATE_INTERP, persist="hold"),
            make_time_series(v_j, t64, align_mode=BY_DATE_INTERP, persist="hold"),
        )
        self._inv_tau = jnp.full((self._nlev,), 1.0 / (tau_hours * SECONDS_PER_HOUR), dtype=jnp.float32)

    def set_relaxation_tau(self, tau_hours: float | None) -> None:
        """Change the wind relaxation time only, keeping the target series (``None``: no relaxation).

        A forecast-error sample (:mod:`nudgeml.forecast`) nudges toward the analysis, then runs free
        from the same state: the series is set once for all samples, not rebuilt per sample.
        """
        import jax.numpy as jnp

        if tau_hours is None:
            self._inv_tau = jnp.zeros((self._nlev,), dtype=jnp.float32)
            return
        if tau_hours <= 0:
            raise ValueError(f"relaxation time must be positive, got {tau_hours!r} h")
        self._inv_tau = jnp.full((self._nlev,), 1.0 / (tau_hours * SECONDS_PER_HOUR), dtype=jnp.float32)

    def set_thermo_relaxation(
        self,
        times: np.ndarray | None,
        *,
        t_target: np.ndarray | None = None,
        tau_t_hours: float | None = None,
        q_target: np.ndarray | None = None,
        tau_q_hours: float | None = None,
    ) -> None:
        """Relax temperature and/or specific humidity toward target series ``(time, level, lat, lon)``.

        LMDZ's ``guide_T`` and ``guide_Q``: each variable with its own time scale; a variable given
        without its target (or ``times`` None) is not relaxed. Linear in time between samples, as
        :meth:`set_relaxation`.
        """
        import jax.numpy as jnp
        from jcm.forcing import BY_DATE_INTERP, make_time_series

        off = jnp.zeros((self._nlev,), dtype=jnp.float32)
        targets, rates = [self._zeros, self._zeros], [off, off]
        if times is not None:
            t64 = np.asarray(times, dtype="datetime64[s]")
            expected = (len(t64),) + self.grid.shape
            for i, (name, target, tau_h) in enumerate((("t", t_target, tau_t_hours), ("q", q_target, tau_q_hours))):
                if target is None:
                    continue
                if tau_h is None or tau_h <= 0:
                    raise ValueError(f"relaxation time of {name!r} must be positive, got {tau_h!r} h")
                target = np.asarray(target)
                if target.shape != expected:
                    raise ValueError(f"relaxation target {name!r} has shape {target.shape}, expected {expected}")
                series = np.stack([to_jcm(a) for a in target]).astype(np.float32)
                targets[i] = make_time_series(series, t64, align_mode=BY_DATE_INTERP, persist="hold")
                rates[i] = jnp.full((self._nlev,), 1.0 / (tau_h * SECONDS_PER_HOUR), dtype=jnp.float32)
        self._thermo_targets = (targets[0], targets[1])
        self._inv_tau_thermo = (rates[0], rates[1])

    @property
    def thermo_relaxed(self) -> bool:
        """Whether temperature or humidity is relaxed (their tendencies are then projected and kept)."""
        return any(bool(np.any(np.asarray(r) > 0)) for r in self._inv_tau_thermo)

    def _forcing(
        self, du_extra: np.ndarray | None, dv_extra: np.ndarray | None, dt_extra: np.ndarray | None = None, dq_extra: np.ndarray | None = None
    ) -> Any:
        import jax.numpy as jnp

        def extra(a: np.ndarray | None) -> Any:
            if a is None:
                return self._zeros
            a = np.asarray(a)
            if a.shape != self.grid.shape:
                raise ValueError(f"external tendency has shape {a.shape}, model grid is {self.grid.shape}")
            return jnp.asarray(to_jcm(a), dtype=jnp.float32)

        wind = self._WindForcing(
            u_target=self._targets[0],
            v_target=self._targets[1],
            inv_tau_per_s=self._inv_tau,
            du_extra=extra(du_extra),
            dv_extra=extra(dv_extra),
            t_target=self._thermo_targets[0],
            q_target=self._thermo_targets[1],
            inv_tau_t_per_s=self._inv_tau_thermo[0],
            inv_tau_q_per_s=self._inv_tau_thermo[1],
            dt_extra=extra(dt_extra),
            dq_extra=extra(dq_extra),
        )
        return self._base_forcing.copy(nudging_target=wind)

    @property
    def dsigma(self) -> np.ndarray:
        """Layer thickness in sigma, surface first (sums to 1)."""
        return self._dsigma.copy()

    def column_integral(self, x: np.ndarray, ps_pa: np.ndarray) -> np.ndarray:
        """Mass-weighted column integral of ``x`` (canonical ``(lev, lat, lon)``, per kg of air) per m2:
        ``sum_k x_k dsigma_k ps / g``; for a humidity tendency in kg kg-1 s-1, kg m-2 s-1."""
        x = np.asarray(x, np.float64)
        return np.tensordot(self._dsigma, x, axes=(0, 0)) * np.asarray(ps_pa, np.float64) / GRAVITY_M_S2

    # ------------------------------------------------------------------ integration
    def run_window(
        self,
        du_extra: np.ndarray | None = None,
        dv_extra: np.ndarray | None = None,
        *,
        dt_extra: np.ndarray | None = None,
        dq_extra: np.ndarray | None = None,
        hours: float | None = None,
    ) -> WindowOutput:
        """Integrate one window; the external tendencies ``du_extra``/``dv_extra`` (m s-2),
        ``dt_extra`` (K s-1) and ``dq_extra`` (kg kg-1 s-1), canonical, are held constant in it."""
        if not self._started:
            raise RuntimeError("call start() before run_window()")
        hours = self.window_hours if hours is None else float(hours)
        sub = min(self.sub_hours, hours)
        start = self.time
        state = self.current_state()
        pred = self.model.resume(
            forcing=self._forcing(du_extra, dv_extra, dt_extra, dq_extra),
            save_interval=sub / 24.0,
            total_time=hours / 24.0,
            output_averages=True,
        )
        phys = pred._predictions.physics
        diag = phys["nudgeml"]
        mean_over_frames = lambda a: from_jcm(np.asarray(a, dtype=np.float32)).mean(axis=0)  # noqa: E731
        precip = np.asarray(phys["surface_exchange"].precipitation, dtype=np.float32)  # (sub, lon, lat)
        self.time = start + np.timedelta64(int(round(hours * SECONDS_PER_HOUR)), "s")
        du_raw, dv_raw = mean_over_frames(diag["du_nudge"]), mean_over_frames(diag["dv_nudge"])
        du_nudge, dv_nudge = self.applied_tendency(du_raw, dv_raw)
        du_extra, dv_extra = self.applied_tendency(mean_over_frames(diag["du_extra"]), mean_over_frames(diag["dv_extra"]))
        du_phys, dv_phys = self.applied_tendency(mean_over_frames(diag["du_physics"]), mean_over_frames(diag["dv_physics"]))
        dt_raw, dq_raw = mean_over_frames(diag["dt_nudge"]), mean_over_frames(diag["dq_nudge"])
        if self.thermo_relaxed:
            dt_nudge, dq_nudge = self.applied_thermo_tendency(dt_raw, dq_raw)
        else:  # nothing relaxed: zero, no projection to pay for
            dt_nudge, dq_nudge = dt_raw, dq_raw
        thermo_extra = dt_extra is not None or dq_extra is not None
        dt_ext, dq_ext = mean_over_frames(diag["dt_extra"]), mean_over_frames(diag["dq_extra"])
        if thermo_extra:  # the applied (projected) window mean, as for the winds' correction
            dt_ext, dq_ext = self.applied_thermo_tendency(dt_ext, dq_ext)
        precip_correction = None
        if dq_extra is not None:  # column water the correction removed (window-start surface pressure)
            precip_correction = self.column_integral(-dq_ext, state.ps).astype(np.float32)
        return WindowOutput(
            start=start,
            state=state,
            du_nudge=du_nudge,
            dv_nudge=dv_nudge,
            du_extra=du_extra,
            dv_extra=dv_extra,
            precip=np.ascontiguousarray(precip.transpose(0, 2, 1)),
            du_nudge_raw=du_raw,
            dv_nudge_raw=dv_raw,
            du_physics=du_phys,
            dv_physics=dv_phys,
            dt_nudge=dt_nudge,
            dq_nudge=dq_nudge,
            dt_nudge_raw=dt_raw,
            dq_nudge_raw=dq_raw,
            dt_extra=dt_ext,
            dq_extra=dq_ext,
            precip_correction=precip_correction,
        )
