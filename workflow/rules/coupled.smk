# Free runs, one per entry of free_runs.runs (wildcard {run}).


rule free_run:
    input:
        grid=rules.model_grid.output.nc,
        forcing=forcing_files(FREE_MONTHS[:1]),
    output:
        histhf=f"{OUT}/free/{{run}}/histhf.nc",
    params:
        cfg=sections("free_runs", "model", "jax_cache_dir"),
    log:
        f"{OUT}/logs/free_{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/free_{{run}}.tsv"
    resources:
        **res("free_run"),
    threads: threads_of("free_run")
    conda:
        "../../envs/gcm.yaml"
    script:
        "../scripts/coupled.py"
