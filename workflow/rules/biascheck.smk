# Bias check: RMSE of time-mean u, v, T of the nudged and free runs vs the truth, printed.


rule bias_check:
    input:
        forcing=forcing_files(),
        nudged=rules.nudged.output.histhf,
        free=expand(f"{OUT}/free/{{run}}/histhf.nc", run=RUNS),
    output:
        json=bias_check_json(),
    log:
        f"{OUT}/logs/bias_check.log",
    benchmark:
        f"{OUT}/benchmarks/bias_check.tsv"
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("bias_check")
    resources:
        **res("bias_check"),
    params:
        runs=RUNS,
    script:
        "../scripts/biascheck.py"
