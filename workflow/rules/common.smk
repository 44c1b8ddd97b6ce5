# Helpers only: paths, resources, input functions and the params of each job, shared by the rule files.
#
# Params are what Snakemake compares with the last run of a job (rerun trigger `params`): each job gets
# only the configuration keys it reads, so editing one free run's settings reruns that run (and what
# consumes it), and editing `resources` (read by the scheduler, never by a job) reruns nothing.
import os
import re

from nudgeml.config import expand_path, months_between
from nudgeml.gcm.registry import backend_of, slurm_resources
from nudgeml.models.registry import MODEL_KINDS
from nudgeml.naming import (
    MEAN_CHAINS,
    chain_correction,
    chains,
    ensembles,
    era5_suffix,
    lmdz_grid_size,
    mean_chain,
    month_file_names,
    offline_root,
    run_names,
    split_member,
)
from nudgeml.targets import (
    TARGETS,
    columns_path,
    iteration_target,
    parse_iteration,
    store_path,
    target_of,
    target_pattern,
)

OUT = expand_path(config["outdir"], "outdir")
MONTHS = months_between(config["period"]["start"], config["period"]["end"])
FREE_MONTHS = months_between(config["free_runs"]["start"], config["free_runs"]["end"])
RUNS = run_names(config["free_runs"]["runs"])  # every run and ensemble member
ENSEMBLES = ensembles(
    config["free_runs"]["runs"], RUNS
)  # the report's ensembles; a bad `ensemble` key fails here, before any run
USES_MEAN = any(spec["correction"] in ("mean", "ml") for spec in config["free_runs"]["runs"].values())
# the report maps each run's precipitation onto the analysis' too (report.precip_mapping)
MAPS_PRECIP = (config["report"].get("precip_mapping") or {}).get("method", "none") != "none"
ERA5_DIR = expand_path(config["era5"].get("dir") or f"{OUT}/era5", "era5.dir")
ERA5_EXT = era5_suffix(config["era5"])  # .grib for era5.cds.data_format: grib, else .nc
CHAINS = chains(config)  # iterative training: chain -> iterations (empty unless asked for)
BACKEND = backend_of(config)  # the GCM the nudged and free_run jobs run (nudgeml.gcm.registry)
# the backend's programs compiled beside the truth run, where its jobs share a persistent cache to put them in
PRECOMPILE = bool(BACKEND.precompile and config.get("jax_cache_dir"))
# Scheduling: among ready jobs, those on the way from the truth to the ML free runs (regrid, nudged, replay, forecast,
# extract, shard, train, export, the mean tendency) go first, and the free runs that need only the
# forcing (control, mean) fill the other cores. Left to itself, Snakemake started the control members
# before the month the nudged run still needed, and the ML chain waited 3 min (benchmarks/README.md).
ML_CHAIN_PRIORITY = 10
# models trained online through the stand-in (by train_online) and the others (by train), so each
# model name has one producing job; "(?!)" matches nothing
ONLINE_MODELS = "|".join(re.escape(m) for m, s in config["models"].items() if "online" in s) or "(?!)"
OFFLINE_MODELS = "|".join(re.escape(m) for m, s in config["models"].items() if "online" not in s) or "(?!)"


wildcard_constraints:
    month=r"\d{4}-\d{2}",
    run="|".join(re.escape(r) for r in RUNS),
    model="|".join(sorted(config["models"])),
    target=target_pattern(),
    chain="|".join(re.escape(c) for c in CHAINS) or "(?!)",  # (?!) matches nothing
    k=r"[0-9]+",


# ------------------------------------------------------------------------------------------------
# Resources (read by the scheduler and the profiles, never passed to a job as params)
# ------------------------------------------------------------------------------------------------


def res(rule_name):
    """mem_mb / runtime of a rule from config['resources'] (profiles map them to SLURM)."""
    r = config["resources"][rule_name]
    return {"mem_mb": r["mem_mb"], "runtime": r["runtime"]}


def gcm_res(rule_name):
    """res() of a GCM run (nudged, free_run): for an MPI backend also its tasks, CPUs per task, nodes
    and mpi=srun, from the lmdz block (the backend decides how its job is launched, not the profile)."""
    return {**res(rule_name), **slurm_resources(config)}


def gpu_envmodules():
    """The modules a GPU job loads in itself (Snakemake's env-modules, on in the jeanzay profile):
    config envmodules.gpu.<kind>, the kind being the GPU the jeanzay profile asks for (NUDGEML_JZ_GPU,
    default v100): an A100/H100 node needs arch/a100 or arch/h100 before pytorch-gpu."""
    kinds = config.get("envmodules", {}).get("gpu", {})
    return kinds.get(os.environ.get("NUDGEML_JZ_GPU", "v100"), [])


def threads_of(rule_name):
    return config["resources"][rule_name]["threads"]


# ------------------------------------------------------------------------------------------------
# Params: the configuration keys one job reads
# ------------------------------------------------------------------------------------------------


def sections(*names):
    """Whole config sections a job reads (absent optional ones left out)."""
    return {n: config[n] for n in names if n in config}


def era5_standin_params():
    """The stand-in truth reads the period, the truth model (era5.standin) and the pressure levels it
    writes; era5.source/dir/cds choose whether and where it runs, not what it writes."""
    era5 = {k: config["era5"][k] for k in ("standin", "pressure_levels_hpa")}
    return {"period": config["period"], "era5": era5, **sections("jax_cache_dir")}


def model_grid_params():
    """The grid is the backend's: the stand-in's from its model (truncation, layers, physics; the GCM
    is built at period.start), LMDZ's from its reference files on the lmdz block's iim x jjm, LMDZE's
    from the start files its ce0l makes at period.start with the lmdze block (in its own folder)."""
    if BACKEND.grid_from == "lmdz_reference":
        return {"lmdz": {"grid": lmdz_grid_size(config["lmdz"])}}
    if BACKEND.grid_from == "lmdze_start":
        return {
            "period": {"start": config["period"]["start"]},
            **sections("lmdze"),
            "run_dir": f"{OUT}/lmdze/grid",
        }
    return {"period": {"start": config["period"]["start"]}, "model": config["model"]}


def model_grid_inputs(wildcards):
    """LMDZ's grid is read from the reference start.nc (coordinates, orography, levels) and
    startphy.nc (land fraction) its runs start from; LMDZE's from the start files ce0l makes from the
    ERA5 month holding period.start; the stand-in's grid reads no file."""
    if BACKEND.grid_from == "lmdz_reference":
        ref = expand_path(config["lmdz"]["reference_dir"], "lmdz.reference_dir")
        return {"start": f"{ref}/start.nc", "startphy": f"{ref}/startphy.nc"}
    if BACKEND.grid_from == "lmdze_start":  # the truth at period.start, which the guided run starts from too
        return {
            "pressure_levels": era5_files("pressure_levels", MONTHS[:1]),
            "single_levels": era5_files("single_levels", MONTHS[:1]),
            "invariant": f"{ERA5_DIR}/invariant{ERA5_EXT}",
        }
    return {}


def replay_params():
    """Replay reads the model, the reference physics, the sampling, the split it samples in and
    free_runs.start (no replay state from the evaluation period)."""
    return {
        "dataset": {"split": config["dataset"]["split"]},
        "free_runs": {"start": config["free_runs"]["start"]},
        **sections("period", "model", "replay", "jax_cache_dir"),
    }


def forecast_inputs(wildcards):
    """The forecast-error targets start from the guided run: the stand-in's from its states, with the
    regridded forcing; LMDZ's from the state its guided job keeps, with LMDZ's nudging files."""
    if BACKEND.forcing == "lmdz":
        return {"histhf": rules.nudged.output.histhf, "forcing": LMDZ_FORCING}
    return {"grid": rules.model_grid.output.nc, "histhf": rules.nudged.output.histhf, "forcing": forcing_files()}


def forecast_params():
    """The forecast-error targets read the model, the nudging's relaxation time and projection, the
    sampling, the split it samples in and free_runs.start (no sample from the evaluation period); on
    LMDZ the job kit's block (lmdz.forecast), the settings it defaults to and where it renders the kit."""
    if BACKEND.needs_lmdz_block:
        return {
            "lmdz": config["lmdz"],
            "tau_hours": config["nudging"]["tau_hours"],
            "forecast": config["forecast"],
            "kit_dir": f"{OUT}/lmdz/kit",
        }
    return {
        "dataset": {"split": config["dataset"]["split"]},
        "free_runs": {"start": config["free_runs"]["start"]},
        **sections("period", "model", "nudging", "forecast", "jax_cache_dir"),
    }


def nudged_params():
    """The guided run's keys: the stand-in's period/model/nudging; LMDZ's job kit block, the relaxation
    time it defaults to and where the job renders its run kit."""
    if BACKEND.needs_lmdz_block:
        return {"lmdz": config["lmdz"], "tau_hours": config["nudging"]["tau_hours"], "kit_dir": f"{OUT}/lmdz/kit"}
    if BACKEND.forcing == "era5":  # LMDZE: its grid and steps, the run directory its programs fill
        return {**sections("period", "nudging", "lmdze"), "run_dir": f"{OUT}/lmdze/guided"}
    return sections("period", "model", "nudging", "jax_cache_dir")


def free_run_params(wildcards):
    """What one free run (or member) reads: its own entry of free_runs.runs, the shared free_runs keys,
    the model and the JAX cache; the column layout only for an ML run (the others never call a model)
    and perturbation_k only for a member > 0 (member 0 is unperturbed)."""
    name, member = split_member(wildcards.run)
    free_runs = {k: v for k, v in config["free_runs"].items() if k not in ("runs", "perturbation_k")}
    if member > 0:
        free_runs["perturbation_k"] = config["free_runs"]["perturbation_k"]
    spec = config["free_runs"]["runs"][name]
    free_runs["runs"] = {name: spec}
    if BACKEND.needs_lmdz_block:  # LMDZ: its own run's entry, the kit block (a free run reads no forcing)
        return {
            "free_runs": free_runs,
            "lmdz": config["lmdz"],
            "tau_hours": config["nudging"]["tau_hours"],
            "kit_dir": f"{OUT}/lmdz/kit",
            # the mean residual's model mean is taken here, on the guided run's columns
            **(sections("columns") if spec.get("mean_residual") else {}),
        }
    if BACKEND.forcing == "era5":  # LMDZE: its grid and steps, the run directory its programs fill
        return {
            "free_runs": free_runs,
            **sections("lmdze"),
            "run_dir": f"{OUT}/lmdze/free/{wildcards.run}",
            **(sections("columns") if spec.get("mean_residual") else {}),
        }
    names = ("model", "jax_cache_dir") + (("columns",) if spec["correction"] == "ml" else ())
    return {"free_runs": free_runs, **sections(*names)}


def cds_levels_hpa(wildcards):
    """The pressure levels one CDS request asks for: those of era5 for a pressure-level file, none for the
    single-level files (the request and the download check read them for pressure levels only)."""
    return config["era5"]["pressure_levels_hpa"] if wildcards.kind == "pressure_levels" else []


def report_config():
    """The configuration the report prints (its "Configuration" section): everything but `resources`,
    which decide where and how long jobs run, not the results."""
    return {k: v for k, v in config.items() if k != "resources"}


# ------------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------------


def era5_files(kind, months=MONTHS):
    return [f"{ERA5_DIR}/{kind}/{m}{ERA5_EXT}" for m in months]


def forcing_files(months=MONTHS):
    return [f"{OUT}/forcing/{m}.nc" for m in months]


def precip_files(months=MONTHS):
    """The analysis' daily precipitation on the model grid, one file per month (rule regrid)."""
    return [f"{OUT}/forcing/precip_{m}.nc" for m in months]


def bias_check_json():
    return f"{OUT}/checks/bias_check.json"


def store_of(target):
    return store_path(OUT, target)


def iter_run(chain, k):
    """Outputs of the corrected nudged run of iteration ``k >= 1`` of ``chain``."""
    d = f"{OUT}/iter/{chain}/k{k}/nudged"
    return {
        "histhf": f"{d}/histhf.nc",
        "guide": f"{d}/guide_ins.nc",
        "correction": f"{d}/correction_ins.nc",
    }


def iter_mean(chain, k):
    """The mean correction after ``k`` iterations of a mean chain (0: the plain mean tendency)."""
    return f"{OUT}/mean_tendency.nc" if k == 0 else f"{OUT}/iter/{chain}/k{k}/mean_tendency.nc"


def iter_model_dir(model, k):
    """Exported model of iteration ``k`` of a chain, before its last (the last is models/{model})."""
    return f"{OUT}/models/{model}/k{k}"


# ------------------------------------------------------------------------------------------------
# Input functions
# ------------------------------------------------------------------------------------------------


def target_history(wildcards):
    """The run history and nudging (guide) files a target's column table is extracted from."""
    iteration = parse_iteration(wildcards.target)
    if iteration is not None:
        return iter_run(*iteration)
    produced = getattr(rules, TARGETS[wildcards.target].rule).output
    return {"histhf": produced.histhf, "guide": produced.guide}


def model_store(wildcards):
    """The training store of a model: that of its target kind (nudging by default), or that of its
    last iteration when it is trained iteratively."""
    return model_data(wildcards)["store"]


def model_data(wildcards):
    """A model's data: its store (split, statistics, shuffled columns) and, for a cnn, the column
    table the store was made from (whole fields); the last iteration's when trained iteratively."""
    return iter_data(wildcards.model, int(config["models"][wildcards.model].get("iterations", 0)))


def iter_data(model, k):
    """The data iteration ``k`` of a model trains on (``k`` = 0: the plain target of its section)."""
    section = config["models"][model]
    target = iteration_target(model, k) if k > 0 else target_of(section).name
    files = {"store": store_of(target)}
    if MODEL_KINDS[section["kind"]].reads_fields:
        files["columns"] = columns_path(OUT, target)
    return files


def nudged_iter_inputs(wildcards):
    k = int(wildcards.k)
    files = {"grid": rules.model_grid.output.nc, "forcing": forcing_files()}
    if wildcards.chain in MEAN_CHAINS:
        files["mean"] = iter_mean(wildcards.chain, k - 1)
    else:  # the previous iteration's model; the plain mean is its guard's fallback
        d = iter_model_dir(wildcards.chain, k - 1)
        files.update(
            mean=rules.mean_tendency.output.nc,
            manifest=f"{d}/model.json",
            model=f"{d}/model.pt",
        )
    return files


def nudged_inputs(wildcards):
    """The guided run reads the nudging files of its backend: the stand-in's regridded forcing, or
    LMDZ's (lmdz_forcing, on LMDZ's grid)."""
    if BACKEND.forcing == "lmdz":
        return {"forcing": LMDZ_FORCING}
    if BACKEND.forcing == "era5":  # LMDZE builds its start, boundary and nudging files from the truth
        return {
            "pressure_levels": era5_files("pressure_levels"),
            "single_levels": era5_files("single_levels"),
            "invariant": f"{ERA5_DIR}/invariant{ERA5_EXT}",
        }
    # the compiled windows: ancient, as the run only needs them there first (a recompiled cache changes no result)
    compiled = {"compiled": ancient(rules.precompile.output.record)} if PRECOMPILE else {}
    return {"grid": rules.model_grid.output.nc, "forcing": forcing_files(), **compiled}


def free_run_inputs(wildcards):
    name = split_member(wildcards.run)[0]
    if BACKEND.forcing == "lmdz":  # LMDZ starts from the guided run's restart at free_runs.start
        files = {"nudged": rules.nudged.output.histhf}
        if config["free_runs"]["runs"][name].get("mean_residual"):  # the model mean's columns
            files["grid"] = rules.model_grid.output.nc
    elif BACKEND.forcing == "era5":  # LMDZE starts from the truth at free_runs.start (its month's files)
        files = {
            "pressure_levels": era5_files("pressure_levels", FREE_MONTHS[:1]),
            "single_levels": era5_files("single_levels", FREE_MONTHS[:1]),
            "invariant": f"{ERA5_DIR}/invariant{ERA5_EXT}",
        }
        if config["free_runs"]["runs"][name].get("mean_residual"):  # the model mean's columns
            files["grid"] = rules.model_grid.output.nc
    else:
        files = {"grid": rules.model_grid.output.nc, "forcing": forcing_files(FREE_MONTHS[:1])}
    files.update(correction_inputs(name))
    if config["free_runs"]["runs"][name].get("calibrated"):
        files["gains"] = f"{OUT}/calibration/{name}/gains.json"
    return files


def correction_inputs(name):
    """What free run `name`'s correction reads: the mean tendency, the model, and for the mean residual
    the nudged run and the store that records the training blocks."""
    spec = config["free_runs"]["runs"][name]
    files = {}
    if spec["correction"] in ("mean", "ml"):
        files["mean"] = rules.mean_tendency.output.nc
    if spec["correction"] == "mean" and spec.get("iterations", 0) > 0:
        files["mean"] = iter_mean(mean_chain(spec.get("climatology", "annual")), spec["iterations"])
    if spec.get("feedback"):  # the mean tuned on free runs of the training period
        files["mean"] = rules.feedback_mean.output.nc
    if spec.get("mean_residual"):
        files["nudged"] = rules.nudged.output.histhf
        files["store"] = store_of("nudging")
    if spec["correction"] == "ml":
        d = f"{OUT}/models/{spec['model']}"
        files["manifest"] = f"{d}/model.json"
        aoti = spec.get("backend", "torchscript") != "torchscript"
        files["model"] = f"{d}/model.pt2" if aoti else f"{d}/model.pt"
    return files


def train_online_inputs(wildcards):
    """What online training reads: the grid, the analysis over every month, the mean tendency, the
    model it starts from (offline, or the online stage before it) and the store of its chain's offline
    model (its split's training and validation blocks)."""
    init = config["models"][wildcards.model]["online"]["init"]
    root = offline_root(config["models"], wildcards.model)
    return {
        "grid": rules.model_grid.output.nc,
        "forcing": forcing_files(),
        "mean": rules.mean_tendency.output.nc,
        "init": f"{OUT}/models/{init}/trained.pt",
        "store": iter_data(root, int(config["models"][root].get("iterations", 0)))["store"],
    }


def train_online_params(wildcards):
    """The online model's section, the GCM, the columns and the JAX cache."""
    return {
        "models": {wildcards.model: config["models"][wildcards.model]},
        **sections("model", "columns", "jax_cache_dir"),
    }


def calibrate_inputs(wildcards):
    """What a calibration reads: the free run's correction and the analysis over every month (its runs
    start in the training blocks)."""
    return {"grid": rules.model_grid.output.nc, "forcing": forcing_files(), **correction_inputs(wildcards.name)}


def feedback_inputs(wildcards):
    """What the feedback reads: the grid, the analysis over every month (its runs cover the training
    blocks), the mean tendency it tunes and the store that records the training blocks; with
    `feedback.run`, that run's model and the nudged run its mean residual is taken over (not its mean:
    that is this job's output)."""
    files = {
        "grid": rules.model_grid.output.nc,
        "forcing": forcing_files(),
        "mean": rules.mean_tendency.output.nc,
        "store": store_of("nudging"),
    }
    run = config.get("feedback", {}).get("run")
    if run:
        method = correction_inputs(run)
        files.update({k: method[k] for k in ("manifest", "model", "nudged") if k in method})
    return files


def feedback_params(wildcards):
    """The feedback settings, the free-run blow-up threshold, the model and the JAX cache; with
    `feedback.run`, that run's entry and the columns its model reads."""
    free_runs = {"max_wind_ms": config["free_runs"]["max_wind_ms"]}
    run = config.get("feedback", {}).get("run")
    if run:
        free_runs["runs"] = {run: config["free_runs"]["runs"][run]}
    return {"free_runs": free_runs, **sections("feedback", "model", *(["columns"] if run else []), "jax_cache_dir")}


def calibrate_params(wildcards):
    """The calibrated run's entry, the shared free_runs keys the runs read, the calibration settings,
    the model, the columns and the JAX cache."""
    free_runs = {"max_wind_ms": config["free_runs"]["max_wind_ms"]}
    free_runs["runs"] = {wildcards.name: config["free_runs"]["runs"][wildcards.name]}
    return {"free_runs": free_runs, **sections("calibration", "model", "columns", "jax_cache_dir")}


# ------------------------------------------------------------------------------------------------
# LMDZ backend (lmdz.smk): active when the configuration has an `lmdz` block
# ------------------------------------------------------------------------------------------------

if "lmdz" in config:
    LMDZ = config["lmdz"]
    # end is exclusive
    LMDZ_MONTHS = months_between(LMDZ["guided"]["start"], LMDZ["guided"]["end"])[:-1]
    LMDZ_VARS = LMDZ["nudging"].get("variables", ["u", "v"])
    LMDZ_PATTERN = LMDZ["nudging"].get("file_pattern", "{var}_{year:04d}{month:02d}.nc")
    LMDZ_DIR = os.path.expandvars(LMDZ["nudging"]["forcing_dir"])
    # the file pattern as Snakemake wildcards: {var} expanded, {year}/{month} -> {lyear}/{lmonth}
    LMDZ_OUT = {
        v: os.path.join(
            LMDZ_DIR,
            LMDZ_PATTERN.replace("{var}", v).replace("{year:04d}", "{lyear}").replace("{month:02d}", "{lmonth}"),
        )
        for v in LMDZ_VARS
    }
    LMDZ_FORCING = [
        f
        for m in LMDZ_MONTHS
        for f in month_file_names(LMDZ_PATTERN, LMDZ_VARS, int(m[:4]), int(m[5:]), LMDZ_DIR).values()
    ]


def lmdz_forcing_inputs(wildcards):
    month = f"{wildcards.lyear}-{wildcards.lmonth}"
    kinds = ("pressure_levels", "single_levels")
    files = {k: f"{ERA5_DIR}/{k}/{month}{ERA5_EXT}" for k in kinds}
    i = MONTHS.index(month)
    if i + 1 == len(MONTHS):  # LMDZ would hold the month's last record for its last 6 hours
        raise ValueError(
            f"LMDZ nudging files of {month}: the next month's first analysis is needed and "
            f"period.end ({config['period']['end']}) stops before it; end period at the next month's 00 UTC"
        )
    files.update({f"next_{k}": f"{ERA5_DIR}/{k}/{MONTHS[i + 1]}{ERA5_EXT}" for k in kinds})
    return files
