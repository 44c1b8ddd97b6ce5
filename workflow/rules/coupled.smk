# The mean nudging tendency (the baseline) and the free runs, one per member of free_runs.runs ({run}).
from nudgeml.coupled import run_names, split_member


rule mean_tendency:
    input:
        guide=rules.nudged.output.guide,
        store=store_of("nudging"),
    output:
        nc=f"{OUT}/mean_tendency.nc",
    log:
        f"{OUT}/logs/mean_tendency.log",
    benchmark:
        f"{OUT}/benchmarks/mean_tendency.tsv"
    resources:
        **res("mean_tendency"),
    threads: threads_of("mean_tendency")
    conda:
        "../../envs/gcm.yaml"
    script:
        "../scripts/mean_tendency.py"


def free_run_spec(wildcards):
    return config["free_runs"]["runs"][split_member(wildcards.run)[0]]


def free_run_inputs(wildcards):
    spec = free_run_spec(wildcards)
    files = {"grid": rules.model_grid.output.nc, "forcing": forcing_files(FREE_MONTHS[:1])}
    if spec["correction"] in ("mean", "ml"):
        files["mean"] = rules.mean_tendency.output.nc
    if spec["correction"] == "mean" and spec.get("iterations", 0) > 0:
        files["mean"] = iter_mean(mean_chain(spec.get("climatology", "annual")), spec["iterations"])
    if spec.get("mean_residual"):
        files["nudged"] = rules.nudged.output.histhf
        files["store"] = store_of("nudging")
    if spec["correction"] == "ml":
        model = spec["model"]
        files["manifest"] = f"{OUT}/models/{model}/model.json"
        files["model"] = f"{OUT}/models/{model}/model.pt" if spec.get("backend", "torchscript") == "torchscript" else f"{OUT}/models/{model}/model.pt2"
    return files


rule free_run:
    input:
        unpack(free_run_inputs),
    output:
        histhf=f"{OUT}/free/{{run}}/histhf.nc",
        status=f"{OUT}/free/{{run}}/status.json",
    params:
        cfg=sections("free_runs", "model", "columns", "jax_cache_dir"),
    log:
        f"{OUT}/logs/free_{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/free_{{run}}.tsv"
    resources:
        **res("free_run"),
    threads: threads_of("free_run")
    conda:
        "../../envs/gcm.yaml"
    script:
        "../scripts/coupled.py"
