from nudgeml.gcm.registry import BACKENDS
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]):
    make_grid = BACKENDS[snakemake.params.backend].runner("grid")
    make_grid(snakemake.params.cfg, dict(snakemake.input.items()), snakemake.output.nc, snakemake.output.cdo)
