# Developer commands. `make setup` once after cloning, then `make test`.
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif

.PHONY: setup test lint doc pre-commit build bench clean

setup:  ## create .venv with the library, the Lightning adapter and every dev tool
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-packages

test:  ## run the whole test suite (unit tests, doctests, README, docs pages, examples)
	$(UV) run pytest

lint:  ## ruff (lint + format check) and mypy --strict
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

doc:  ## build the Sphinx site into docs/_build/html, warnings are errors
	$(UV) run sphinx-build -W --keep-going -b html docs docs/_build/html

pre-commit:  ## run every pre-commit hook on every file
	$(UV) run pre-commit run --all-files

build:  ## sdist and wheel of fitstream and fitstream-lightning into dist/
	$(UV) build --all-packages

bench:  ## print the speed benchmarks' tables
	$(UV) run python benchmarks/bench_epoch_stream.py
	$(UV) run python benchmarks/bench_fit_stream.py
	$(UV) run python benchmarks/bench_ensemble.py

clean:
	rm -rf dist docs/_build .pytest_cache .mypy_cache .ruff_cache
