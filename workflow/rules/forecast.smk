# Forecast-error targets: (analysis - forecast) / lead from the nudged states, spun up onto the
# analysis with a short relaxation time (nudgeml.forecast; stand-in only).


rule forecast:
    input:
        grid=rules.model_grid.output.nc,
        histhf=rules.nudged.output.histhf,
        forcing=forcing_files(),
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
        **res("forecast"),
    params:
        cfg=forecast_params(),
    script:
        "../scripts/forecast.py"
