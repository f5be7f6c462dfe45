# copgen: every target does its own setup (idempotent; fast when done).
PY := .venv/bin/python
export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-fast bench bench-gpu lint world check-reference train-bundled clean

setup:
	@bash infra/local/setup.sh

demo: setup
	$(PY) -m pipelines.cli demo --out out

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

world: setup
	$(PY) -m pipelines.cli world --out out/world

check-reference: setup
	$(PY) -m pipelines.cli check-reference ../shared/reference/copgen

train-bundled: setup
	$(PY) -m pipelines.cli train-bundled --out models/bundled

bench: setup
	$(PY) bench/run.py --json out/bench.json

bench-gpu: setup
	$(PY) bench/gpu.py

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy copgen_core transforms pipelines

clean:
	-bash infra/local/stac-api.sh stop; bash infra/local/gcs-emulator.sh stop || true
	rm -rf out .services
