# hw2 — two commands do all the set-up: `make report` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hw2-installed
KERNEL := hw2
# torch: by default the exact tested pins of constraints.txt. SYSTEM_TORCH=1 keeps the machine's
# own torch (a CUDA build in a container image or a cluster module): the venv sees the system's
# packages and pip leaves a torch within pyproject's range alone, e.g.
#   make report SYSTEM_TORCH=1 PYTHON=python3
SYSTEM_TORCH ?= 0
# A GPU box whose driver is older than the default wheel's CUDA (cu130: driver >= 580): take
# torch and torchvision — still the pinned versions — from a PyTorch index built for an older
# CUDA, everything else as usual, e.g. on a driver >= 525 (any CUDA 12):
#   make report TORCH_INDEX=https://download.pytorch.org/whl/cu126
# (remove .venv first when it was made with another torch)
TORCH_INDEX ?=
ifeq ($(SYSTEM_TORCH),1)
VENV_FLAGS := --system-site-packages
PINS       :=
else
VENV_FLAGS :=
PINS       := -c constraints.txt
endif

.PHONY: check-python venv test report lab lint bench gpu-check clean-reports

# The Python to build the venv from, checked before anything is made or installed.
check-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@if [ "$(SYSTEM_TORCH)" = 1 ]; then \
	  $(PYTHON) -c "import torch, torchvision" 2>/dev/null || { echo "error: SYSTEM_TORCH=1, but $(PYTHON) has no torch/torchvision to keep; set PYTHON to the python that has them, or drop SYSTEM_TORCH" >&2; exit 1; }; \
	  if [ -x $(PY) ] && ! grep -qs "include-system-site-packages = true" $(VENV)/pyvenv.cfg; then echo "error: $(VENV) was made without the system's packages; remove it (or set VENV=.venv-system) to use SYSTEM_TORCH=1" >&2; exit 1; fi; \
	fi

# (Re)install when the venv is missing or pyproject.toml / constraints.txt changed.
$(STAMP): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory check-python
	@test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet $(PINS) --index-url $(TORCH_INDEX) torch torchvision)
	$(PY) -m pip install --quiet $(PINS) -e '.[dev]'
	$(PY) -m ipykernel install --prefix $(VENV) --name $(KERNEL) --display-name "Python (hw2)" >/dev/null
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The whole study: profile `full` where CUDA is available, `quick` otherwise (the runner says which).
report: $(STAMP)
	$(VENV)/bin/hw2 report --profile auto

# As root (the usual user in GPU containers) Jupyter refuses to start without --allow-root.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks/

lint: $(STAMP)
	$(VENV)/bin/ruff check hw2lib tests bench notebooks

bench: $(STAMP)
	$(VENV)/bin/hw2 bench data
	$(VENV)/bin/hw2 bench train

# One call that measures the GPU path (meant for ≤ 10 min on one GPU; a tiny mode on a CPU):
# reports/doctor/doctor.json + doctor.md. Without the venv: PYTHONPATH=. python -m hw2lib.cli doctor
gpu-check: $(STAMP)
	$(VENV)/bin/hw2 doctor

clean-reports:
	rm -rf reports/smoke reports/quick reports/full
