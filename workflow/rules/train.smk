# Train a column model (wildcard {model}, kind mlp or xgboost) on the training store.


rule train:
    input:
        store=model_store,
    output:
        trained=f"{OUT}/models/{{model}}/trained.pt",
        summary=f"{OUT}/models/{{model}}/train_summary.json",
    params:
        section=lambda w: config["models"][w.model],
    log:
        f"{OUT}/logs/train_{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_{{model}}.tsv"
    resources:
        **res("train"),
    threads: threads_of("train")
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/train.py"
