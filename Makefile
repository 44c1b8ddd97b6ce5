# The two entry points of the README. Both set everything up first (scripts/setup.sh, idempotent).
SNAKEMAKE := .venv/bin/snakemake
PYTEST := .venv/bin/python -m pytest

.PHONY: setup run test bench clean

setup:
	./scripts/setup.sh

## run: set up, then run the embedded default end to end (stand-in ERA5 -> ... -> bias check)
run: setup
	$(SNAKEMAKE) --cores all

## test: set up (with the SLURM test cluster's packages), then run the whole test suite
test:
	./scripts/setup.sh --test
	$(PYTEST) -q

## bench: wall time of the embedded default on this machine (see benchmarks/)
bench: setup
	.venv/bin/python benchmarks/embedded_default.py

clean:
	rm -rf results .snakemake
