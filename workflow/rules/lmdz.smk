# LMDZ backend (production path, Jean Zay): the nudging files LMDZ reads, made by cdo from ERA5, and the
# SLURM job scripts of the guided and free runs. Active when the configuration has an `lmdz` block.
import os

from nudgeml.lmdz_forcing import lmdz_grid, month_file_names

if "lmdz" in config:
    LMDZ = config["lmdz"]
    LMDZ_MONTHS = months_between(LMDZ["guided"]["start"], LMDZ["guided"]["end"])[:-1]  # end is exclusive
    LMDZ_VARS = LMDZ["nudging"].get("variables", ["u", "v"])
    LMDZ_PATTERN = LMDZ["nudging"].get("file_pattern", "{var}_{year:04d}{month:02d}.nc")
    LMDZ_DIR = os.path.expandvars(LMDZ["nudging"]["forcing_dir"])
    # the file pattern as Snakemake wildcards: {var} expanded, {year}/{month} -> {lyear}/{lmonth}
    LMDZ_OUT = {
        v: os.path.join(LMDZ_DIR, LMDZ_PATTERN.replace("{var}", v).replace("{year:04d}", "{lyear}").replace("{month:02d}", "{lmonth}"))
        for v in LMDZ_VARS
    }

    def lmdz_forcing_inputs(wildcards):
        month = f"{wildcards.lyear}-{wildcards.lmonth}"
        kinds = ("pressure_levels", "single_levels")
        files = {k: f"{ERA5_DIR}/{k}/{month}.nc" for k in kinds}
        i = MONTHS.index(month)
        if i + 1 < len(MONTHS):  # the next month's first analysis closes the month
            files.update({f"next_{k}": f"{ERA5_DIR}/{k}/{MONTHS[i + 1]}.nc" for k in kinds})
        return files

    rule lmdz_forcing:
        input:
            unpack(lmdz_forcing_inputs),
        output:
            **LMDZ_OUT,
        wildcard_constraints:
            lyear=r"\d{4}",
            lmonth=r"\d{2}",
        params:
            grid=lmdz_grid(LMDZ),
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
            forcing=[
                f
                for m in LMDZ_MONTHS
                for f in month_file_names(LMDZ_PATTERN, LMDZ_VARS, int(m[:4]), int(m[5:]), LMDZ_DIR).values()
            ],
        output:
            directory(f"{OUT}/lmdz/jobs"),
        params:
            lmdz=LMDZ,
            tau_hours=config["nudging"]["tau_hours"],  # LMDZ's unless lmdz.nudging.tau_hours overrides it
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
