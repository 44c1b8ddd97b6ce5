from pathlib import Path

from nudgeml.feedback import run_feedback
from nudgeml.logs import rule_logging
from nudgeml.mean_tendency import training_blocks

with rule_logging(snakemake.log[0]):
    i = snakemake.input
    run_feedback(snakemake.params.cfg, i.grid, list(i.forcing), mean_file=i.mean, training=training_blocks(i.store),
                 out_nc=snakemake.output.nc, out_json=snakemake.output.record,
                 model_dir=Path(i.manifest).parent if "manifest" in i.keys() else None, nudged_histhf=i.get("nudged"))
