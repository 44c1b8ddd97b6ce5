# Forecast-error targets: (analysis - forecast) / lead from states spun up onto the analysis with a
# short relaxation time: the stand-in's in this job's process (nudgeml.forecast), LMDZ's from the job
# kit's spin-up run and forecast array (lmdz.forecast) run inside this rule's SLURM job.


rule forecast:
    input:
        unpack(forecast_inputs),
    output:
        histhf=f"{OUT}/forecast/histhf.nc",
        guide=f"{OUT}/forecast/guide_ins.nc",
        diagnostics=f"{OUT}/forecast/diagnostics.json",
    log:
        f"{OUT}/logs/forecast.log",
    benchmark:
        f"{OUT}/benchmarks/forecast.tsv"
    priority: ML_CHAIN_PRIORITY
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("forecast")
    resources:
        **gcm_res("forecast"),
    params:
        backend=config["backend"],
        cfg=forecast_params(),
    script:
        "../scripts/forecast.py"
