# Two commands do everything on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= cpu

.PHONY: run test setup model lint unit notebooks bench clean strip

# The virtual environment, installed from the exact pins in constraints.txt. Re-runs only when
# constraints.txt or pyproject.toml change (the stamp is newer otherwise).
$(STAMP): constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[notebooks,dev]"
	touch $(STAMP)

setup: $(STAMP)

model: setup
	$(PY) -m llamalab fetch-model

# Every notebook in the cpu profile; executed copies and artifacts in runs/cpu/.
run: model
	$(PY) -m llamalab notebooks --profile $(PROFILE)

lint: setup
	$(PY) -m ruff check .

unit: model
	$(PY) -m pytest -q tests

notebooks: model
	LLAMALAB_PROFILE=smoke $(PY) -m pytest -q --nbmake --nbmake-timeout=1200 notebooks

test: lint unit notebooks

bench: model
	$(PY) -m llamalab bench generate
	$(PY) -m llamalab bench probes

strip: setup
	$(PY) -m nbstripout --keep-id notebooks/*.ipynb

clean:
	rm -rf runs .pytest_cache .ruff_cache
