import numpy as np
import xarray as xr

from nudgeml.conventions import daily_totals_mm, read_histhf
from nudgeml.logs import rule_logging
from nudgeml.precip_mapping import fit_quantile_mapping, write_mapping
from nudgeml.report import daily_precip_from_history

with rule_logging(snakemake.log[0]) as log:
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    model = daily_precip_from_history(read_histhf(i.nudged)["precip"].load())
    tp = xr.open_mfdataset([str(f) for f in i.precip], combine="by_coords")["tp"]
    mapping = fit_quantile_mapping(
        model, daily_totals_mm(tp).load(), before=np.datetime64(p.before, "s"), quantiles=int(p.quantiles),
        model_path=i.nudged, analysis_path=", ".join(i.precip[:1]) + (" ..." if len(i.precip) > 1 else ""),
    )
    write_mapping(mapping, o.nc)
    log.info("quantile mapping fitted on %d days (%s - %s), %d quantiles per latitude row", mapping.n_days, mapping.first_day, mapping.last_day, mapping.levels.size)
    log.info("p99 level: nudged run %.2f -> analysis %.2f mm/day (row mean)", *(float(np.interp(0.99, mapping.levels, q)) for q in (mapping.model_mm.mean(0), mapping.analysis_mm.mean(0))))
