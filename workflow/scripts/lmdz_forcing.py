from pathlib import Path

from nudgeml.lmdz_forcing import write_lmdz_forcing
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]):
    i, p = snakemake.input, snakemake.params
    kinds = ("pressure_levels", "single_levels")
    write_lmdz_forcing(
        month_file={k: Path(i[k]) for k in kinds},
        next_month_file={k: Path(i[f"next_{k}"]) for k in kinds},
        out_paths={name: Path(path) for name, path in snakemake.output.items()},
        iim=int(p.grid["iim"]),
        jjm=int(p.grid["jjm"]),
        method=p.method,
        invert_p=bool(p.invert_p),
    )
