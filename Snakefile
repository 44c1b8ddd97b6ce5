# nudgeml: learn an online bias correction for the LMDZ GCM from nudged runs, prove it on free runs.
# This file only loads and validates the configuration and includes one rule file per stage.

from snakemake.utils import min_version, validate

from nudgeml.checks import check_consistency
from nudgeml.config import SCHEMA_PATH, coerce_numbers, drop_switched_off, validate_config

min_version("9.0")


report: "workflow/report/workflow.rst"


configfile: "config/config.yaml"


coerce_numbers(config)  # nested --config values arrive as strings: numbers where the schema says number
drop_switched_off(config)  # an overlay (or --config) removes a free run or a model with `name: null`
validate_config(config)  # one line naming the offending key (Snakemake's own message dumps the schema)
validate(config, str(SCHEMA_PATH))  # the same schema, for the defaults it fills in
check_consistency(config)  # the rules across keys a schema cannot express


include: "workflow/rules/common.smk"
include: "workflow/rules/era5.smk"
include: "workflow/rules/grid.smk"
include: "workflow/rules/regrid.smk"
include: "workflow/rules/nudged.smk"
include: "workflow/rules/replay.smk"
include: "workflow/rules/forecast.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/shard.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/iterate.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/feedback.smk"
include: "workflow/rules/coupled.smk"
include: "workflow/rules/biascheck.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/lmdz.smk"


rule all:
    default_target: True
    input:
        bias_check_json(),
        rules.report.output.html,
