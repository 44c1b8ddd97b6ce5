from pathlib import Path

from nudgeml.logs import rule_logging
from nudgeml.train import train_model

with rule_logging(snakemake.log[0]):
    train_model(snakemake.input.store, Path(snakemake.output.trained).parent, snakemake.wildcards.model, snakemake.params.section, columns=snakemake.input.get("columns"))
