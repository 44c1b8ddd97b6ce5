"""Free runs: the model without relaxation, from the regridded ERA5 state at ``free_runs.start``.

Corrections (``free_runs.runs.<name>.correction``):

* ``none``: the control;
* ``mean``: the mean nudging tendency of the training period, every step (``climatology: annual`` or
  ``monthly``); with T / q nudged the mean file holds their mean tendencies too, applied unless
  ``variables`` names the winds only (``[du, dv]``);
* ``ml``: every 6 h the exported model (``model.pt`` through ``torch.jit.load``, or ``model.pt2``
  through AOTInductor — the two ways the Fortran bridge loads it) is called on the current state; its
  output, through the guard, times ``scale``, is applied as a constant tendency for the next 6 h:
  du, dv and, when the model's targets include them, dt and dq (the mean file must then hold
  ``dt_mean`` / ``dq_mean``, the guard's fallback for them).
  With ``mean_residual``, the mean nudging tendency minus the model's own mean over the training
  states is added, so the correction's mean is the nudging's and its state dependence the model's.
  With ``filter_truncation: N``, the model's part is kept at total wavenumbers <= N only (vorticity
  and divergence truncated): the planetary-scale, state-dependent correction stays, the synoptic-scale
  feedback on the model's own weather (which the probes saw run away) goes.
  With ``eddy_only``, the correction's zonal mean is the mean tendency's: the model's part about the
  mean keeps, per latitude row and level, only its departure from its zonal mean (over the columns the
  guard keeps). The model then cannot push the zonal-mean flow, whose drift made up nearly all of the
  ML runs' u error on ``config/science.yaml``; it still corrects the waves.
  With ``top_hpa: P`` (and ``mean_residual`` or ``add_mean``), the model's part about the mean applies
  on the levels whose nominal pressure (LMDZ's ``presnivs``) is at least P hPa; above, the correction
  is the mean tendency: a per-level gain of 0, which LMDZ's routine applies as it applies calibrated
  gains. The model's part there carried most of the ML runs' zonal-mean u drift on
  ``config/science.yaml``, whose training year held the truth's stratospheric spin-up (docs/science.md).
  ``bottom_hpa: P`` likewise keeps it on the levels at most P hPa (off the boundary layer, whose
  convergence feeds convection); with both, a band.
  With ``rotational_only``, the model's part about the mean keeps its vorticity and loses its
  divergence (the winds, through the spectral transform): the correction's divergence, and so the
  convergence it drives, is the mean's.
  With ``model_targets`` (a subset of the model's targets, and ``mean_residual`` or ``add_mean``), the
  model's part about the mean applies to those targets only; the others get the mean tendency (a
  per-target gain of 0): e.g. the model's T and q corrections about the mean with the mean's winds.

The guard (``nudgeml.guard``, the same rule as the Fortran routine): a column whose inputs leave the
training range (widened by the manifest's margin) or whose output is not finite takes the mean
tendency; other outputs are clipped to the training range. Counts go to ``status.json``.

Members: ``<name>.m<k>`` (k >= 1) start from the same state with a tiny random temperature
perturbation (``free_runs.perturbation_k``), the initial-condition ensemble that sets the noise floor.

A run that blows up (non-finite state or ``|u| > max_wind_ms``) stops, keeps what it wrote, and is
marked ``failed`` in ``status.json`` and in the history's attributes, with the diagnosis.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nudgeml.atomic import write_text_atomic
from nudgeml.config import Period
from nudgeml.errors import ConfigError, InputError
from nudgeml.extract import ColumnFeatures, ColumnSpec, expand_names
from nudgeml.grid import read_model_grid
from nudgeml.manifest import first_difference
from nudgeml.naming import split_member
from nudgeml.regrid import open_forcing
from nudgeml.targets import check_corrected
from nudgeml.simulate import HistoryWriter, check_same_grid, model_gcm, select_times, state_at

log = logging.getLogger(__name__)


def describe_correction(spec: Mapping[str, Any]) -> str:
    """A run's correction in a few words, for tables: ``ml: mlp-replay + mean residual, T6``."""
    kind = spec["correction"]
    if kind == "mean":
        n = int(spec.get("iterations", 0))
        extra = [" ".join(spec["variables"])] if "variables" in spec else []
        extra += [f"{n} iteration{'s' if n > 1 else ''}"] if n else []
        extra += ["dq column-neutral"] if spec.get("humidity_column_neutral") else []
        extra += ["tuned on free runs"] if spec.get("feedback") else []
        return f"mean ({', '.join([spec.get('climatology', 'annual'), *extra])})"
    if kind != "ml":
        return kind
    parts = [f"ml: {spec['model']}"]
    if spec.get("mean_residual"):
        parts[0] += " + mean residual"
    if spec.get("add_mean"):
        parts[0] = f"ml: mean + {spec['model']}"
    if spec.get("calibrated"):
        parts.append("EKI gains")
    if spec.get("feedback"):
        parts.append("mean tuned on free runs")
    if "filter_truncation" in spec:
        parts.append(f"T{int(spec['filter_truncation'])} filter")
    if spec.get("eddy_only"):
        parts.append("eddies only")
    if spec.get("rotational_only"):
        parts.append("rotational part")
    if "top_hpa" in spec and "bottom_hpa" in spec:
        parts.append(f"model part at {float(spec['top_hpa']):g} <= p <= {float(spec['bottom_hpa']):g} hPa")
    elif "top_hpa" in spec:
        parts.append(f"model part at p >= {float(spec['top_hpa']):g} hPa")
    elif "bottom_hpa" in spec:
        parts.append(f"model part at p <= {float(spec['bottom_hpa']):g} hPa")
    if spec.get("model_targets"):
        parts.append(f"model part on {' '.join(spec['model_targets'])}")
    if float(spec.get("scale", 1.0)) != 1.0:
        parts.append(f"x{float(spec['scale']):g}")
    if spec.get("humidity_column_neutral"):
        parts.append("dq column-neutral")
    return ", ".join(parts)


def model_levels(presnivs_pa: Sequence[float] | np.ndarray, top_hpa: float | None = None, bottom_hpa: float | None = None) -> np.ndarray:
    """The levels (bool, per ``presnivs``) where a ``top_hpa`` / ``bottom_hpa`` run keeps the model's part
    about the mean: nominal pressure at least ``top_hpa`` and at most ``bottom_hpa`` (either may be
    None). The same mask is the per-level gain (1, else 0) that LMDZ's routine applies
    (:func:`nudgeml.gcm.runners.lmdz_mean_file`)."""
    p = np.asarray(presnivs_pa, float)
    on = np.ones(p.shape, bool)
    if top_hpa is not None:
        on &= p >= 100.0 * float(top_hpa)
    if bottom_hpa is not None:
        on &= p <= 100.0 * float(bottom_hpa)
    if not on.any():
        bounds = " and ".join(f"{k} {float(v):g} hPa" for k, v in (("top_hpa", top_hpa), ("bottom_hpa", bottom_hpa)) if v is not None)
        raise ConfigError(f"{bounds} keep no model level (nominal pressures {np.round(p / 100.0, 1).tolist()} hPa): the run would be the mean")
    return on


def zonal_departure(part: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """``part`` (lev, lat, lon) minus its zonal mean over the ``kept`` columns (lat, lon), per level
    and latitude row; a row without a kept column is returned as it is.

    On a grid of equally spaced longitudes this removes zonal wavenumber 0 (the zonal mean of the
    result over the kept columns is 0), which a physics routine can do column-set by column-set.
    """
    w = kept.astype(part.dtype)
    n = w.sum(axis=-1)  # (lat,)
    zonal = (part * w).sum(axis=-1) / np.maximum(n, 1)  # (lev, lat)
    return part - np.where(n > 0, zonal, 0)[..., None]


class Correction(NamedTuple):
    """One window's external tendency, canonical ``(lev, lat, lon)``: du, dv (m s-2), dt (K s-1),
    dq (kg kg-1 s-1); ``None``: not corrected."""

    du: np.ndarray | None = None
    dv: np.ndarray | None = None
    dt: np.ndarray | None = None
    dq: np.ndarray | None = None

    def window_kwargs(self) -> dict[str, np.ndarray | None]:
        """Keyword arguments of :meth:`StandinGCM.run_window` (``du_extra`` ...)."""
        return {"du_extra": self.du, "dv_extra": self.dv, "dt_extra": self.dt, "dq_extra": self.dq}


def column_neutral_humidity(dq: np.ndarray, q: np.ndarray, dsigma: np.ndarray) -> np.ndarray:
    """``dq`` (canonical ``(lev, lat, lon)``) less its column integral, taken from each level in
    proportion to the humidity there: ``sum_k dq'_k dsigma_k = 0`` in every column, so the correction
    moves water up or down a column and neither adds nor removes any (a column without humidity keeps
    ``dq``). Proportional to q so that the moist boundary layer, not the dry stratosphere, gives or takes
    the net (a uniform shift would drive the upper levels' humidity negative)."""
    dq = np.asarray(dq, np.float64)
    q = np.clip(np.asarray(q, np.float64), 0.0, None)
    net = np.tensordot(dsigma, dq, axes=(0, 0))
    load = np.tensordot(dsigma, q, axes=(0, 0))
    share = np.divide(net, load, out=np.zeros_like(net), where=load > 0)
    return (dq - share[None] * q).astype(np.float32)


#: the parts of an ML call the status times (after the first call): the columns' features, the network
#: (the artefact's call), the guard with the fields' layout, and the form (mean, residual, levels, eddies)
INFERENCE_PARTS = ("features", "network", "guard", "form")


@dataclass
class GuardCounts:
    columns: int = 0
    fallback: int = 0
    clipped: int = 0


class Corrector:
    """The external tendency of a run for the window starting at ``t``, from the state then."""

    kind = "none"
    #: the tendencies it corrects (names of :data:`nudgeml.targets.CORRECTED`)
    variables: tuple[str, ...] = ()

    def __call__(self, t: np.datetime64, state: Any) -> Correction:
        return Correction()

    def status(self) -> dict[str, Any]:
        return {}


class MeanCorrector(Corrector):
    kind = "mean"

    def __init__(self, mean: Any, climatology: str, variables: Sequence[str] | None = None, *, source: str = "mean tendency file") -> None:
        """``variables``: the tendencies to apply (default: every one ``mean`` holds); one the file
        lacks is an error naming ``source`` and the missing key."""
        from nudgeml.mean_tendency import mean_variables

        if climatology not in ("annual", "monthly"):
            raise ConfigError(f"climatology must be 'annual' or 'monthly', got {climatology!r}")
        self.climatology = climatology
        have = mean_variables(mean)
        self.variables = check_corrected(have if variables is None else variables, f"{source} (key 'variables')")
        for k in self.variables:
            if k not in have:
                hint = " (it holds T / q only when the nudged run nudged them: nudging.t, nudging.q)" if k in ("dt", "dq") else ""
                raise InputError(f"{source}: the mean correction applies {k!r} but the file has no '{k}_mean'{hint}")
        self.annual = tuple(mean[f"{k}_mean"].values for k in self.variables)
        self.monthly = tuple(mean[f"{k}_monthly"].values for k in self.variables)

    def __call__(self, t: np.datetime64, state: Any) -> Correction:
        if self.climatology == "annual":
            return Correction(*self.annual)
        m = int(str(np.datetime64(t, "M"))[5:7]) - 1
        return Correction(*(a[m] for a in self.monthly))


class MLCorrector(Corrector):
    """Calls an exported model every window and guards its output."""

    kind = "ml"

    def __init__(
        self,
        model_dir: Path,
        backend: str,
        spec: ColumnSpec,
        grid: Any,
        fallback: Sequence[np.ndarray],
        *,
        scale: float = 1.0,
        large_scale: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        add_mean: bool = False,
        eddy_only: bool = False,
        top_hpa: float | None = None,
        bottom_hpa: float | None = None,
        rotational: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        model_targets: Sequence[str] | None = None,
    ) -> None:
        import torch

        from nudgeml.guard import float32_bounds, guard_bounds
        from nudgeml.manifest import read_manifest

        self.manifest = read_manifest(model_dir, klev=grid.sigma.size)
        expected = expand_names(spec.feature_blocks(grid.sigma.size))
        if list(self.manifest.feature_names) != expected:
            raise InputError(f"{model_dir / 'model.json'}: {first_difference('features', list(self.manifest.feature_names), expected)} (the run's columns config)")
        nlev = grid.sigma.size
        names = check_corrected([b.name for b in self.manifest.targets], f"{model_dir / 'model.json'}: key 'targets'")
        if any(b.levels != nlev for b in self.manifest.targets):
            raise InputError(f"{model_dir / 'model.json'}: key 'targets': blocks {[(b.name, b.levels) for b in self.manifest.targets]} are not on the run's {nlev} levels")
        if len(fallback) != len(names):
            raise InputError(f"{model_dir / 'model.json'}: the model corrects {list(names)}, the fallback (mean tendency) has {len(fallback)} field(s)")
        self.variables = names
        if not np.allclose(self.manifest.levels.values, grid.presnivs_pa, rtol=1e-5):
            raise InputError(f"{model_dir / 'model.json'}: key 'levels.values' does not match the run's model levels")
        if self.manifest.grid is not None and (self.manifest.grid.nlat, self.manifest.grid.nlon) != (grid.lat_deg.size, grid.lon_deg.size):
            raise InputError(f"{model_dir / 'model.json'}: key 'grid' is {self.manifest.grid.nlat}x{self.manifest.grid.nlon}, the run's grid is {grid.lat_deg.size}x{grid.lon_deg.size}")
        # one intra-op thread: the GCM's XLA threads own the cores, and a few thousand columns gain
        # nothing from more (on a busy 2-core machine: 8 ms a call with 1 thread, 28 ms with 2)
        torch.set_num_threads(1)
        if backend not in ("torchscript", "aoti"):
            raise ConfigError(f"unknown model backend {backend!r}; use torchscript or aoti")
        if self.manifest.tree_backend is not None:
            # a compiled tree ensemble replaces either torch artefact: same contract, ~7x faster
            # than the TorchScript walker (benchmarks/tree_call.py)
            from nudgeml.trees import CompiledTrees

            artifact = model_dir / self.manifest.artifacts["trees"]
            self.model = CompiledTrees(artifact)
            backend = self.manifest.tree_backend
        elif backend == "torchscript":
            self.model = torch.jit.load(str(model_dir / self.manifest.artifacts["torchscript"]), map_location="cpu").eval()
            artifact = model_dir / self.manifest.artifacts["torchscript"]
        else:
            self.model = torch._inductor.aoti_load_package(str(model_dir / self.manifest.artifacts["aoti"]))
            artifact = model_dir / self.manifest.artifacts["aoti"]
        check_module_shapes(self.model, artifact, len(self.manifest.feature_names), len(self.manifest.target_names), grid.lat_deg.size * grid.lon_deg.size)
        self.backend = backend
        self.spec, self.grid = spec, grid
        self.features = ColumnFeatures(spec, lat_deg=grid.lat_deg, lon_deg=grid.lon_deg, land_fraction=grid.land_fraction)
        self.bounds = float32_bounds(guard_bounds(self.manifest.guard))  # the guard in float32, exact
        nlat, nlon = grid.lat_deg.size, grid.lon_deg.size
        self.shape = (nlev, nlat, nlon)
        self.residual: tuple[np.ndarray, ...] | None = None
        self.model_mean: tuple[np.ndarray, ...] | None = None  # float64, (lev, lat, lon) per target: see add_mean_residual
        self.set_mean(fallback)  # the guard's fallback: the mean tendency
        self.counts = GuardCounts()
        self.per_window: list[tuple[str, int, int]] = []
        self.seconds = 0.0
        self.calls = 0
        # where a call's time goes, summed over the calls after the first: INFERENCE_PARTS
        self.part_seconds = np.zeros(len(INFERENCE_PARTS))
        self.last_parts: tuple[float, float, float] = (0.0, 0.0, 0.0)  # predict's features, network, guard
        self.scale = float(scale)
        self.large_scale = large_scale
        self.residual_counts: dict[str, int] = {}
        self.gains: np.ndarray | None = None  # (n_targets, nlev): see set_gains
        # mean + model output as it is: a model trained online as a departure from the mean (nudgeml.online)
        self.add_mean = bool(add_mean)
        # the correction's zonal mean is the mean's: the model's part about the mean, zonal mean removed
        self.eddy_only = bool(eddy_only)
        # levels where the model's part about the mean applies (None: every level); the mean above
        self.levels_on: np.ndarray | None = None
        if top_hpa is not None or bottom_hpa is not None:
            on = model_levels(grid.presnivs_pa, top_hpa, bottom_hpa)
            self.levels_on = None if on.all() else on
        # (du, dv) -> their rotational part: the model's part about the mean adds no divergence
        self.rotational = rotational
        # targets whose model part about the mean applies (None: all); the others get the mean tendency
        self.targets_on: tuple[bool, ...] | None = None
        if model_targets is not None:
            unknown = [k for k in model_targets if k not in names]
            if unknown or not model_targets:
                raise ConfigError(f"model_targets {list(model_targets)}: the model {model_dir} corrects {list(names)}")
            on_t = tuple(k in model_targets for k in names)
            self.targets_on = None if all(on_t) else on_t

    def predict(self, t: np.datetime64, state: Any) -> tuple[tuple[np.ndarray, ...], Any]:
        """The guarded model output for the columns of ``state`` at ``t``: one canonical (lev, lat, lon)
        field per target block (``variables``), and the guard's result."""
        import torch

        from nudgeml.guard import apply_guard_f32

        t0 = time.perf_counter()
        fields = {"u": state.u[None], "v": state.v[None], "t": state.t[None], "q": state.q[None], "ps": state.ps[None]}
        x = self.features(fields, np.array([t]))[0]
        t1 = time.perf_counter()
        with torch.no_grad():
            y = self.model(torch.from_numpy(x))
        y = np.asarray((y[0] if isinstance(y, (list, tuple)) else y).numpy(), np.float32)
        t2 = time.perf_counter()
        g = apply_guard_f32(x, y, self.fallback, self.bounds)
        # (column, target) -> one (lev, lat, lon) field per target block, in one transposed copy
        fields = tuple(np.ascontiguousarray(g.tendency.T).reshape(len(self.variables), *self.shape))
        self.last_parts = (t1 - t0, t2 - t1, time.perf_counter() - t2)
        return fields, g

    def model_part(self, t: np.datetime64, state: Any) -> tuple[tuple[np.ndarray, ...], Any]:
        """The guarded output times ``scale``, large-scale filtered if asked: what the model adds."""
        fields, g = self.predict(t, state)
        if self.scale != 1.0:
            fields = tuple(self.scale * f for f in fields)
        if self.large_scale is not None:  # winds only (make_corrector refuses a filter with dt / dq)
            fields = (*self.large_scale(fields[0], fields[1]), *fields[2:])
        return fields, g

    def add_mean_residual(self, mean: Sequence[np.ndarray], states: Any) -> None:
        """Make the correction's time mean over the training states equal the mean nudging tendency.

        ``states`` yields ``(time, state)`` of the nudged run's training blocks; the residual
        ``mean_nudging - mean(model part)`` is added to every call: the model supplies the state
        dependence, the nudging supplies the mean (which also holds the error a physics-only target
        cannot see, e.g. resolution error, and the scales a filtered model part leaves out).

        A column on the guard's fallback gets the mean itself (``__call__``), so its model part is left
        out of that column's mean (and counted): per column, the correction's mean over the training
        states is then the nudging mean exactly, fallbacks or not.
        """
        if len(mean) != len(self.variables):
            raise ValueError(f"the mean residual needs one mean per corrected tendency {list(self.variables)}, got {len(mean)}")
        sums = [np.zeros(self.shape) for _ in self.variables]
        n_used = np.zeros(self.shape[1:])  # per column: training states not on the fallback
        n = n_fallback = 0
        for t, state in states:
            fields, g = self.model_part(t, state)
            used = ~g.fallback.reshape(self.shape[1:])
            for acc, f in zip(sums, fields):
                acc += np.where(used, f, 0.0)
            n_used += used
            n += 1
            n_fallback += g.n_fallback
        if n == 0:
            raise InputError("no training state to compute the mean residual from")
        denom = np.maximum(n_used, 1)
        # a column on the fallback in every training state never uses the residual: the model's mean
        # is taken as the nudging mean there, so the residual is 0
        self.model_mean = tuple(np.where(n_used > 0, s_ / denom, m) for m, s_ in zip(mean, sums))
        self.residual = tuple((m - mm).astype(np.float32) for m, mm in zip(mean, self.model_mean))
        self.residual_counts = {"training_states": n, "fallback_column_states": int(n_fallback), "column_states": int(n * n_used.size)}
        log.info("mean residual over %d training states (%d of %d column-states on the guard's fallback, left out): rms du %.2e m s-2",
                 n, n_fallback, n * n_used.size, float(np.sqrt(np.mean(self.residual[0] ** 2))))

    def set_mean(self, mean: Sequence[np.ndarray]) -> None:
        """Rebase the correction on another mean tendency (one (lev, lat, lon) field per target): the
        guard's fallback, the mean kept off the model's levels and zonal mean, and the mean residual
        (``mean - model mean``; the model's training mean does not depend on the mean) all become
        ``mean``'s, as if the corrector had been made from a file holding it. ``nudgeml.feedback`` tunes
        the mean with the method in its runs through this."""
        if len(mean) != len(self.variables):
            raise ValueError(f"set_mean needs one mean per corrected tendency {list(self.variables)}, got {len(mean)}")
        fields = tuple(np.asarray(m, np.float32).reshape(self.shape) for m in mean)
        self.fallback_fields = fields
        self.fallback = np.concatenate([f.reshape(self.shape[0], -1).T for f in fields], axis=1)  # (ncol, ntargets)
        if self.model_mean is not None:
            self.residual = tuple((f.astype(np.float64) - mm).astype(np.float32) for f, mm in zip(fields, self.model_mean))

    def set_gains(self, gains: np.ndarray) -> None:
        """Scale the state-dependent part about the mean, per target and level (``nudgeml.calibrate``):
        ``mean + g (model part - model mean)``; 0 is the mean baseline, 1 the plain mean-residual run."""
        if self.residual is None:
            raise ConfigError("gains scale the model's part about the nudging mean: they need mean_residual")
        gains = np.asarray(gains, np.float32)
        if gains.shape != (len(self.variables), self.shape[0]):
            raise ValueError(f"gains have shape {gains.shape}, the model corrects {list(self.variables)} on {self.shape[0]} levels")
        self.gains = gains

    def __call__(self, t: np.datetime64, state: Any) -> Correction:
        t0 = time.perf_counter()
        fields, g = self.model_part(t, state)
        if self.add_mean:
            fields = tuple(f + m for f, m in zip(fields, self.fallback_fields))
        if self.residual is not None:
            fields = tuple(f + r for f, r in zip(fields, self.residual))
        if self.gains is not None:
            # model part + residual = mean + (model part - model mean): scale the bracket
            fields = tuple(k[:, None, None] * f + (1 - k[:, None, None]) * m for f, k, m in zip(fields, self.gains, self.fallback_fields))
        if self.levels_on is not None:  # above top_hpa (below bottom_hpa) the mean: a gain of 0 about it
            fields = tuple(np.where(self.levels_on[:, None, None], f, m) for f, m in zip(fields, self.fallback_fields))
        if self.targets_on is not None:  # the other targets the mean: a gain of 0 about it
            fields = tuple(f if on else m for f, on, m in zip(fields, self.targets_on, self.fallback_fields))
        if self.rotational is not None:  # variables start du, dv (check_corrected)
            (mu, mv), rest = self.fallback_fields[:2], fields[2:]
            ru, rv = self.rotational(fields[0] - mu, fields[1] - mv)
            fields = (mu + ru, mv + rv, *rest)
        if self.eddy_only:
            kept = ~g.fallback.reshape(self.shape[1:])
            fields = tuple(m + zonal_departure(f - m, kept) for f, m in zip(fields, self.fallback_fields))
        if g.n_fallback:
            # a column that falls back gets the mean tendency itself, not the mean passed on to the
            # model part and then scaled, filtered or shifted by the mean residual (which made it
            # 2 x mean - the model's mean)
            cols = g.fallback.reshape(self.shape[1:])
            fields = tuple(f.copy() for f in fields)
            for f, fb in zip(fields, self.fallback_fields):
                f[:, cols] = fb[:, cols]
        dt = time.perf_counter() - t0
        self.seconds += dt
        if self.calls:  # the first call holds the artefact's warm-up: the parts are the steady calls'
            self.part_seconds += (*self.last_parts, dt - sum(self.last_parts))
        self.calls += 1
        self.counts.columns += g.fallback.size
        self.counts.fallback += g.n_fallback
        self.counts.clipped += g.n_clipped
        self.per_window.append((str(t), g.n_fallback, g.n_clipped))
        return Correction(**dict(zip(self.variables, fields)))

    def status(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            **({"aoti_precision": self.manifest.aoti_precision} if self.backend == "aoti" else {}),
            "calls": self.calls,
            "inference_s": self.seconds,
            "inference_parts_s": dict(zip(INFERENCE_PARTS, self.part_seconds.round(6).tolist())),
            "guard": {"columns": self.counts.columns, "fallback_columns": self.counts.fallback, "clipped_values": self.counts.clipped, "margin": self.manifest.guard.margin},
            "guard_per_window": [{"time": t, "fallback": f, "clipped": c} for t, f, c in self.per_window],
            **({"mean_residual": self.residual_counts} if self.residual is not None else {}),
            **({"add_mean": True} if self.add_mean else {}),
            **({"eddy_only": True} if self.eddy_only else {}),
            **({"rotational_only": True} if self.rotational is not None else {}),
            **({"model_targets": [k for k, on in zip(self.variables, self.targets_on) if on]} if self.targets_on is not None else {}),
            **({"model_levels_pa": np.asarray(self.grid.presnivs_pa, float)[self.levels_on].round(1).tolist()} if self.levels_on is not None else {}),
        }


def read_gains(path: str | Path, variables: Sequence[str], n_levels: int) -> np.ndarray:
    """The per-level gains ``(n_variables, n_levels)`` a calibration wrote (:mod:`nudgeml.calibrate`,
    which imports this module: the reader lives here), checked against the run."""
    try:
        record = json.loads(Path(path).read_text())
        gains = np.asarray(record["level_gains"], float)
        got = list(record["variables"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a calibration record ({type(exc).__name__}: {exc})") from None
    if got != list(variables) or gains.shape != (len(variables), n_levels):
        raise InputError(f"{path}: gains for {got} on {gains.shape[-1] if gains.ndim == 2 else '?'} levels; the run corrects {list(variables)} on {n_levels}")
    if not np.isfinite(gains).all():
        raise InputError(f"{path}: key 'level_gains' holds non-finite values")
    return gains


def perturbed_member(state: Any, member: int, sd_k: float) -> Any:
    """Member ``member``'s initial state: member 0 is ``state`` itself, a member k > 0 a copy whose
    temperature carries a tiny random perturbation (``sd_k`` K, seeded by k): the initial-condition
    ensemble of the free runs."""
    from dataclasses import replace

    if member <= 0:
        return state
    rng = np.random.default_rng(member)
    return replace(state, t=(state.t + rng.normal(scale=sd_k, size=state.t.shape)).astype(np.float32))


def check_module_shapes(model: Any, artifact: Path, n_features: int, n_targets: int, n_columns: int) -> None:
    """One call on zeros of the run's shape ``(n_columns, n_features)`` before the run: a module that
    does not match its manifest is named here, not 20 s into the run as a bare matmul error."""
    import torch

    try:
        with torch.no_grad():
            y = model(torch.zeros(n_columns, n_features))
    except Exception as exc:  # noqa: BLE001 -- any failure of the call is the artefact's, say which
        message = str(exc).strip().splitlines()
        raise InputError(f"{artifact}: does not take the manifest's {n_features} features for {n_columns} columns ({type(exc).__name__}: {message[-1] if message else ''})") from None
    y = y[0] if isinstance(y, (list, tuple)) else y
    if tuple(y.shape) != (n_columns, n_targets):
        raise InputError(f"{artifact}: returns shape {tuple(y.shape)} for {n_columns} columns, the manifest says ({n_columns}, {n_targets})")


def training_states(nudged_histhf: str | Path, blocks: Sequence[tuple[np.datetime64, np.datetime64]]) -> Any:
    """``(time, state)`` of the nudged run inside the training ``blocks`` (``[(first, last)]``, inclusive)."""
    from nudgeml.conventions import read_histhf
    from nudgeml.gcm.standin import GridState
    from nudgeml.split import in_blocks

    h = read_histhf(nudged_histhf)
    sel = h.isel(time=np.flatnonzero(in_blocks(h["time"].values, [(str(np.datetime64(a, "s")), str(np.datetime64(b, "s"))) for a, b in blocks])))
    for t in sel["time"].values:
        snap = sel.sel(time=t).load()
        yield np.datetime64(t, "s"), GridState(**{k: snap[k].values for k in ("u", "v", "t", "q", "ps")})


class ColumnNeutralHumidity(Corrector):
    """A corrector whose humidity correction is made column-neutral (:func:`column_neutral_humidity`,
    the window-start humidity): the free run's precipitation then needs no share of the correction's
    water (``report.precipitation`` scores both definitions alike). Everything else is the wrapped
    corrector's."""

    def __init__(self, inner: Corrector, dsigma: np.ndarray) -> None:
        if "dq" not in inner.variables:
            raise ConfigError(f"humidity_column_neutral needs a humidity correction; this run corrects {list(inner.variables)}")
        self.inner = inner
        self.kind, self.variables = inner.kind, inner.variables
        self.dsigma = np.asarray(dsigma, np.float64)

    def __getattr__(self, name: str) -> Any:  # what only the wrapped one has: seconds, gains, set_gains ...
        return getattr(self.inner, name)

    def __call__(self, t: np.datetime64, state: Any) -> Correction:
        c = self.inner(t, state)
        assert c.dq is not None  # checked at construction: the run corrects dq
        return c._replace(dq=column_neutral_humidity(c.dq, state.q, self.dsigma))

    def status(self) -> dict[str, Any]:
        return {**self.inner.status(), "humidity_column_neutral": True}


def make_corrector(
    spec: Mapping[str, Any],
    *,
    columns: ColumnSpec,
    grid: Any,
    mean_file: str | Path | None,
    model_dir: str | Path | None,
    nudged_histhf: str | Path | None = None,
    training: Sequence[tuple[np.datetime64, np.datetime64]] | None = None,
    gcm: Any = None,
) -> Corrector:
    """The corrector of a run spec; ``gcm`` (a started or fresh model) provides the spectral filter
    and, for ``humidity_column_neutral``, the sigma layers."""
    from nudgeml.mean_tendency import read_mean_tendency

    kind = spec["correction"]
    if kind == "none":
        return _column_neutral(spec, Corrector(), gcm)  # refuses the key: nothing to make neutral
    if mean_file is None:
        raise ConfigError(f"correction {kind!r} needs the mean tendency file")
    mean = read_mean_tendency(mean_file)
    if mean["du_mean"].shape != grid.shape:
        raise InputError(f"{mean_file}: mean tendency is {mean['du_mean'].shape}, the model grid is {grid.shape}")
    if kind == "mean":
        return _column_neutral(spec, MeanCorrector(mean, spec.get("climatology", "annual"), spec.get("variables"), source=str(mean_file)), gcm)
    if "variables" in spec:
        raise ConfigError(f"'variables' is a key of the mean correction; an ml correction applies its model's targets (got correction {kind!r})")
    if kind == "ml":
        if model_dir is None:
            raise ConfigError("correction 'ml' needs a model")
        from nudgeml.manifest import read_manifest

        # the guard's fallback for every target is its mean tendency: the mean file must hold each one
        targets = check_corrected([b.name for b in read_manifest(Path(model_dir), klev=grid.sigma.size).targets], f"{Path(model_dir) / 'model.json'}: key 'targets'")
        for k in targets:
            if f"{k}_mean" not in mean:
                raise InputError(f"{mean_file}: the model {Path(model_dir) / 'model.json'} corrects {k!r} but the mean tendency file has no '{k}_mean' (the guard's fallback and mean residual need it; was the nudged run nudging T / q? nudging.t, nudging.q)")
        fallback = tuple(mean[f"{k}_mean"].values for k in targets)
        large_scale = None
        if "filter_truncation" in spec:
            if gcm is None:
                raise ConfigError("filter_truncation needs the model (its spectral transform)")
            if targets != ("du", "dv"):
                raise ConfigError(f"filter_truncation filters winds (vorticity, divergence); the model {model_dir} corrects {list(targets)}")
            n = int(spec["filter_truncation"])
            if not 0 <= n <= gcm.grid.truncation:
                raise ConfigError(f"filter_truncation {n} is outside 0..{gcm.grid.truncation} (the model truncation)")
            large_scale = lambda du, dv: gcm.large_scale_winds(du, dv, n)  # noqa: E731
        add_mean = bool(spec.get("add_mean", False))
        if add_mean and (spec.get("mean_residual") or spec.get("calibrated")):
            raise ConfigError("add_mean adds the model's output to the mean as it is; mean_residual and calibrated shift or scale it about the model's mean")
        for key in ("top_hpa", "bottom_hpa", "model_targets"):
            if key in spec and not (add_mean or spec.get("mean_residual")):
                raise ConfigError(f"{key} keeps the model's part about the mean on some levels or targets, the mean on the others: it needs mean_residual or add_mean")
        rotational = None
        if spec.get("rotational_only"):
            if gcm is None or not hasattr(gcm, "rotational_winds"):
                raise ConfigError("rotational_only needs the stand-in model (its spectral transform)")
            rotational = gcm.rotational_winds
        ml = MLCorrector(Path(model_dir), spec.get("backend", "torchscript"), columns, grid, fallback, scale=float(spec.get("scale", 1.0)),
                         large_scale=large_scale, add_mean=add_mean, eddy_only=bool(spec.get("eddy_only", False)),
                         top_hpa=float(spec["top_hpa"]) if "top_hpa" in spec else None,
                         bottom_hpa=float(spec["bottom_hpa"]) if "bottom_hpa" in spec else None, rotational=rotational,
                         model_targets=spec.get("model_targets"))
        if spec.get("mean_residual", False):
            if nudged_histhf is None or training is None:
                raise ConfigError("mean_residual needs the nudged run and the training period")
            ml.add_mean_residual(fallback, training_states(nudged_histhf, training))
        return _column_neutral(spec, ml, gcm)
    raise ConfigError(f"unknown correction {kind!r}")


def _column_neutral(spec: Mapping[str, Any], corrector: Corrector, gcm: Any) -> Corrector:
    """``corrector``, its humidity correction made column-neutral when the run asks for it."""
    if not spec.get("humidity_column_neutral"):
        return corrector
    if gcm is None or not hasattr(gcm, "dsigma"):
        raise ConfigError("humidity_column_neutral needs the stand-in model (its sigma layers)")
    return ColumnNeutralHumidity(corrector, gcm.dsigma)


def run_free(
    config: Mapping[str, Any],
    run: str,
    grid_path: str | Path,
    forcing_paths: Sequence[str | Path],
    out_histhf: str | Path,
    out_status: str | Path,
    *,
    mean_file: str | Path | None = None,
    model_dir: str | Path | None = None,
    nudged_histhf: str | Path | None = None,
    training: Sequence[tuple[np.datetime64, np.datetime64]] | None = None,
    gains_file: str | Path | None = None,
) -> dict[str, Any]:
    """Run one free run (or member) and write its history and status; return the status. A
    ``calibrated`` run reads its gains from ``gains_file`` (:mod:`nudgeml.calibrate`)."""
    name, member = split_member(run)
    runs = config["free_runs"]["runs"]
    if name not in runs:
        raise ConfigError(f"config key 'free_runs.runs' has no run {name!r} (has {sorted(runs)})")
    spec = runs[name]
    if member >= int(spec.get("members", 1)):
        raise ConfigError(f"run {run!r}: free_runs.runs.{name}.members is {spec.get('members', 1)}")
    period = Period.from_config(config["free_runs"])
    forcing = select_times(open_forcing(forcing_paths), period.times[:1], forcing_paths[0])
    grid = read_model_grid(grid_path)
    columns = ColumnSpec.from_config(config["columns"]) if "columns" in config else ColumnSpec()
    gcm = model_gcm(config, period.start)
    check_same_grid(gcm.grid, grid, grid_path)
    corrector = make_corrector(spec, columns=columns, grid=grid, mean_file=mean_file, model_dir=model_dir, nudged_histhf=nudged_histhf, training=training, gcm=gcm)  # before the long part
    if spec.get("calibrated"):
        if gains_file is None:
            raise ConfigError(f"free run {name!r} is calibrated: it needs the calibration's gains file")
        assert isinstance(getattr(corrector, "inner", corrector), MLCorrector)  # check_calibration_config: calibrated runs are ml runs
        corrector.set_gains(read_gains(gains_file, corrector.variables, grid.sigma.size))
    state = state_at(forcing, period.start)
    if member > 0:  # initial-condition ensemble: a tiny temperature perturbation
        state = perturbed_member(state, member, float(config["free_runs"]["perturbation_k"]))
    gcm.start(state)
    attrs = {"run": run, "correction": spec["correction"], "corrected": " ".join(corrector.variables), "member": member, "model_truncation": gcm.grid.truncation}
    hist = HistoryWriter(out_histhf, gcm.grid, period.start, attrs, precip_correction=True)
    max_wind = float(config["free_runs"]["max_wind_ms"])
    n_windows = len(period.times) - 1
    status: dict[str, Any] = {"run": run, "name": name, "member": member, "correction": spec["correction"], "status": "ok", "n_windows": n_windows, "windows_done": 0}
    max_abs_u = 0.0
    t0 = time.perf_counter()
    first_window_s = first_inference_s = 0.0  # the first window's wall time holds the XLA compilation
    try:
        state = gcm.current_state()
        for i in range(n_windows):
            w = gcm.run_window(**corrector(gcm.time, state).window_kwargs())
            hist.append(w)
            if i == 0:
                first_window_s, first_inference_s = time.perf_counter() - t0, getattr(getattr(corrector, "inner", corrector), "seconds", 0.0)
            state = gcm.current_state()
            status["windows_done"] = i + 1
            umax = float(np.nanmax(np.abs(state.u))) if np.isfinite(state.u).any() else float("inf")
            max_abs_u = max(max_abs_u, umax)
            if not state.is_finite() or umax > max_wind:
                reason = "non-finite state" if not state.is_finite() else f"|u| reached {umax:.0f} m/s (> max_wind_ms = {max_wind:.0f})"
                status.update(status="failed", failed_at=str(gcm.time), reason=reason)
                log.error("run %s blew up at %s: %s; stopping and keeping %d windows", run, gcm.time, reason, i + 1)
                break
            if i % 40 == 0:
                log.info("%s %s max|u| %.1f", run, w.start, umax)
    except BaseException:
        hist.abort(keep=False)
        raise
    wall = time.perf_counter() - t0
    hist.set_attrs(status=status["status"], **({"failure": f"{status.get('failed_at')}: {status.get('reason')}"} if status["status"] == "failed" else {}))
    hist.close()
    status.update(wall_s=wall, max_abs_u=max_abs_u, corrected=list(corrector.variables), **corrector.status())
    if getattr(corrector, "gains", None) is not None:
        status["level_gains"] = np.asarray(corrector.gains, float).round(4).tolist()
    if "inference_s" in status:
        status["inference_share"] = status["inference_s"] / wall if wall > 0 else 0.0
        # the share once the model is compiled: what a longer run converges to (issue 16's figure)
        steady = wall - first_window_s
        status["inference_share_steady"] = (status["inference_s"] - first_inference_s) / steady if steady > 0 else 0.0
        # each part's share of the same steady wall time (the first window holds the first call)
        status["inference_parts_share_steady"] = {k: v / steady if steady > 0 else 0.0 for k, v in status["inference_parts_s"].items()}
        log.info("ML inference: %.2f s of %.1f s (%.2f %% of the run's wall time, %.2f %% after the first window, %d calls)",
                 status["inference_s"], wall, 100 * status["inference_share"], 100 * status["inference_share_steady"], status["calls"])
        log.info("guard: %d of %d columns fell back, %d values clipped", status["guard"]["fallback_columns"], status["guard"]["columns"], status["guard"]["clipped_values"])
    write_text_atomic(out_status, json.dumps(status, indent=1) + "\n")
    return status
