# Helpers only: paths and resources shared by the rule files.
import re

from nudgeml.config import expand_path, months_between
from nudgeml.coupled import run_names
from nudgeml.iterate import MEAN_CHAINS, chain_correction, chains, mean_chain
from nudgeml.models.registry import MODEL_KINDS
from nudgeml.targets import columns_path, iteration_target, store_path, target_of, target_pattern

OUT = expand_path(config["outdir"], "outdir")
MONTHS = months_between(config["period"]["start"], config["period"]["end"])
FREE_MONTHS = months_between(config["free_runs"]["start"], config["free_runs"]["end"])
RUNS = run_names(config["free_runs"]["runs"])  # every run and ensemble member
ERA5_DIR = expand_path(config["era5"].get("dir") or f"{OUT}/era5", "era5.dir")
CHAINS = chains(config)  # iterative training: chain -> iterations (empty unless asked for)


wildcard_constraints:
    month=r"\d{4}-\d{2}",
    run="|".join(re.escape(r) for r in RUNS),
    model="|".join(sorted(config["models"])),
    target=target_pattern(),
    chain="|".join(re.escape(c) for c in CHAINS) or "(?!)",  # (?!) matches nothing
    k=r"[0-9]+",


def res(rule_name):
    """mem_mb / runtime of a rule from config['resources'] (profiles map them to SLURM)."""
    r = config["resources"][rule_name]
    return {"mem_mb": r["mem_mb"], "runtime": r["runtime"]}


def threads_of(rule_name):
    return config["resources"][rule_name]["threads"]


def sections(*names):
    """The config sections a rule depends on (passed as params, so a change reruns the rule)."""
    return {n: config[n] for n in names if n in config}


def era5_files(kind, months=MONTHS):
    return [f"{ERA5_DIR}/{kind}/{m}.nc" for m in months]


def forcing_files(months=MONTHS):
    return [f"{OUT}/forcing/{m}.nc" for m in months]


def bias_check_json():
    return f"{OUT}/checks/bias_check.json"


def store_of(target):
    return store_path(OUT, target)


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


def iter_run(chain, k):
    """Outputs of the corrected nudged run of iteration ``k >= 1`` of ``chain``."""
    d = f"{OUT}/iter/{chain}/k{k}/nudged"
    return {"histhf": f"{d}/histhf.nc", "guide": f"{d}/guide_ins.nc", "correction": f"{d}/correction_ins.nc"}


def iter_mean(chain, k):
    """The mean correction after ``k`` iterations of a mean chain (0: the plain mean tendency)."""
    return f"{OUT}/mean_tendency.nc" if k == 0 else f"{OUT}/iter/{chain}/k{k}/mean_tendency.nc"


def iter_model_dir(model, k):
    """Exported model of iteration ``k`` of a chain, before its last (the last is models/{model})."""
    return f"{OUT}/models/{model}/k{k}"
