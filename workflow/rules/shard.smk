# Shard: column table -> zarr v3 training store (sharded, compressed, pre-shuffled, split in time).


rule shard:
    input:
        columns=rules.extract.output.columns,
    output:
        store=directory(store_of("{target}")),
    params:
        dataset=config["dataset"],
    log:
        f"{OUT}/logs/shard_{{target}}.log",
    benchmark:
        f"{OUT}/benchmarks/shard_{{target}}.tsv"
    resources:
        **res("shard"),
    threads: threads_of("shard")
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/shard.py"
