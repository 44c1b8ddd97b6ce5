from pathlib import Path

from nudgeml.lmdz import LmdzJobConfig, forecast_cost, render_jobs
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]) as log:
    cfg = LmdzJobConfig.from_dict(snakemake.params.lmdz, tau_hours=snakemake.params.tau_hours, forecast=snakemake.params.forecast)
    paths = render_jobs(cfg, Path(snakemake.output[0]))
    log.info("rendered %d files under %s", len(paths), snakemake.output[0])
    if cfg.forecast is not None:
        log.info("forecast targets (forecast/cost.json): %s", forecast_cost(cfg))
