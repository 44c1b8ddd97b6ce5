from pathlib import Path

from nudgeml.era5 import generate_standin
from nudgeml.gcm.standin import enable_jax_compilation_cache
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]):
    cfg = snakemake.params.cfg
    enable_jax_compilation_cache(cfg.get("jax_cache_dir"))
    generate_standin(cfg, Path(snakemake.output.invariant).parent)
