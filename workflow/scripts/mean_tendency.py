from nudgeml.logs import rule_logging
from nudgeml.mean_tendency import mean_tendency, training_period, write_mean_tendency

with rule_logging(snakemake.log[0]) as log:
    start, end = training_period(snakemake.input.store)
    log.info("mean nudging tendency over the training period %s - %s", start, end)
    correction = snakemake.input.get("correction")  # an iterated mean: previous mean + mean residual
    write_mean_tendency(mean_tendency(snakemake.input.guide, start, end, correction=correction), snakemake.output.nc)
