# Initial-tendency (replay) targets: reference minus model physics wind tendency at the nudged states.


rule replay:
    input:
        grid=rules.model_grid.output.nc,
        histhf=rules.nudged.output.histhf,
    output:
        histhf=f"{OUT}/replay/histhf.nc",
        guide=f"{OUT}/replay/guide_ins.nc",
    params:
        # free_runs.start only: no replay state comes from the evaluation period
        cfg={**sections("period", "model", "dataset", "replay", "jax_cache_dir"), "free_runs": {"start": config["free_runs"]["start"]}},
    log:
        f"{OUT}/logs/replay.log",
    benchmark:
        f"{OUT}/benchmarks/replay.tsv"
    resources:
        **res("replay"),
    threads: threads_of("replay")
    conda:
        "../../envs/gcm.yaml"
    script:
        "../scripts/replay.py"
