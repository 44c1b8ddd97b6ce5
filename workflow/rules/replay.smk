# Initial-tendency (replay) targets: reference minus model physics wind tendency at the nudged states.


rule replay:
    input:
        grid=rules.model_grid.output.nc,
        histhf=rules.nudged.output.histhf,
    output:
        histhf=f"{OUT}/replay/histhf.nc",
        guide=f"{OUT}/replay/guide_ins.nc",
    log:
        f"{OUT}/logs/replay.log",
    benchmark:
        f"{OUT}/benchmarks/replay.tsv"
    priority: ML_CHAIN_PRIORITY
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("replay")
    resources:
        **res("replay"),
    params:
        cfg=replay_params(),
    script:
        "../scripts/replay.py"
