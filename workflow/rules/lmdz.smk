# LMDZ backend (production path, Jean Zay): the nudging files LMDZ reads, made by cdo from ERA5, and the
# SLURM job scripts of the guided and free runs. Active when the configuration has an `lmdz` block
# (LMDZ_* in common.smk).

if "lmdz" in config:

    rule lmdz_forcing:
        input:
            unpack(lmdz_forcing_inputs),
        output:
            **LMDZ_OUT,
        log:
            f"{OUT}/logs/lmdz_forcing_{{lyear}}{{lmonth}}.log",
        benchmark:
            f"{OUT}/benchmarks/lmdz_forcing_{{lyear}}{{lmonth}}.tsv"
        wildcard_constraints:
            lyear=r"\d{4}",
            lmonth=r"\d{2}",
        conda:
            "../../envs/nudgeml.yaml"
        threads: threads_of("regrid")
        resources:
            **res("regrid"),
        params:
            grid=lmdz_grid_size(LMDZ),
            method=config["regrid"]["method"],
            invert_p=LMDZ["nudging"].get("invert_p", False),  # guide_invertp: the LEVEL order LMDZ expects
        script:
            "../scripts/lmdz_forcing.py"

    rule lmdz_jobs:
        input:
            forcing=LMDZ_FORCING,
        output:
            directory(f"{OUT}/lmdz/jobs"),
        log:
            f"{OUT}/logs/lmdz_jobs.log",
        benchmark:
            f"{OUT}/benchmarks/lmdz_jobs.tsv"
        conda:
            "../../envs/nudgeml.yaml"
        threads: threads_of("lmdz_jobs")
        resources:
            **res("lmdz_jobs"),
        params:
            lmdz=LMDZ,
            tau_hours=config["nudging"]["tau_hours"],  # LMDZ's unless lmdz.nudging.tau_hours overrides it
            forecast=config.get("forecast", {}),  # lmdz.forecast's spin-up tau and lead unless it sets them
        script:
            "../scripts/lmdz_jobs.py"
