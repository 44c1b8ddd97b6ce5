# LMDZ backend (production path, Jean Zay): the nudging files LMDZ reads, made by cdo from ERA5, and the
# SLURM job scripts of the guided and free runs. Active when the configuration has an `lmdz` block
# (LMDZ_* in common.smk).

if "lmdz" in config:

    rule lmdz_forcing:
        input:
            unpack(lmdz_forcing_inputs),
        output:
            **LMDZ_OUT,
        wildcard_constraints:
            lyear=r"\d{4}",
            lmonth=r"\d{2}",
        params:
            grid=LMDZ.get("grid", {"iim": 144, "jjm": 142}),
            method=config["regrid"]["method"],
        log:
            f"{OUT}/logs/lmdz_forcing_{{lyear}}{{lmonth}}.log",
        benchmark:
            f"{OUT}/benchmarks/lmdz_forcing_{{lyear}}{{lmonth}}.tsv"
        resources:
            **res("regrid"),
        threads: threads_of("regrid")
        conda:
            "../../envs/cdo.yaml"
        script:
            "../scripts/lmdz_forcing.py"

    rule lmdz_jobs:
        input:
            forcing=LMDZ_FORCING,
        output:
            directory(f"{OUT}/lmdz/jobs"),
        params:
            lmdz=LMDZ,
        log:
            f"{OUT}/logs/lmdz_jobs.log",
        benchmark:
            f"{OUT}/benchmarks/lmdz_jobs.tsv"
        resources:
            **res("lmdz_jobs"),
        threads: threads_of("lmdz_jobs")
        conda:
            "../../envs/gcm.yaml"
        script:
            "../scripts/lmdz_jobs.py"
