# ERA5 stage. source: standin = a fine jcm run written as the CDS would serve ERA5;
# source: cds = the real ERA5 from the Copernicus Climate Data Store, one request (one job) per file,
# netCDF (.nc) or, with era5.cds.data_format: grib, ERA5's native GRIB (.grib).

if config["era5"]["source"] == "standin":

    rule era5_standin:
        output:
            pressure_levels=era5_files("pressure_levels"),
            single_levels=era5_files("single_levels"),
            precipitation=era5_files("precipitation"),
            invariant=f"{ERA5_DIR}/invariant.nc",
        log:
            f"{OUT}/logs/era5_standin.log",
        benchmark:
            f"{OUT}/benchmarks/era5_standin.tsv"
        conda:
            "../../envs/nudgeml.yaml"
        threads: threads_of("era5")
        resources:
            **res("era5"),
        params:
            cfg=era5_standin_params(),
        script:
            "../scripts/era5.py"

else:

    # Compute nodes have no internet: SLURM profiles send these jobs to a pre/post-processing
    # partition. cds_requests=1 lets a profile cap the requests queued at the CDS at once.
    rule era5_cds:
        output:
            f"{ERA5_DIR}/{{kind}}/{{month}}{ERA5_EXT}",
        log:
            f"{OUT}/logs/era5_cds_{{kind}}_{{month}}.log",
        benchmark:
            f"{OUT}/benchmarks/era5_cds_{{kind}}_{{month}}.tsv"
        wildcard_constraints:
            kind="pressure_levels|single_levels|precipitation",
        conda:
            "../../envs/nudgeml.yaml"
        threads: threads_of("era5_cds")
        resources:
            **res("era5_cds"),
            cds_requests=1,
        params:
            cds=config["era5"]["cds"],
            pressure_levels_hpa=cds_levels_hpa,  # pressure-level files only: a new level refetches no other file
        script:
            "../scripts/cds.py"

    rule era5_cds_invariant:
        output:
            f"{ERA5_DIR}/invariant{ERA5_EXT}",
        log:
            f"{OUT}/logs/era5_cds_invariant.log",
        benchmark:
            f"{OUT}/benchmarks/era5_cds_invariant.tsv"
        conda:
            "../../envs/nudgeml.yaml"
        threads: threads_of("era5_cds")
        resources:
            **res("era5_cds"),
            cds_requests=1,
        params:
            cds=config["era5"]["cds"],
            pressure_levels_hpa=[],  # a single-level file
            month=MONTHS[0],
        script:
            "../scripts/cds.py"
