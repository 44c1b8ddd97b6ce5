from pathlib import Path

from nudgeml.lmdz import LmdzJobConfig, render_jobs
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]) as log:
    paths = render_jobs(LmdzJobConfig.from_dict(snakemake.params.lmdz, tau_hours=snakemake.params.tau_hours), Path(snakemake.output[0]))
    log.info("rendered %d files under %s", len(paths), snakemake.output[0])
