import json

from nudgeml.extract import file_digest
from nudgeml.logs import rule_logging
from nudgeml.shard import ShardConfig, shard_columns

with rule_logging(snakemake.log[0]) as log:
    summary = shard_columns(
        snakemake.input.columns,
        snakemake.output.store,
        ShardConfig.from_config(snakemake.params.dataset, before=snakemake.params.free_runs_start),
        source_digest=file_digest([snakemake.input.columns]),
    )
    log.info("store written: %s", json.dumps({k: summary[k] for k in ("splits", "dropped_nonfinite")}))
