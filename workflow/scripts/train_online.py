from pathlib import Path

from nudgeml.logs import rule_logging
from nudgeml.online import train_online

with rule_logging(snakemake.log[0]):
    i = snakemake.input
    train_online(snakemake.params.cfg, snakemake.wildcards.model, grid_path=i.grid, forcing_paths=list(i.forcing), mean_file=i.mean,
                 init_trained=i.init, store=i.store, out_dir=Path(snakemake.output.trained).parent)
