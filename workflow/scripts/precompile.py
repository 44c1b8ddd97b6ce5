from nudgeml.gcm.registry import BACKENDS
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]):
    run = BACKENDS[snakemake.params.backend].runner("precompile")
    run(snakemake.params.cfg, dict(snakemake.input.items()), dict(snakemake.output.items()))
