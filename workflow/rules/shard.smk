# Shard: column table -> zarr v3 training store (sharded, compressed, pre-shuffled, split in time).


rule shard:
    input:
        columns=rules.extract.output.columns,
    output:
        store=directory(store_of("{target}")),
    log:
        f"{OUT}/logs/shard_{{target}}.log",
    benchmark:
        f"{OUT}/benchmarks/shard_{{target}}.tsv"
    priority: ML_CHAIN_PRIORITY
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("shard")
    resources:
        **res("shard"),
    params:
        dataset=config["dataset"],
        free_runs_start=config["free_runs"]["start"],  # no sample of any split from the evaluation period
    script:
        "../scripts/shard.py"
