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
    wildcard_constraints:
        model=OFFLINE_MODELS,
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


# Train a model online (models.<name>.online, nudgeml.online; stand-in only): mean + the network, fitted
# by the gradient of multi-day free runs from training-block analyses, started from an offline mlp.
# It writes what `train` writes, so `export` and the free runs take it as any model.
rule train_online:
    input:
        unpack(train_online_inputs),
    output:
        trained=f"{OUT}/models/{{model}}/trained.pt",
        summary=f"{OUT}/models/{{model}}/train_summary.json",
    log:
        f"{OUT}/logs/train_online_{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_online_{{model}}.tsv"
    wildcard_constraints:
        model=ONLINE_MODELS,
    priority: ML_CHAIN_PRIORITY
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("train_online")
    resources:
        **res("train_online"),
    params:
        cfg=train_online_params,
    script:
        "../scripts/train_online.py"
