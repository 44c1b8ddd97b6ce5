from nudgeml.extract import ColumnSpec, column_dataset, write_columns
from nudgeml.logs import rule_logging
from nudgeml.memory import fix_mmap_threshold

with rule_logging(snakemake.log[0]):
    fix_mmap_threshold()  # resident memory bounded over the whole run (nudgeml.memory)
    spec = ColumnSpec.from_config(snakemake.params.columns)
    ds = column_dataset(snakemake.input.histhf, snakemake.input.guide, snakemake.input.grid, spec, correction=snakemake.input.get("correction"))
    write_columns(ds, snakemake.output.columns)
