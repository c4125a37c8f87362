# hw2 — two commands do all the set-up: `make report` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hw2-installed
KERNEL := hw2

.PHONY: venv test report lab lint bench clean-reports

# (Re)install when the venv is missing or pyproject.toml changed.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
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

clean-reports:
	rm -rf reports/smoke reports/quick reports/full
