from pathlib import Path

from nudgeml.calibrate import run_calibration
from nudgeml.logs import rule_logging
from nudgeml.mean_tendency import training_blocks

with rule_logging(snakemake.log[0]):
    i = snakemake.input
    run_calibration(snakemake.params.cfg, snakemake.wildcards.name, i.grid, list(i.forcing), mean_file=i.mean,
                    model_dir=Path(i.manifest).parent, nudged_histhf=i.nudged, training=training_blocks(i.store),
                    out_json=snakemake.output.gains)
