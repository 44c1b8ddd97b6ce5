# Nudged run: the model relaxed toward ERA5 u, v; its relaxation tendency is the training target.


rule nudged:
    input:
        grid=rules.model_grid.output.nc,
        forcing=forcing_files(),
    output:
        histhf=f"{OUT}/nudged/histhf.nc",
        guide=f"{OUT}/nudged/guide_ins.nc",
    log:
        f"{OUT}/logs/nudged.log",
    benchmark:
        f"{OUT}/benchmarks/nudged.tsv"
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("nudged")
    resources:
        **res("nudged"),
    params:
        cfg=sections("period", "model", "nudging", "jax_cache_dir"),
    script:
        "../scripts/nudged.py"
