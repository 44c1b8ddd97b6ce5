# Bias check: RMSE of time-mean u, v, T of the nudged and free runs vs the truth, printed.


rule bias_check:
    input:
        forcing=forcing_files(),
        nudged=rules.nudged.output.histhf,
        free=expand(f"{OUT}/free/{{run}}/histhf.nc", run=RUNS),
    output:
        json=bias_check_json(),
    params:
        runs=RUNS,
    log:
        f"{OUT}/logs/bias_check.log",
    benchmark:
        f"{OUT}/benchmarks/bias_check.tsv"
    resources:
        **res("bias_check"),
    threads: threads_of("bias_check")
    conda:
        "../../envs/gcm.yaml"
    script:
        "../scripts/biascheck.py"
