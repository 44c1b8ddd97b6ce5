# Extract: run history (LMDZ conventions) -> column table (sample = column x time), per target kind:
# nudging (the nudged run's relaxation tendency), replay (initial-tendency targets, see replay.smk) or
# iter/{model}/k{k} (a corrected nudged run of iterative training: correction + residual, iterate.smk).
# The targets and the rules writing their histories: nudgeml.targets.TARGETS.
from nudgeml.targets import TARGETS, parse_iteration


def target_history(wildcards):
    iteration = parse_iteration(wildcards.target)
    if iteration is not None:
        return iter_run(*iteration)
    produced = getattr(rules, TARGETS[wildcards.target].rule).output
    return {"histhf": produced.histhf, "guide": produced.guide}


rule extract:
    input:
        unpack(target_history),
        grid=rules.model_grid.output.nc,
    output:
        columns=columns_path(OUT, "{target}"),
    params:
        columns=config["columns"],
    log:
        f"{OUT}/logs/extract_{{target}}.log",
    benchmark:
        f"{OUT}/benchmarks/extract_{{target}}.tsv"
    resources:
        **res("extract"),
    threads: threads_of("extract")
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/extract.py"
