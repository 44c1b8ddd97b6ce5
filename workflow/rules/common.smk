# Helpers only: paths, resources and cross-key checks shared by the rule files.
import re

from nudgeml.config import check_consistency, expand_path, months_between
from nudgeml.coupled import run_names

check_consistency(config)

OUT = expand_path(config["outdir"], "outdir")
MONTHS = months_between(config["period"]["start"], config["period"]["end"])
FREE_MONTHS = months_between(config["free_runs"]["start"], config["free_runs"]["end"])
RUNS = run_names(config["free_runs"]["runs"])  # every run and ensemble member
ERA5_DIR = expand_path(config["era5"].get("dir") or f"{OUT}/era5", "era5.dir")


wildcard_constraints:
    month=r"\d{4}-\d{2}",
    run="|".join(re.escape(r) for r in RUNS),
    model="|".join(sorted(config["models"])),
    target="nudging|replay",


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
    return f"{OUT}/datasets/{target}/dataset.zarr"


def model_store(wildcards):
    """The training store of a model: that of its target kind (nudging by default)."""
    return store_of(config["models"][wildcards.model].get("target", "nudging"))


def model_data(wildcards):
    """A model's data: its store (split, statistics, shuffled columns); a cnn also reads whole
    fields from the column table of its target."""
    section = config["models"][wildcards.model]
    target = section.get("target", "nudging")
    files = {"store": store_of(target)}
    if section["kind"] == "cnn":
        files["columns"] = f"{OUT}/columns/{target}/columns.nc"
    return files
