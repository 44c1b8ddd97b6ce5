# Initial-tendency (replay) targets: reference minus model physics wind tendency at the nudged states.


rule replay:
    input:
        grid=rules.model_grid.output.nc,
        histhf=rules.nudged.output.histhf,
    output:
        histhf=f"{OUT}/replay/histhf.nc",
        guide=f"{OUT}/replay/guide_ins.nc",
    params:
        cfg=replay_params(),
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
