# The evaluation report: every free run against the truth, as one self-contained HTML page.


# The nudged run's daily precipitation mapped onto the analysis' (days before the free runs only); the
# report applies it to every run alike (nudgeml.precip_mapping).
rule precip_mapping:
    input:
        nudged=rules.nudged.output.histhf,
        # the months up to the free runs' first: the fit reads no day after it
        precip=precip_files(m for m in MONTHS if m <= FREE_MONTHS[0]),
    output:
        nc=f"{OUT}/report/precip_mapping.nc",
    log:
        f"{OUT}/logs/precip_mapping.log",
    benchmark:
        f"{OUT}/benchmarks/precip_mapping.tsv"
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("report")
    resources:
        **res("report"),
    params:
        before=config["free_runs"]["start"],
        quantiles=config["report"].get("precip_mapping", {}).get("quantiles", 200),
    script:
        "../scripts/precip_mapping.py"


rule report:
    input:
        forcing=forcing_files(FREE_MONTHS),
        precip=precip_files(FREE_MONTHS),
        # the truth's whole period: the spread of independent window means, for the saturation check
        truth=forcing_files(MONTHS),
        truth_precip=precip_files(),
        nudged=rules.nudged.output.histhf,
        histhf=expand(f"{OUT}/free/{{run}}/histhf.nc", run=RUNS),
        status=expand(f"{OUT}/free/{{run}}/status.json", run=RUNS),
        offline=expand(rules.offline_eval.output.json, model=config["train"]["models"]),
        grid=rules.model_grid.output.nc,  # the land fraction: coasts on the maps
        # the months the baseline was computed from (only when a run uses it: a control-only
        # configuration needs no training store)
        mean=rules.mean_tendency.output.nc if USES_MEAN else [],
        mapping=rules.precip_mapping.output.nc if MAPS_PRECIP else [],
    output:
        html=report(f"{OUT}/report/index.html", caption="../report/index.rst", category="Report"),
        json=f"{OUT}/report/metrics.json",
        maps=report(f"{OUT}/report/bias_maps.png", caption="../report/bias_maps.rst", category="Free runs"),
        zonal=report(f"{OUT}/report/zonal_bias.png", caption="../report/zonal_bias.rst", category="Free runs"),
        precip=report(
            f"{OUT}/report/precip_distribution.png",
            caption="../report/precip_distribution.rst",
            category="Precipitation",
        ),
    log:
        f"{OUT}/logs/report.log",
    benchmark:
        f"{OUT}/benchmarks/report.tsv"
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("report")
    resources:
        **res("report"),
    params:
        runs=RUNS,
        ensembles=ENSEMBLES,
        models=config["train"]["models"],
        free_runs=config["free_runs"],
        report=config["report"],
        config=report_config(),  # printed in the report, less `resources`
    script:
        "../scripts/report.py"
