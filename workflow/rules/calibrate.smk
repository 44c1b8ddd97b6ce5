# Gains on an ML correction's state-dependent part, calibrated by ensemble Kalman inversion on free runs
# from the training period (nudgeml.calibrate; stand-in only): one job per calibrated free run ({name}).


rule calibrate:
    input:
        unpack(calibrate_inputs),
    output:
        gains=f"{OUT}/calibration/{{name}}/gains.json",
    log:
        f"{OUT}/logs/calibrate_{{name}}.log",
    benchmark:
        f"{OUT}/benchmarks/calibrate_{{name}}.tsv"
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("calibrate")
    resources:
        **res("calibrate"),
    params:
        cfg=calibrate_params,
    script:
        "../scripts/calibrate.py"
