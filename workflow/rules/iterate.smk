# Iterative training (nudgeml.iterate): nudged runs of the corrected model, one chain per iterated
# correction ({chain}: a model with models.<name>.iterations, or mean-annual / mean-monthly for free
# runs {correction: mean, iterations: N}) and iteration {k} >= 1:
#   ML:   nudged_iter k -> extract, shard (target iter/{model}/k{k}) -> train_iter, export_iter k
#         -> nudged_iter k+1 ...; the last iteration's model is trained by train/export into
#         models/{model}, which ml free runs use.
#   mean: nudged_iter k -> mean_tendency_iter k -> nudged_iter k+1 ...
# Nothing here runs unless iterations are asked for.


rule nudged_iter:
    input:
        unpack(nudged_iter_inputs),
    output:
        **iter_run("{chain}", "{k}"),
    log:
        f"{OUT}/logs/nudged_iter_{{chain}}_k{{k}}.log",
    benchmark:
        f"{OUT}/benchmarks/nudged_iter_{{chain}}_k{{k}}.tsv"
    wildcard_constraints:
        k=r"[1-9][0-9]*",
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("nudged")
    resources:
        **res("nudged"),  # the same run as `nudged` (same period), corrected: same needs
    params:
        cfg=sections("period", "model", "nudging", "columns", "jax_cache_dir"),
        correction=lambda w: chain_correction(w.chain, config["models"]),
    script:
        "../scripts/iterate.py"


rule mean_tendency_iter:
    input:
        guide=iter_run("{chain}", "{k}")["guide"],
        correction=iter_run("{chain}", "{k}")["correction"],
        store=store_of("nudging"),  # the training period
    output:
        nc=f"{OUT}/iter/{{chain}}/k{{k}}/mean_tendency.nc",
    log:
        f"{OUT}/logs/mean_tendency_iter_{{chain}}_k{{k}}.log",
    benchmark:
        f"{OUT}/benchmarks/mean_tendency_iter_{{chain}}_k{{k}}.tsv"
    wildcard_constraints:
        chain="|".join(MEAN_CHAINS),
        k=r"[1-9][0-9]*",
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("mean_tendency")
    resources:
        **res("mean_tendency"),
    script:
        "../scripts/mean_tendency.py"


rule train_iter:
    input:
        unpack(lambda w: iter_data(w.model, int(w.k))),
    output:
        trained=f"{OUT}/models/{{model}}/k{{k}}/trained.pt",
        summary=f"{OUT}/models/{{model}}/k{{k}}/train_summary.json",
    log:
        f"{OUT}/logs/train_{{model}}_k{{k}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_{{model}}_k{{k}}.tsv"
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


rule export_iter:
    input:
        trained=rules.train_iter.output.trained,
        store=lambda w: iter_data(w.model, int(w.k))["store"],
    output:
        torchscript=f"{OUT}/models/{{model}}/k{{k}}/model.pt",
        manifest=f"{OUT}/models/{{model}}/k{{k}}/model.json",
    log:
        f"{OUT}/logs/export_{{model}}_k{{k}}.log",
    benchmark:
        f"{OUT}/benchmarks/export_{{model}}_k{{k}}.tsv"
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("export")
    resources:
        **res("export"),
    params:
        margin=config["export"]["margin"],
        aoti=False,  # the corrected nudged run loads TorchScript; skip the slow AOTInductor compile
        aoti_precision="float32",
    script:
        "../scripts/export.py"
