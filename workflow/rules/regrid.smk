# ERA5 (netCDF or GRIB) -> model grid and levels with cdo, one month per job.


rule regrid:
    input:
        pressure_levels=f"{ERA5_DIR}/pressure_levels/{{month}}{ERA5_EXT}",
        single_levels=f"{ERA5_DIR}/single_levels/{{month}}{ERA5_EXT}",
        precipitation=f"{ERA5_DIR}/precipitation/{{month}}{ERA5_EXT}",
        invariant=f"{ERA5_DIR}/invariant{ERA5_EXT}",
        grid=rules.model_grid.output.nc,
        grid_txt=rules.model_grid.output.cdo,
    output:
        state=f"{OUT}/forcing/{{month}}.nc",
        precip=f"{OUT}/forcing/precip_{{month}}.nc",
    log:
        f"{OUT}/logs/regrid_{{month}}.log",
    benchmark:
        f"{OUT}/benchmarks/regrid_{{month}}.tsv"
    priority: ML_CHAIN_PRIORITY
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("regrid")
    resources:
        **res("regrid"),
    params:
        method=config["regrid"]["method"],
        precip_method=config["regrid"]["precip_method"],
    script:
        "../scripts/regrid.py"
