from pathlib import Path

from nudgeml.grid import read_hybrid_levels, read_model_grid
from nudgeml.logs import rule_logging
from nudgeml.regrid import regrid_month

with rule_logging(snakemake.log[0]):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    regrid_month(
        pressure_levels=Path(i.pressure_levels),
        single_levels=Path(i.single_levels),
        precipitation=Path(i.precipitation),
        invariant=Path(i.invariant),
        grid=read_model_grid(i.grid),
        grid_txt=Path(i.grid_txt),
        out_state=Path(o.state),
        out_precip=Path(o.precip),
        method=p.method,
        precip_method=p.precip_method,
        threads=snakemake.threads,
        hybrid=read_hybrid_levels(i.grid),  # LMDZ's hybrid levels; None: sigma levels
    )
