# The two entry points of the README. Both set everything up first (scripts/setup.sh, idempotent).
SNAKEMAKE := .venv/bin/snakemake
PYTEST := .venv/bin/python -m pytest

.PHONY: setup run lint test bench lmdze clean

setup:
	./scripts/setup.sh

## run: set up, then run the embedded default end to end (stand-in ERA5 -> ... -> bias check)
run: setup
	$(SNAKEMAKE) --cores all

## lint: the workflow linted (the embedded default, then the Jean Zay overlay, which runs the lmdz backend and
## adds the CDS and LMDZ rules; dummy $WORK/$SCRATCH, nothing is written), Snakemake files formatted, ruff
lint: setup
	$(SNAKEMAKE) --lint
	WORK=/nonexistent SCRATCH=/nonexistent $(SNAKEMAKE) --lint --configfile config/jeanzay.yaml
	.venv/bin/snakefmt --check .
	.venv/bin/ruff check .

## test: lint, set up (with the SLURM test cluster's packages), then run the whole test suite
test: lint
	./scripts/setup.sh --test
	$(PYTEST) -q

## lmdze: set up with LMDZE's system packages, build LMDZE (LMDZE_SOURCES=/path/to/checkouts, or
## LMDZE_BUILD=--clone where a network allows), run the workflow with backend lmdze (docs/lmdze.md)
lmdze:
	./scripts/setup.sh --lmdze
	./scripts/build_lmdze.sh $(LMDZE_BUILD)
	$(SNAKEMAKE) --cores all --configfile config/lmdze.yaml

## bench: wall time of the embedded default on this machine (see benchmarks/)
bench: setup
	.venv/bin/python benchmarks/embedded_default.py

clean:
	rm -rf results .snakemake
