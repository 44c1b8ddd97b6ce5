# Train a model (wildcard {model}, kind mlp, xgboost or cnn) on the training store; a cnn reads
# whole fields from the column table, with the store's split and statistics.


rule train:
    input:
        unpack(model_data),
    output:
        trained=f"{OUT}/models/{{model}}/trained.pt",
        summary=f"{OUT}/models/{{model}}/train_summary.json",
    log:
        f"{OUT}/logs/train_{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_{{model}}.tsv"
    priority: ML_CHAIN_PRIORITY
    conda:
        "../../envs/nudgeml.yaml"
    envmodules:
        *gpu_envmodules(),
    threads: threads_of("train")
    resources:
        **res("train"),
    params:
        section=lambda w: config["models"][w.model],
    script:
        "../scripts/train.py"
