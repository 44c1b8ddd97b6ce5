# The mean tendency tuned on free runs of the training period (nudgeml.feedback; stand-in only): one job,
# read by every free run with `feedback: true`.


rule feedback_mean:
    input:
        unpack(feedback_inputs),
    output:
        nc=f"{OUT}/feedback/mean_tendency.nc",
        record=f"{OUT}/feedback/feedback.json",
    log:
        f"{OUT}/logs/feedback_mean.log",
    benchmark:
        f"{OUT}/benchmarks/feedback_mean.tsv"
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("feedback_mean")
    resources:
        **res("feedback_mean"),
    params:
        cfg=feedback_params,
    script:
        "../scripts/feedback.py"
