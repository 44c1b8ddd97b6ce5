import sys

from nudgeml.biascheck import bias_check, format_table, write_bias_check
from nudgeml.logs import rule_logging

runs = {"nudged": snakemake.input.nudged}
runs.update(dict(zip(snakemake.params.runs, snakemake.input.free)))
with rule_logging(snakemake.log[0]):
    result = bias_check(list(snakemake.input.forcing), runs)
    write_bias_check(result, snakemake.output.json)
    table = format_table(result)
    print(table)
print(table, file=sys.stderr)
