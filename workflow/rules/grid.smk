# The model grid as files: NetCDF description (levels, orography, land fraction) + CDO grid text.


rule model_grid:
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
        cfg=model_grid_params(),
    script:
        "../scripts/grid.py"
