# Extract: nudged-run history (LMDZ conventions) -> column table (sample = column x time).


rule extract:
    input:
        histhf=rules.nudged.output.histhf,
        guide=rules.nudged.output.guide,
        grid=rules.model_grid.output.nc,
    output:
        columns=f"{OUT}/columns/columns.nc",
    params:
        columns=config["columns"],
    log:
        f"{OUT}/logs/extract.log",
    benchmark:
        f"{OUT}/benchmarks/extract.tsv"
    resources:
        **res("extract"),
    threads: threads_of("extract")
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/extract.py"
