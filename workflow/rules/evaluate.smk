# Offline evaluation of an exported model on the test split (MSE, R^2 per level and variable).


rule offline_eval:
    input:
        unpack(model_data),
        manifest=rules.export.output.manifest,
        torchscript=rules.export.output.torchscript,
    output:
        json=f"{OUT}/models/{{model}}/offline.json",
        png=report(
            f"{OUT}/models/{{model}}/r2_by_level.png", caption="../report/r2_by_level.rst", category="Offline skill"
        ),
    log:
        f"{OUT}/logs/offline_eval_{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/offline_eval_{{model}}.tsv"
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("offline_eval")
    resources:
        **res("offline_eval"),
    script:
        "../scripts/evaluate.py"
