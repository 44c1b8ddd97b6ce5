# Extract: run history (LMDZ conventions) -> column table (sample = column x time), per target kind:
# nudging (the nudged run's relaxation tendency), replay (initial-tendency targets, see replay.smk) or
# iter/{model}/k{k} (a corrected nudged run of iterative training: correction + residual, iterate.smk).
# The targets and the rules writing their histories: nudgeml.targets.TARGETS.


rule extract:
    input:
        unpack(target_history),
        grid=rules.model_grid.output.nc,
    output:
        columns=columns_path(OUT, "{target}"),
    log:
        f"{OUT}/logs/extract_{{target}}.log",
    benchmark:
        f"{OUT}/benchmarks/extract_{{target}}.tsv"
    priority: ML_CHAIN_PRIORITY
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("extract")
    resources:
        **res("extract"),
    params:
        columns=config["columns"],
    script:
        "../scripts/extract.py"
