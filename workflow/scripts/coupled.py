from nudgeml.coupled import run_free
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]):
    run_free(snakemake.params.cfg, snakemake.wildcards.run, snakemake.input.grid, list(snakemake.input.forcing), snakemake.output.histhf)
