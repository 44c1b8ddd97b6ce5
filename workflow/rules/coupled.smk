# The mean nudging tendency (the baseline) and the free runs, one per member of free_runs.runs ({run}).


rule mean_tendency:
    input:
        guide=rules.nudged.output.guide,
        store=store_of("nudging"),
    output:
        nc=f"{OUT}/mean_tendency.nc",
    log:
        f"{OUT}/logs/mean_tendency.log",
    benchmark:
        f"{OUT}/benchmarks/mean_tendency.tsv"
    priority: ML_CHAIN_PRIORITY
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("mean_tendency")
    resources:
        **res("mean_tendency"),
    script:
        "../scripts/mean_tendency.py"


rule free_run:
    input:
        unpack(free_run_inputs),
    output:
        histhf=f"{OUT}/free/{{run}}/histhf.nc",
        status=f"{OUT}/free/{{run}}/status.json",
    log:
        f"{OUT}/logs/free_{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/free_{{run}}.tsv"
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("free_run")
    resources:
        **gcm_res("free_run"),
    params:
        backend=config["backend"],
        cfg=free_run_params,  # its own run's entry, not the other runs'
    script:
        "../scripts/coupled.py"
