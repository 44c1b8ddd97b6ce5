from pathlib import Path

from nudgeml.coupled import run_free
from nudgeml.logs import rule_logging
from nudgeml.mean_tendency import training_blocks

with rule_logging(snakemake.log[0]):
    i = snakemake.input
    run_free(
        snakemake.params.cfg,
        snakemake.wildcards.run,
        i.grid,
        list(i.forcing),
        snakemake.output.histhf,
        snakemake.output.status,
        mean_file=i.get("mean"),
        model_dir=Path(i.manifest).parent if "manifest" in i.keys() else None,
        nudged_histhf=i.get("nudged"),
        training=training_blocks(i.store) if "store" in i.keys() else None,
    )
