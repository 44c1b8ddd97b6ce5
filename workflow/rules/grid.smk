# The model grid as files: NetCDF description (levels, orography, land fraction) + CDO grid text.
# The backend's grid (nudgeml.gcm.registry): the stand-in's, LMDZ's physics grid from its reference files, or
# LMDZE's from the start files its ce0l makes from the truth at period.start.


rule model_grid:
    input:
        unpack(model_grid_inputs),
    output:
        nc=f"{OUT}/grid/model_grid.nc",
        cdo=f"{OUT}/grid/model_grid.txt",
    log:
        f"{OUT}/logs/model_grid.log",
    benchmark:
        f"{OUT}/benchmarks/model_grid.tsv"
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("model_grid")
    resources:
        **res("model_grid"),
    params:
        backend=config["backend"],
        cfg=model_grid_params(),
    script:
        "../scripts/grid.py"
