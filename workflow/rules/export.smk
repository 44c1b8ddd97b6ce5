# Export: the trained model with its normalisation as TorchScript and .pt2, plus its manifest.
# model.pt2 (the AOTInductor package) is an output when export.aoti asks for it: an ML free run with
# `backend: aoti` reads it (checks.py refuses that backend without it).


rule export:
    input:
        trained=rules.train.output.trained,
        store=model_store,
    output:
        **({"aoti": f"{OUT}/models/{{model}}/model.pt2"} if config["export"]["aoti"] else {}),
        torchscript=f"{OUT}/models/{{model}}/model.pt",
        manifest=f"{OUT}/models/{{model}}/model.json",
    log:
        f"{OUT}/logs/export_{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/export_{{model}}.tsv"
    priority: ML_CHAIN_PRIORITY
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("export")
    resources:
        **res("export"),
    params:
        margin=config["export"]["margin"],
        aoti=config["export"]["aoti"],
        aoti_precision=config["export"]["aoti_precision"],
    script:
        "../scripts/export.py"
