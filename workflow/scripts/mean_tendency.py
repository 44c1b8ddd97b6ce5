from nudgeml.logs import rule_logging
from nudgeml.mean_tendency import mean_tendency, training_blocks, write_mean_tendency

with rule_logging(snakemake.log[0]) as log:
    blocks = training_blocks(snakemake.input.store)
    log.info("mean nudging tendency over the training split: %d block(s), %s - %s", len(blocks), blocks[0][0], blocks[-1][1])
    correction = snakemake.input.get("correction")  # an iterated mean: previous mean + mean residual
    write_mean_tendency(mean_tendency(snakemake.input.guide, blocks, correction=correction), snakemake.output.nc)
