from nudgeml.logs import rule_logging
from nudgeml.nudged import run_nudged

with rule_logging(snakemake.log[0]):
    run_nudged(snakemake.params.cfg, snakemake.input.grid, list(snakemake.input.forcing), snakemake.output.histhf, snakemake.output.guide)
