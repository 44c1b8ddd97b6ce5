from nudgeml.logs import rule_logging
from nudgeml.replay import run_replay

with rule_logging(snakemake.log[0]) as log:
    n = run_replay(snakemake.params.cfg, snakemake.input.grid, snakemake.input.histhf, snakemake.output.histhf, snakemake.output.guide)
    log.info("%d replay samples", n)
