# The model grid as files: NetCDF description (levels, orography, land fraction) + CDO grid text.


rule model_grid:
    output:
        nc=f"{OUT}/grid/model_grid.nc",
        cdo=f"{OUT}/grid/model_grid.txt",
    params:
        cfg=model_grid_params(),
    log:
        f"{OUT}/logs/model_grid.log",
    benchmark:
        f"{OUT}/benchmarks/model_grid.tsv"
    resources:
        **res("model_grid"),
    threads: threads_of("model_grid")
    conda:
        "../../envs/gcm.yaml"
    script:
        "../scripts/grid.py"
