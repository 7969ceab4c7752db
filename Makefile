# Developer commands. `make setup` once after cloning, then `make test`.
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif

.PHONY: setup test test-lowest lint doc pre-commit build bench demo clean

setup:  ## create .venv with the library, the Lightning adapter and every dev tool
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-packages

test:  ## run the whole test suite (unit tests, doctests, README, docs pages, examples)
	$(UV) run pytest

demo:  ## the flagship experiment end to end: a widths x lrs grid by 5-fold CV, its table and plot
	$(UV) run python examples/compare_settings.py --plot compare_settings.png

# The floors pyproject.toml promises, tested: the core package and its extras at the lowest
# versions it allows (uv's lowest-direct resolution: torch 2.1.0, pandas 1.5.0, matplotlib
# 3.6.0, tensorboard 2.14.0, torchmetrics 1.0.0, tqdm 4.60.0) on the lowest Python (3.10, the
# machine's python3 where no 3.10 is installed).
# numpy is not ours to pin, but those releases were built against numpy 1.x and do not import
# with numpy 2, so it is held below 2 as any user of them must. Left out: Lightning (its own
# distribution), the docs/README/examples (they need the dev tools), and the live-plot tests,
# whose fake IPython module matplotlib 3.6 imports from.
PYTHON_LOWEST ?= $(or $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10.*/bin/python3.10)),python3)
LOWEST := $(UV) run --isolated --no-default-groups --extra all --resolution lowest-direct \
	--python $(PYTHON_LOWEST) --with "pytest>=8" --with "pytest-timeout>=2.3" --with "numpy>=1.24,<2"

test-lowest:  ## the core tests at the lowest versions pyproject.toml allows
	$(LOWEST) python -c "import sys, torch, pandas, matplotlib; print('python', sys.version.split()[0], 'torch', torch.__version__, 'pandas', pandas.__version__, 'matplotlib', matplotlib.__version__)"
	$(LOWEST) pytest -p no:cacheprovider -o addopts="--import-mode=importlib -ra" -m "not slow" \
		-k "not fit_stream" tests --ignore=tests/lightning --ignore=tests/test_lightning_examples.py \
		--ignore=tests/test_docs.py --ignore=tests/test_docs_outputs.py --ignore=tests/test_readme.py \
		--ignore=tests/test_examples.py \
		--ignore=tests/test_seed_examples.py --ignore=tests/test_live_plotting.py

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
	$(UV) run python benchmarks/bench_grid.py
	$(UV) run python benchmarks/bench_search.py

clean:
	rm -rf dist docs/_build .pytest_cache .mypy_cache .ruff_cache
