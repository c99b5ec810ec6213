# Two commands for a fresh Debian/Ubuntu machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup run test test-all bench bad-input-table

# Debian's chromium: the browser tests/test_report_html.py renders report.html in (headless; no browser is
# downloaded by a Python package).
CHROMIUM := /usr/bin/chromium

setup: $(VENV)/.installed $(FMNIST) $(CHROMIUM)

$(FMNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision first, pinned: on these machines the wheels come from local disk (see README).
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test,slurm]'
	touch $@

# IPC 1 under the standard `dsa` protocol (1000 epochs x 5 networks, VICO-UoE/DatasetCondensation main_DM.py), which
# fits in a few minutes on 2 cores; the shipped reference table (ddbench/data/reference/) holds random real under the
# same evaluation, so the run ends with random real at equal count. (IPC 10 under `dsa` costs ~15-30 min here:
# docs/evaluation.md#the-standard-table.)
run: setup
	$(BIN)/ddbench run --method minmax-diffusion --ipc 1 --protocol dsa --reference random

test: setup
	$(BIN)/pytest -q -m "not slow"

test-all: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_eval.py

# docs/bad-input.md: every bad-input class of tests/bad_inputs.py, run, with its exit code and message.
bad-input-table: setup
	{ sed '/^| input |/,$$d' docs/bad-input.md; $(BIN)/python tests/bad_inputs.py; } > docs/bad-input.md.new
	mv docs/bad-input.md.new docs/bad-input.md
