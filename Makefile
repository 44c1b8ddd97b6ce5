# The two entry points of the README. Both set everything up first (scripts/setup.sh, idempotent).
SNAKEMAKE := .venv/bin/snakemake
PYTEST := .venv/bin/python -m pytest

.PHONY: setup run lint test bench clean

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

## bench: wall time of the embedded default on this machine (see benchmarks/)
bench: setup
	.venv/bin/python benchmarks/embedded_default.py

clean:
	rm -rf results .snakemake
