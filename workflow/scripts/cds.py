from nudgeml.cds import CdsSettings, fetch
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]):
    kind = snakemake.wildcards.get("kind", "invariant")
    month = snakemake.wildcards.get("month", snakemake.params.get("month"))
    fetch(kind, month, snakemake.output[0], plev_hpa=snakemake.params.pressure_levels_hpa,
          settings=CdsSettings.from_config({"cds": snakemake.params.cds}))
