from pathlib import Path

from nudgeml.export import export_trained
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]) as log:
    paths = export_trained(
        snakemake.input.trained,
        snakemake.input.store,
        Path(snakemake.output.manifest).parent,
        name=snakemake.wildcards.model,
        margin=snakemake.params.margin,
        aoti=snakemake.params.aoti,
        aoti_precision=snakemake.params.aoti_precision,
        threads=snakemake.threads,
    )
    log.info("exported %s", {k: str(v) for k, v in paths.items()})
