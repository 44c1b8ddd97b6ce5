# ERA5 stage. source: standin = a fine jcm run written as the CDS would serve ERA5.


rule era5_standin:
    output:
        pressure_levels=era5_files("pressure_levels"),
        single_levels=era5_files("single_levels"),
        precipitation=era5_files("precipitation"),
        invariant=f"{ERA5_DIR}/invariant.nc",
    params:
        cfg=sections("period", "era5", "jax_cache_dir"),
    log:
        f"{OUT}/logs/era5_standin.log",
    benchmark:
        f"{OUT}/benchmarks/era5_standin.tsv"
    resources:
        **res("era5"),
    threads: threads_of("era5")
    conda:
        "../../envs/gcm.yaml"
    script:
        "../scripts/era5.py"
