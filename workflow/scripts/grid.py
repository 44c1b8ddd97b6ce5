from nudgeml.grid import model_grid_from_config, write_model_grid
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]):
    write_model_grid(model_grid_from_config(snakemake.params.cfg), snakemake.output.nc, snakemake.output.cdo)
