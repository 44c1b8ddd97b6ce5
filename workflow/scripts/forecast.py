from nudgeml.forecast import run_forecast_targets
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]) as log:
    n = run_forecast_targets(snakemake.params.cfg, snakemake.input.grid, list(snakemake.input.forcing), snakemake.input.histhf,
                             snakemake.output.histhf, snakemake.output.guide, snakemake.output.diagnostics)
    log.info("%d forecast-error samples", n)
