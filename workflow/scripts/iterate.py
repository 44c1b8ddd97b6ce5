from pathlib import Path

from nudgeml.iterate import run_corrected_nudged
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]):
    i, o = snakemake.input, snakemake.output
    run_corrected_nudged(
        snakemake.params.cfg,
        snakemake.params.correction,
        i.grid,
        list(i.forcing),
        o.histhf,
        o.guide,
        o.correction,
        mean_file=i.mean,
        model_dir=Path(i.manifest).parent if "manifest" in i.keys() else None,
    )
