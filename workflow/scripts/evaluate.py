from pathlib import Path

from nudgeml.evaluate import evaluate, format_r2, write_evaluation
from nudgeml.logs import rule_logging

with rule_logging(snakemake.log[0]) as log:
    result = evaluate(Path(snakemake.input.manifest).parent, snakemake.input.store, columns=snakemake.input.get("columns"))
    write_evaluation(result, snakemake.output.json, snakemake.output.png)
    log.info("\n%s", format_r2(result))
