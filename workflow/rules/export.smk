# Export: the trained model with its normalisation as TorchScript and .pt2, plus its manifest.


rule export:
    input:
        trained=rules.train.output.trained,
        store=model_store,
    output:
        torchscript=f"{OUT}/models/{{model}}/model.pt",
        manifest=f"{OUT}/models/{{model}}/model.json",
    params:
        margin=config["export"]["margin"],
        aoti=config["export"]["aoti"],
    log:
        f"{OUT}/logs/export_{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/export_{{model}}.tsv"
    resources:
        **res("export"),
    threads: threads_of("export")
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/export.py"
