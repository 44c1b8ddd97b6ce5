"""Online (a posteriori) training of a column correction through the differentiable stand-in (issue 13,
method d).

Every model trained *offline* on the nudging tendency learns a dependence on the local state that
feeds back on the free run (``docs/science.md``). Here the correction is trained on what matters: the
free run's own error. The stand-in is JAX (jcm), so the gradient of a multi-day rollout's distance to
the analysis with respect to the network's weights is exact (reverse mode through every time step):

    correction(x) = mean + m(x)
    loss = mean over k = 1..K of  sum_var  w . ((x_k - a_k) / s_var,lev)^2      (area weighted)
           + lambda . sum_var  w . ((mean_k x_k - mean_k a_k) / s_var,lev)^2     (online.time_mean_weight)

``x_k`` is the model's state after ``k`` six-hour windows of a free run started from the analysis
``a_0`` (a training-block date), the correction computed from the window's initial state and held
over the window, as in every free run; ``s`` is the offline model's feature standard deviation per
variable and level. The second term (off by default) is the error of the rollout's time mean: the
first term counts the systematic error once beside the growing chaotic part, which the correction
cannot remove; ``lambda > 0`` weights the part a free run's climate is judged on. ``m`` is the offline
model's architecture and normalisation, its hidden layers as trained offline, its **last layer zero**:
at step 0 the correction is the mean tendency exactly, so any gain over the mean baseline is learned
online. With ``online.init`` naming another online model trained in the same form, the training
continues that model's network instead (a curriculum: short rollouts first, then longer ones from where
they ended; the chain's first model is offline and gives the columns, store and split). ``m`` is an
ordinary :class:`NormalizedModel` afterwards (the export, the guard, the manifest and the LMDZ bridge take it as any model); the free
run adds it to the mean (``add_mean``), or with ``mean_residual`` adds only its part about its mean over
the training states (the nudging mean kept, the learned state dependence applied).

Stand-in only: LMDZ has no adjoint. It tells whether the barrier is the nudging target or the model
class, and bounds what a column model can reach (issue 13, d).

The guard (training-range check, fallback to the mean) is not differentiable and is left out of the
training rollouts; the free run applies it as to any model and counts its fallbacks.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nudgeml.errors import ConfigError, InputError
from nudgeml.naming import offline_root

log = logging.getLogger(__name__)

WINDOW = np.timedelta64(6 * 3600, "s")
#: the state variables the rollout loss compares with the analysis (per-level feature blocks)
LOSS_VARIABLES = ("u", "v", "t", "q")


@dataclass(frozen=True)
class OnlineSettings:
    """A model section's ``online`` mapping."""

    # the offline model whose architecture, normalisation and hidden layers start it (last layer zero), or
    # an online model trained in the same form whose network this one continues: a curriculum stage
    # (e.g. 4-day rollouts, then 16-day ones from where they ended)
    init: str
    windows: int = 8  # rollout length in 6-h windows
    steps: int = 100  # gradient steps, one rollout each
    learning_rate: float = 1e-4
    clip_norm: float = 1.0  # global gradient-norm clip (the chaotic rollout's gradient has heavy tails)
    validation_starts: int = 4
    validate_every: int = 25
    seed: int = 0
    # the form the free run applies, trained as it is applied ("train what you apply"): the network's
    # zonal mean removed per latitude row and level (eddy_only), and its part kept on the levels at
    # or below top_hpa (the mean above); a free run of the model then has to apply the same form
    eddy_only: bool = False
    top_hpa: float | None = None
    # weight of the rollout's time-mean error beside the per-window error (0: the per-window loss alone)
    time_mean_weight: float = 0.0

    @property
    def in_form(self) -> bool:
        """Trained in a form (eddies only, or below ``top_hpa``): the only form its free runs and rollout scores may apply."""
        return self.eddy_only or self.top_hpa is not None

    @property
    def form(self) -> dict[str, Any]:
        """The form it is trained in, as a free run states it."""
        return {"eddy_only": self.eddy_only, "top_hpa": self.top_hpa}

    @classmethod
    def from_config(cls, section: Mapping[str, Any], key: str) -> "OnlineSettings":
        if "init" not in section:
            raise ConfigError(f"config key '{key}.init' is required: the offline model the online training starts from")
        kw: dict[str, Any] = {"init": str(section["init"])}
        kw.update({k: int(section[k]) for k in ("windows", "steps", "validation_starts", "validate_every", "seed") if k in section})
        kw.update({k: float(section[k]) for k in ("learning_rate", "clip_norm", "top_hpa", "time_mean_weight") if k in section})
        if "eddy_only" in section:
            kw["eddy_only"] = bool(section["eddy_only"])
        s = cls(**kw)
        for name in ("windows", "steps", "validate_every"):
            if getattr(s, name) < 1:
                raise ConfigError(f"config key '{key}.{name}' is {getattr(s, name)}: at least 1")
        if s.validation_starts < 0:
            raise ConfigError(f"config key '{key}.validation_starts' is {s.validation_starts}: 0 or more")
        if s.top_hpa is not None and not s.top_hpa > 0:
            raise ConfigError(f"config key '{key}.top_hpa' is {s.top_hpa}: a pressure above 0 hPa")
        if not s.time_mean_weight >= 0:
            raise ConfigError(f"config key '{key}.time_mean_weight' is {s.time_mean_weight}: 0 or more")
        return s


def check_online_config(config: Mapping[str, Any]) -> None:
    """Before any run: an online model starts from an offline mlp of the same columns, or continues an
    online one trained in the same form (a curriculum stage), on the stand-in."""
    models = config.get("models", {})
    for name, section in models.items():
        if "online" not in section:
            continue
        key = f"models.{name}.online"
        s = OnlineSettings.from_config(section["online"], key)
        init = models.get(s.init)
        if init is None:
            raise ConfigError(f"config key '{key}.init' names {s.init!r}, which is not in 'models' ({sorted(models)})")
        if init.get("kind") != "mlp" or section.get("kind") != "mlp":
            raise ConfigError(f"config key '{key}.init': online training starts an mlp from an mlp ({s.init!r} is {init.get('kind')!r})")
        if "online" in init:
            # a curriculum stage continues the network of the stage before it: that network is the
            # departure from the mean in its form, so the form must stay (and the chain end offline)
            prev = OnlineSettings.from_config(init["online"], f"models.{s.init}.online")
            if prev.form != s.form:
                raise ConfigError(f"config key '{key}.init' names the online model {s.init!r}, trained in the form {prev.form}; "
                                  f"this one is trained in {s.form}: a stage continues its network in the same form")
            offline_root(models, name)
        if config.get("gcm", {}).get("backend", "standin") != "standin":
            raise ConfigError(f"config key '{key}': online training differentiates the stand-in GCM (JAX); backend {config['gcm']['backend']!r} has no adjoint")
        if section.get("iterations"):
            raise ConfigError(f"config key 'models.{name}.iterations': an online model is trained by rollouts, not iterated")
        if name in config.get("train", {}).get("models", []):
            raise ConfigError(f"config key 'train.models' names the online model {name!r}: its offline score against the nudging target "
                              "would judge m without the mean it is added to; a free run that uses it trains it")
    for run, spec in config["free_runs"]["runs"].items():
        if spec.get("correction") != "ml":
            continue
        online = "online" in models.get(spec["model"], {})
        if online and not (spec.get("add_mean") or spec.get("mean_residual")):
            raise ConfigError(f"config key 'free_runs.runs.{run}': model {spec['model']!r} is trained online as a departure from the mean tendency; "
                              "set add_mean: true (mean + the model, as trained) or mean_residual: true (the mean + the model's part about its training mean)")
        s = OnlineSettings.from_config(models[spec["model"]]["online"], f"models.{spec['model']}.online") if online else None
        if s is not None and s.in_form:
            # a model trained in a form is the right correction in that form only: applied with another,
            # the free run would judge something the training never saw
            applied = {"eddy_only": bool(spec.get("eddy_only", False)), "top_hpa": float(spec["top_hpa"]) if "top_hpa" in spec else None}
            trained = s.form
            extra = [k for k in ("bottom_hpa", "rotational_only", "model_targets", "filter_truncation") if spec.get(k)]
            if applied != trained or extra or not spec.get("add_mean"):
                raise ConfigError(f"config key 'free_runs.runs.{run}': model {spec['model']!r} is trained online in the form {trained} "
                                  f"(models.{spec['model']}.online); the run applies {applied}{f' with {extra}' if extra else ''}"
                                  f"{'' if spec.get('add_mean') else ' without add_mean'}: apply it as it was trained (add_mean: true and the same form)")
        if spec.get("add_mean") and (spec.get("mean_residual") or spec.get("calibrated")):
            raise ConfigError(f"config key 'free_runs.runs.{run}.add_mean': the model's output is added to the mean as it is; mean_residual and calibrated shift or scale it about the model's mean")


def candidate_starts(blocks: Sequence[tuple[np.datetime64, np.datetime64]], windows: int) -> np.ndarray:
    """Every 6-hourly start inside ``blocks`` whose ``windows``-window rollout stays in its block."""
    from nudgeml.split import run_starts

    return run_starts(blocks, WINDOW * windows)


def validation_starts(blocks: Sequence[tuple[np.datetime64, np.datetime64]], windows: int, n: int, key: str, store: Any) -> np.ndarray:
    """``n`` rollout starts spread evenly over the validation ``blocks`` (none when 0); asked for where
    no ``windows``-window rollout fits in a block, an error naming the key."""
    from nudgeml.split import spread

    starts = candidate_starts(blocks, windows)
    if not n:
        return starts[:0]
    if not starts.size:
        raise ConfigError(f"config key '{key}.validation_starts' is {n}, but no {windows}-window rollout fits in a validation "
                          f"block of {store} ({[(str(a), str(b)) for a, b in blocks]}); set it to 0 (the last step's weights are kept) or use shorter windows")
    return spread(starts, n)


# --------------------------------------------------------------------------------------------------
# The network, torch <-> JAX
# --------------------------------------------------------------------------------------------------

def start_module(offline: Any) -> Any:
    """A copy of the offline :class:`NormalizedModel` whose output is zero: last layer zeroed, output
    mean zero (``y_std`` kept: the network's output scale stays the targets')."""
    import torch

    m = copy.deepcopy(offline).eval()
    linears = [layer for layer in m.net if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():
        linears[-1].weight.zero_()
        linears[-1].bias.zero_()
        m.y_mean.zero_()
    return m


def first_module(trained: Mapping[str, Any], s: OnlineSettings, path: str | Path, key: str) -> tuple[Any, OnlineSettings | None]:
    """The module online training starts from, and the online settings ``trained`` was itself trained
    with (None when offline). Offline: :func:`start_module` (the mean exactly). Trained online (a
    curriculum stage): a copy of its module as it ended, the departure from the mean in its form, so
    the form must be ``s``'s; another form is refused naming the file and the key."""
    stage = trained.get("summary", {}).get("online")
    if stage is None:
        return start_module(trained["module"]), None
    prev = OnlineSettings(**{f.name: stage[f.name] for f in dataclasses.fields(OnlineSettings) if f.name in stage})
    if prev.form != s.form:
        raise InputError(f"{path}: trained online in the form {prev.form}; {key} trains in {s.form}: a stage continues its network in the same form")
    return copy.deepcopy(trained["module"]).eval(), prev


def network_of(module: Any) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """The Linear layers' ``(W, b)`` and the activation's name of a NormalizedModel's ``net``."""
    import torch

    from nudgeml.models.mlp import ACTIVATIONS

    layers, act = [], None
    for layer in module.net:
        if isinstance(layer, torch.nn.Linear):
            layers.append((layer.weight.detach().numpy().astype(np.float32), layer.bias.detach().numpy().astype(np.float32)))
        elif isinstance(layer, torch.nn.Dropout):
            continue  # eval: identity
        elif type(layer) in ACTIVATIONS.values():
            if act not in (None, type(layer).__name__):
                raise InputError(f"online training takes one activation, the model has {act} and {type(layer).__name__}")
            act = type(layer).__name__
        else:
            raise InputError(f"online training takes Linear layers and one activation; the model has {type(layer).__name__}")
    return layers, act or "ReLU"


def set_network(module: Any, layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> Any:
    """``module`` with its Linear layers' weights replaced (in order)."""
    import torch

    linears = [layer for layer in module.net if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():
        for lin, (w, b) in zip(linears, layers, strict=True):
            lin.weight.copy_(torch.from_numpy(np.array(w, np.float32)))  # a writable copy (JAX arrays are read-only)
            lin.bias.copy_(torch.from_numpy(np.array(b, np.float32)))
    return module


def jax_forward(layers: Any, act: str, consts: Mapping[str, Any], x: Any) -> Any:
    """The NormalizedModel's forward in JAX (physical units in and out), for a ``(n, features)`` array."""
    import jax
    import jax.numpy as jnp

    fn = {"SiLU": jax.nn.silu, "ReLU": jax.nn.relu, "GELU": lambda z: jax.nn.gelu(z, approximate=False), "Tanh": jnp.tanh}[act]
    if consts["clip"]:
        x = jnp.clip(x, consts["x_lo"], consts["x_hi"])
    z = (x - consts["x_mean"]) / consts["x_std"]
    for i, (w, b) in enumerate(layers):
        z = z @ w.T + b
        if i < len(layers) - 1:
            z = fn(z)
    return z * consts["y_std"] + consts["y_mean"]


def module_constants(module: Any) -> dict[str, Any]:
    return {
        "clip": bool(module.clip_inputs),
        **{k: np.asarray(getattr(module, k).detach().numpy(), np.float32) for k in ("x_mean", "x_std", "y_mean", "y_std", "x_lo", "x_hi")},
    }


# --------------------------------------------------------------------------------------------------
# Rollouts through the stand-in
# --------------------------------------------------------------------------------------------------


class RolloutLoss(NamedTuple):
    """A rollout's loss: ``per_window + time_mean_weight * time_mean``; ``time_mean`` is the error of the
    rollout's time mean, unweighted (with one window it equals ``per_window``). Each term is the mean of
    its parts per variable (:data:`LOSS_VARIABLES`), given in ``per_window_vars`` and ``time_mean_vars``."""

    total: float
    per_window: float
    time_mean: float
    per_window_vars: dict[str, float]
    time_mean_vars: dict[str, float]

    @classmethod
    def of(cls, total: Any, per_window_vars: Any, time_mean_vars: Any) -> "RolloutLoss":
        pw, tm = np.asarray(per_window_vars, np.float64), np.asarray(time_mean_vars, np.float64)
        return cls(float(total), float(pw.mean()), float(tm.mean()), dict(zip(LOSS_VARIABLES, pw.tolist())), dict(zip(LOSS_VARIABLES, tm.tolist())))


class Rollouts:
    """The loss of a ``windows``-window free run of ``mean + m(x)`` against the analysis, and its gradient;
    with ``levels_on``, ``eddy_only`` and ``offset``, of ``mean + form(m(x) + offset)`` as a free run applies it.

    Layouts: jcm's fields are ``(lev top first, lon, lat)``; a column of the model's features is
    ``(lat, lon)`` row-major with levels surface first (``extract.column_features``): the two
    reshapes below are the only places that know both.
    """

    def __init__(self, gcm: Any, forcing: Any, mean: Sequence[np.ndarray], targets: Sequence[str], columns: Any,
                 consts: Mapping[str, Any], act: str, windows: int, *, loss_scale: Mapping[str, np.ndarray], eddy_only: bool = False,
                 levels_on: np.ndarray | None = None, offset: Sequence[np.ndarray] | None = None, time_mean_weight: float = 0.0) -> None:
        import jax
        import jax.numpy as jnp

        from nudgeml.extract import ColumnFeatures
        from nudgeml.gcm.standin import to_jcm

        self.gcm, self.forcing, self.windows = gcm, forcing, int(windows)
        self.columns, self.targets = columns, tuple(targets)
        grid = gcm.grid
        self.nlev, self.nlat, self.nlon = grid.shape
        self.mean_jcm = [jnp.asarray(to_jcm(m), jnp.float32) for m in mean]
        lat = np.deg2rad(grid.lat_deg)
        w = np.broadcast_to(np.cos(lat)[None, :], (self.nlon, self.nlat))  # jcm (lon, lat)
        self.area = jnp.asarray(w / w.sum(), jnp.float32)
        # the loss' scale per variable and level, jcm's level order (top first)
        self.scale = {k: jnp.asarray(np.asarray(loss_scale[k], np.float32)[::-1].reshape(-1, 1, 1)) for k in LOSS_VARIABLES}
        # the grid's static inputs as the free run's features have them (one implementation, float32)
        static = ColumnFeatures(columns, lat_deg=grid.lat_deg, lon_deg=grid.lon_deg, land_fraction=grid.land_fraction).static
        self.geo_static = {k: jnp.asarray(v) for k, v in static.items()}
        self.consts = {k: (jnp.asarray(v) if k != "clip" else v) for k, v in consts.items()}
        self.act = act
        # the form the free run applies (OnlineSettings.eddy_only, top_hpa): as coupled.MLCorrector with add_mean
        self.eddy_only = bool(eddy_only)
        self.levels_on = None if levels_on is None else jnp.asarray(np.asarray(levels_on, bool).reshape(1, 1, self.nlev), jnp.float32)
        # added to the network's output before the form, canonical (lev surface first, lat, lon) per target:
        # the correction is mean + form(m(x) + offset); -(the model's training mean) is a mean-residual
        # run's (mean + m - model mean), -mean a plain ml run's (m alone)
        self.offset = None if offset is None else [jnp.asarray(np.transpose(np.asarray(o, np.float32), (1, 2, 0))) for o in offset]
        self.time_mean_weight = float(time_mean_weight)
        self.p0 = gcm.p0_pa
        base = gcm._forcing(None, None)
        self._base = base
        self._value_and_grad = jax.jit(jax.value_and_grad(self._loss, has_aux=True))
        self._value = jax.jit(self._loss)

    # --------------------------------------------------------------- pieces traced by JAX
    def _features(self, ps_state: Any, cosz: Any) -> Any:
        import jax.numpy as jnp

        cols = self.nlat * self.nlon

        def column(a: Any) -> Any:  # jcm (lev top-first, lon, lat) -> (col, lev surface-first)
            return jnp.transpose(a[::-1], (2, 1, 0)).reshape(cols, self.nlev)

        fields = {"u": ps_state.u_wind, "v": ps_state.v_wind, "t": ps_state.temperature, "q": jnp.maximum(ps_state.specific_humidity, 0.0)}
        parts = [column(fields[k]) for k in self.columns.level_inputs]
        for _ in self.columns.surface_inputs:  # ps only (ColumnSpec checks)
            sp = jnp.reshape(ps_state.normalized_surface_pressure, (self.nlon, self.nlat)) * self.p0
            parts.append(jnp.transpose(sp).reshape(cols, 1))
        for k in self.columns.geo:
            parts.append((cosz if k == "cos_zenith" else self.geo_static[k]).reshape(cols, 1))
        return jnp.concatenate(parts, axis=1)

    def _correction(self, layers: Any, ps_state: Any, cosz: Any) -> list[Any]:
        import jax.numpy as jnp

        y = jax_forward(layers, self.act, self.consts, self._features(ps_state, cosz))
        out = []
        for i, m in enumerate(self.mean_jcm):  # (col, lev surface-first) -> jcm
            block = y[:, i * self.nlev:(i + 1) * self.nlev].reshape(self.nlat, self.nlon, self.nlev)
            if self.offset is not None:
                block = block + self.offset[i]
            if self.levels_on is not None:  # above top_hpa the mean alone (levels surface first, as presnivs)
                block = block * self.levels_on
            if self.eddy_only:  # the network's zonal mean per latitude row and level removed
                block = block - jnp.mean(block, axis=1, keepdims=True)
            out.append(m + jnp.transpose(block, (2, 1, 0))[::-1])
        return out

    def _loss(self, layers: Any, run_state: Any, xs: Mapping[str, Any]) -> Any:
        import jax
        import jax.numpy as jnp

        model = self.gcm.model
        wind = self._base.nudging_target
        names = ("du", "dv", "dt", "dq")

        def area_level_mean(err: Mapping[str, Any]) -> Any:  # the area-weighted level mean of err^2, per variable
            return jnp.stack([jnp.sum(self.area * jnp.mean(err[k] ** 2, axis=0)) for k in LOSS_VARIABLES])

        def window(carry: Any, x: Any) -> Any:
            (dyn, phys, tm, st), total = carry
            state = model.dycore.to_physics_state(dyn)
            corr = dict(zip(self.targets, self._correction(layers, state, x["cosz"])))
            extra = {f"{k}_extra": corr.get(k, getattr(wind, f"{k}_extra")) for k in names}
            forcing = self._base.copy(nudging_target=dataclasses.replace(wind, **extra))
            rs, _ = model.run_from_state_with_carry(initial_state=dyn, forcing=forcing, save_interval=self.gcm.window_hours / 24.0,
                                                    total_time=self.gcm.window_hours / 24.0, output_averages=True,
                                                    initial_physics_state=phys, initial_time=tm, initial_step=st)
            after = model.dycore.to_physics_state(rs.dynamics)
            got = {"u": after.u_wind, "v": after.v_wind, "t": after.temperature, "q": after.specific_humidity}
            err = {k: (got[k] - x[k]) / self.scale[k] for k in LOSS_VARIABLES}
            total = {k: total[k] + err[k] for k in LOSS_VARIABLES}  # the scaled error summed over windows
            return ((rs.dynamics, rs.physics, rs.time, rs.step), total), area_level_mean(err)

        carry = ((run_state.dynamics, run_state.physics, run_state.time, run_state.step), {k: jnp.zeros_like(xs[k][0]) for k in LOSS_VARIABLES})
        (_, total), losses = jax.lax.scan(jax.checkpoint(window), carry, xs)  # losses: (window, variable)
        per_window = jnp.mean(losses, axis=0)
        time_mean = area_level_mean({k: total[k] / self.windows for k in LOSS_VARIABLES})  # error of the rollout's time mean
        return jnp.mean(per_window) + self.time_mean_weight * jnp.mean(time_mean), (per_window, time_mean)

    # --------------------------------------------------------------- host side
    def inputs(self, t0: np.datetime64) -> tuple[Any, dict[str, Any]]:
        """The initial run state (the analysis at ``t0``) and the per-window analysis and zenith angle."""
        import jax.numpy as jnp

        from nudgeml.extract import cos_solar_zenith
        from nudgeml.simulate import state_at

        self.gcm.start_at(state_at(self.forcing, t0), t0)
        times = t0 + WINDOW * np.arange(1, self.windows + 1)
        a = self.forcing.sel(time=times.astype("datetime64[ns]"))
        xs = {k: jnp.asarray(a[k].values[:, ::-1].transpose(0, 1, 3, 2), jnp.float32) for k in LOSS_VARIABLES}
        starts = t0 + WINDOW * np.arange(self.windows)
        lat2d, lon2d = np.meshgrid(self.gcm.grid.lat_deg, self.gcm.grid.lon_deg, indexing="ij")
        xs["cosz"] = jnp.asarray(cos_solar_zenith(starts, lat2d.ravel(), lon2d.ravel()), jnp.float32)
        return self.gcm.model.run_state, xs

    def value_and_grad(self, layers: Any, t0: np.datetime64) -> tuple[RolloutLoss, Any]:
        rs, xs = self.inputs(t0)
        (v, parts), g = self._value_and_grad(layers, rs, xs)
        return RolloutLoss.of(v, *parts), g

    def value(self, layers: Any, t0: np.datetime64) -> float:
        return self.terms(layers, t0).total

    def terms(self, layers: Any, t0: np.datetime64) -> RolloutLoss:
        rs, xs = self.inputs(t0)
        v, parts = self._value(layers, rs, xs)
        return RolloutLoss.of(v, *parts)


def loss_scales(consts: Mapping[str, np.ndarray], feature_names: Sequence[str], nlev: int) -> dict[str, np.ndarray]:
    """Per variable and level (surface first), the offline model's feature standard deviation."""
    names = list(feature_names)
    out = {}
    for k in LOSS_VARIABLES:
        idx = [names.index(f"{k}_{i:03d}") for i in range(nlev)] if f"{k}_000" in names else None
        if idx is None:
            raise InputError(f"online training compares u, v, t, q with the analysis and scales them by the model's feature statistics: the model has no {k!r} input")
        s = np.asarray(consts["x_std"], np.float64)[idx]
        out[k] = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    return out


def train_online(cfg: Mapping[str, Any], name: str, *, grid_path: str | Path, forcing_paths: Sequence[str | Path], mean_file: str | Path,
                 init_trained: str | Path, store: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Train model ``name`` online and write ``trained.pt`` and ``train_summary.json`` in ``out_dir``."""
    import jax
    import optax

    from nudgeml.atomic import write_text_atomic
    from nudgeml.coupled import model_levels
    from nudgeml.extract import ColumnSpec, expand_names
    from nudgeml.grid import read_model_grid
    from nudgeml.mean_tendency import read_mean_tendency, split_blocks, training_blocks
    from nudgeml.models.common import load_trained, save_trained
    from nudgeml.regrid import open_forcing
    from nudgeml.simulate import check_same_grid, model_gcm, select_times

    t_start = time.perf_counter()
    key = f"models.{name}.online"
    s = OnlineSettings.from_config(cfg["models"][name]["online"], key)
    columns = ColumnSpec.from_config(cfg["columns"]) if "columns" in cfg else ColumnSpec()
    obj = load_trained(init_trained)
    if obj["kind"] != "mlp":
        raise InputError(f"{init_trained}: online training starts from an mlp, this is {obj['kind']!r}")
    grid = read_model_grid(grid_path)
    nlev = grid.sigma.size
    features = expand_names(columns.feature_blocks(nlev))
    n_targets = len(columns.targets) * nlev
    module, stage = first_module(obj, s, init_trained, key)
    consts = module_constants(module)
    if consts["x_mean"].size != len(features) or consts["y_std"].size != n_targets:
        raise InputError(f"{init_trained}: the model takes {consts['x_mean'].size} features and gives {consts['y_std'].size} outputs; "
                         f"the columns config makes {len(features)} and {n_targets}")
    mean = read_mean_tendency(mean_file)
    for k in columns.targets:
        if f"{k}_mean" not in mean:
            raise InputError(f"{mean_file}: no '{k}_mean' (the online model corrects {k!r} about its mean tendency)")
    train_blocks = training_blocks(store)
    starts = candidate_starts(train_blocks, s.windows)
    if starts.size == 0:
        raise ConfigError(f"config key '{key}.windows' ({s.windows}) is longer than every training block of {store}")
    val_starts = validation_starts(split_blocks(store, "val"), s.windows, s.validation_starts, key, store)
    gcm = model_gcm(cfg, starts[0])
    check_same_grid(gcm.grid, grid, grid_path)
    forcing = open_forcing(forcing_paths)
    every = np.unique(np.concatenate([t + WINDOW * np.arange(s.windows + 1) for t in np.concatenate([starts, val_starts])]))
    select_times(forcing, every, forcing_paths[0])  # every analysis used, or an error naming the file
    layers, act = network_of(module)
    levels_on = model_levels(grid.presnivs_pa, s.top_hpa) if s.top_hpa is not None else None
    roll = Rollouts(gcm, forcing, [mean[f"{k}_mean"].values for k in columns.targets], columns.targets, columns, consts, act, s.windows,
                    loss_scale=loss_scales(consts, features, nlev), eddy_only=s.eddy_only, levels_on=levels_on, time_mean_weight=s.time_mean_weight)
    params = jax.tree_util.tree_map(jax.numpy.asarray, [list(p) for p in layers])
    opt = optax.chain(optax.clip_by_global_norm(s.clip_norm), optax.adam(s.learning_rate))
    opt_state = opt.init(params)
    rng = np.random.default_rng(s.seed)

    def validate() -> float | None:
        if not val_starts.size:
            return None
        return float(np.mean([roll.value(params, t) for t in val_starts]))

    baseline_val = validate()
    log.info("online %s: %d training starts, %d validation starts, %d windows; validation loss of the mean: %s", name, starts.size,
             val_starts.size, s.windows, baseline_val)
    history: list[dict[str, Any]] = []
    best = (baseline_val, jax.tree_util.tree_map(np.asarray, params), 0)
    skipped = 0
    for step in range(1, s.steps + 1):
        t0 = starts[rng.integers(starts.size)]
        terms, grads = roll.value_and_grad(params, t0)
        loss = terms.total
        finite = np.isfinite(loss) and all(bool(np.isfinite(np.asarray(g)).all()) for g in jax.tree_util.tree_leaves(grads))
        if not finite:
            skipped += 1  # a rollout that blew up gives no usable gradient
            log.info("step %d (%s): non-finite loss or gradient, skipped", step, t0)
        else:
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        entry: dict[str, Any] = {"step": step, "start": str(t0), "loss": loss if np.isfinite(loss) else None}
        if s.time_mean_weight and np.isfinite(loss):  # the two terms apart (before the step's update)
            entry |= {"per_window": terms.per_window, "time_mean": terms.time_mean}
        if step % s.validate_every == 0 or step == s.steps:
            entry["validation"] = validate()
            if entry["validation"] is not None and (best[0] is None or entry["validation"] < best[0]):
                best = (entry["validation"], jax.tree_util.tree_map(np.asarray, params), step)
            log.info("step %d: loss %.4f, validation %s", step, loss, entry["validation"])
        history.append(entry)
    chosen = best if val_starts.size else (None, jax.tree_util.tree_map(np.asarray, params), s.steps)
    set_network(module, [tuple(p) for p in chosen[1]])
    summary = {
        "kind": "mlp",
        "online": asdict(s),
        "init": str(init_trained),
        "continues": None if stage is None else asdict(stage),  # the online settings the init (its file: "init") was trained with
        "windows": s.windows,
        "training_starts": int(starts.size),
        "validation_starts": [str(t) for t in val_starts],
        "validation_loss_mean": baseline_val,
        "validation_loss_best": chosen[0],
        "best_step": chosen[2],
        "skipped_steps": skipped,
        "history": history,
        "wall_s": time.perf_counter() - t_start,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_trained(out_dir / "trained.pt", "mlp", module, summary)
    write_text_atomic(out_dir / "train_summary.json", json.dumps(summary, indent=1) + "\n")
    log.info("online %s: best validation %s at step %d (mean baseline %s), %d skipped, %.0f s", name, chosen[0], chosen[2], baseline_val, skipped,
             summary["wall_s"])
    return summary


#: how a scored model's output is applied: the mean alone, mean + the model (``add_mean``), the mean
#: + the model's part about its mean over the training states (``mean_residual``), or the model alone
FORMS = ("mean", "add", "residual", "plain")
#: the keys of a free run that :class:`Rollouts` applies as the run does; a run with any other key is
#: refused by name rather than scored as something it is not (the guard's fallback is not rolled out)
ROLLED_OUT_KEYS = frozenset({"correction", "members", "ensemble", "climatology", "model", "backend", "mean_residual", "add_mean", "eddy_only",
                             "top_hpa", "bottom_hpa"})


@dataclass(frozen=True)
class ScoredForm:
    """One correction :func:`score_rollouts` rolls out: ``model`` (``-`` for the mean alone) applied in
    ``form`` (:data:`FORMS`), kept on the levels between ``top_hpa`` and ``bottom_hpa``, eddies only if
    ``eddy_only``, as :class:`nudgeml.coupled.MLCorrector` applies it."""

    label: str
    model: str
    form: str
    eddy_only: bool = False
    top_hpa: float | None = None
    bottom_hpa: float | None = None


def model_form(cfg: Mapping[str, Any], model: str, form: str) -> ScoredForm:
    """``NAME:FORM`` on the command line. A model trained online in a form (``online.eddy_only``,
    ``online.top_hpa``) is scored in that form: the only one its free runs may apply (check_online_config)."""
    if form not in FORMS:
        raise InputError(f"form {form!r} of model {model!r}: use one of {FORMS} (NAME:FORM)")
    if form == "mean":
        return ScoredForm("mean", "-", "mean")
    section = cfg.get("models", {}).get(model, {})
    if "online" not in section:
        return ScoredForm(f"{model}:{form}", model, form)
    s = OnlineSettings.from_config(section["online"], f"models.{model}.online")
    if form == "plain":  # as check_online_config refuses a free run of it without the mean
        raise InputError(f"form 'plain' of model {model!r}: it is trained online as a departure from the mean tendency; score it as {model}:add or {model}:residual")
    if s.in_form and form != "add":
        raise InputError(f"form {form!r} of model {model!r}: it is trained online as mean + m in the form "
                         f"{{'eddy_only': {s.eddy_only}, 'top_hpa': {s.top_hpa}}} (models.{model}.online); score it as {model}:add")
    return ScoredForm(f"{model}:{form}", model, form, eddy_only=s.eddy_only, top_hpa=s.top_hpa)


def run_form(cfg: Mapping[str, Any], run: str) -> ScoredForm:
    """The correction of free run ``run`` (a key of ``free_runs.runs``), as the run applies it."""
    runs = cfg["free_runs"]["runs"]
    if run not in runs:
        raise InputError(f"free run {run!r}: not in free_runs.runs ({sorted(runs)})")
    spec, key = runs[run], f"free_runs.runs.{run}"
    # keys that change nothing: the default scale, no iterations, a switch left off
    neutral = {"scale": 1, "iterations": 0}
    other = sorted(k for k, v in spec.items() if k not in ROLLED_OUT_KEYS and v is not False and v is not None and not (k in neutral and v == neutral[k]))
    if spec["correction"] == "none":
        other.append("correction: none")
    if spec.get("climatology", "annual") != "annual":
        other.append(f"climatology: {spec['climatology']}")
    if other:
        raise InputError(f"config key {key!r}: the rollout applies the annual mean and an ml model in the forms {FORMS} "
                         f"with eddy_only, top_hpa, bottom_hpa; not {other}")
    if spec["correction"] == "mean":
        return ScoredForm(run, "-", "mean")
    form = "add" if spec.get("add_mean") else "residual" if spec.get("mean_residual") else "plain"
    return ScoredForm(run, str(spec["model"]), form, eddy_only=bool(spec.get("eddy_only", False)),
                      top_hpa=float(spec["top_hpa"]) if "top_hpa" in spec else None, bottom_hpa=float(spec["bottom_hpa"]) if "bottom_hpa" in spec else None)


def score_rollouts(cfg: Mapping[str, Any], results: str | Path, forms: Sequence[ScoredForm], *, windows: int, n_starts: int,
                   split: str = "val") -> list[dict[str, Any]]:
    """The rollout loss (the one online training minimises) of each correction in ``forms`` from
    ``n_starts`` analyses spread over ``split``'s blocks, from a workflow's ``results`` folder. A
    ``model`` is a name in ``results/models``. Online training's validation loss, for any model or free
    run's correction: whether the short-range skill the training rewards goes with the free run's
    (``docs/science.md``)."""
    import jax.numpy as jnp

    from nudgeml.coupled import make_corrector, model_levels, training_states
    from nudgeml.extract import ColumnSpec, expand_names
    from nudgeml.grid import read_model_grid
    from nudgeml.mean_tendency import read_mean_tendency, split_blocks, training_blocks
    from nudgeml.models.common import load_trained
    from nudgeml.regrid import open_forcing
    from nudgeml.simulate import check_same_grid, model_gcm, select_times
    from nudgeml.split import spread

    for f in forms:
        if f.form not in FORMS:
            raise InputError(f"form {f.form!r} of {f.label!r}: use one of {FORMS}")
    if all(f.form == "mean" for f in forms):
        raise InputError("the mean alone needs one model of the same columns beside it (its normalisation scales the loss)")
    results = Path(results)
    for need in ("grid/model_grid.nc", "mean_tendency.nc", "datasets/nudging/dataset.zarr", "forcing"):
        if not (results / need).exists():
            raise InputError(f"{results / need}: not found (a results folder of the stand-in workflow, after its nudged run and shard)")
    store = results / "datasets" / "nudging" / "dataset.zarr"
    if n_starts < 1:
        raise InputError(f"--starts {n_starts}: at least one rollout start")
    blocks = split_blocks(store, split)
    if not blocks:
        raise InputError(f"{store}: the {split!r} split is empty")
    fitting = candidate_starts(blocks, windows)
    if not fitting.size:  # before any GCM work; validation_starts' message names a training key, not the command line's
        longest = max(int((b - a) // WINDOW) for a, b in blocks)
        raise InputError(f"--windows {windows}: no {windows}-window rollout fits in a block of the {split!r} split of {store} "
                         f"(the longest holds {longest}); use --windows {longest} or less, or another --split")
    columns = ColumnSpec.from_config(cfg["columns"]) if "columns" in cfg else ColumnSpec()
    grid = read_model_grid(results / "grid" / "model_grid.nc")
    nlev = grid.sigma.size
    names = expand_names(columns.feature_blocks(nlev))
    starts = spread(fitting, n_starts)
    forcing_paths = sorted((results / "forcing").glob("[0-9][0-9][0-9][0-9]-[0-9][0-9].nc"))
    forcing = open_forcing(forcing_paths)
    select_times(forcing, np.unique(np.concatenate([t + WINDOW * np.arange(windows + 1) for t in starts])), forcing_paths[0])
    mean_file = results / "mean_tendency.nc"
    mean_ds = read_mean_tendency(mean_file)
    mean = [mean_ds[f"{k}_mean"].values for k in columns.targets]
    gcm = model_gcm(cfg, starts[0])
    check_same_grid(gcm.grid, grid, results / "grid" / "model_grid.nc")
    out = []
    for f in forms:
        reference = f.model if f.form != "mean" else next(g.model for g in forms if g.form != "mean")
        module = load_trained(results / "models" / reference / "trained.pt")["module"].eval()
        if f.form == "mean":
            module = start_module(module)
        consts = module_constants(module)
        offset = None
        if f.form == "residual":  # the model's mean over the training states, as the free run takes it
            ml = make_corrector({"correction": "ml", "model": f.model}, columns=columns, grid=grid, mean_file=mean_file, model_dir=results / "models" / f.model)
            ml.add_mean_residual(mean, training_states(results / "nudged" / "histhf.nc", training_blocks(store)))
            offset = [-np.asarray(mm) for mm in ml.model_mean]
        elif f.form == "plain":  # the model alone: the mean taken off again
            offset = [-np.asarray(m) for m in mean]
        on = model_levels(grid.presnivs_pa, f.top_hpa, f.bottom_hpa) if f.top_hpa is not None or f.bottom_hpa is not None else None
        layers, act = network_of(module)
        roll = Rollouts(gcm, forcing, mean, columns.targets, columns, consts, act, windows, loss_scale=loss_scales(consts, names, nlev),
                        eddy_only=f.eddy_only, levels_on=None if on is None or on.all() else on, offset=offset)
        params = [tuple(map(jnp.asarray, p)) for p in layers]
        terms = [roll.terms(params, t) for t in starts]  # the per-window loss (the total: no time-mean weight) and the time-mean error
        applied = {k: v for k, v in (("eddy_only", f.eddy_only), ("top_hpa", f.top_hpa), ("bottom_hpa", f.bottom_hpa)) if v}
        out.append({"label": f.label, "model": f.model, "form": f.form, **applied, "loss": float(np.mean([t.per_window for t in terms])),
                    "time_mean": float(np.mean([t.time_mean for t in terms])), "per_start": [t.per_window for t in terms],
                    "per_variable": {k: float(np.mean([t.per_window_vars[k] for t in terms])) for k in LOSS_VARIABLES},
                    "time_mean_per_variable": {k: float(np.mean([t.time_mean_vars[k] for t in terms])) for k in LOSS_VARIABLES},
                    "starts": [str(t) for t in starts], "windows": windows})
        log.info("%s (%s%s): rollout loss %.5f, time-mean error %.5f", f.label, f.form, f", {applied}" if applied else "", out[-1]["loss"],
                 out[-1]["time_mean"])
    return out
