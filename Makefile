# videohook — every install step lives here so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONPATH := handler:.

.PHONY: test lint types unit integration serve demo bench reliability callback-url redrive clean lock build sizes console-screenshot

# The development venv, from the dev lock only (every package pinned with its hash).
# Then the project itself, editable, for the `videohook` command (.venv/bin/videohook; docs/cli.md).
$(BIN)/.installed: requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Lock files (uv, with hashes) from the loose requirements*.in:
#   layer/requirements.txt  the Lambda runtime dependencies, python3.12 on arm64 (the layer);
#   requirements-dev.txt    the development set on python3.11, held to the runtime lock's versions.
# Keeps the versions already locked; `make lock UPGRADE=--upgrade` moves everything to the newest.
lock: $(BIN)/.installed
	$(BIN)/uv pip compile requirements.in --quiet $(UPGRADE) --generate-hashes --custom-compile-command "make lock" \
		--python-version 3.12 --python-platform aarch64-manylinux2014 -o layer/requirements.txt
	$(BIN)/uv pip compile requirements-dev.in --quiet $(UPGRADE) --generate-hashes --custom-compile-command "make lock" \
		--python-version 3.11 --universal -c layer/requirements.txt -o requirements-dev.txt

# `sam build`: the dependency layer (layer/, built once) and each function's own code (handler/).
# The SAM CLI lives in its own venv at a pinned version; sam needs python3.12 on PATH for the
# python3.12 runtime (found under pyenv when not on PATH).
SAM_CLI_VERSION := 1.170.0
SAM_VENV := .venv-sam
# A real python3.12 (pyenv's shim is skipped: it re-enters itself under sam's PATH).
PYTHON312 ?= $(or $(firstword $(foreach p,$(shell which -a python3.12 2>/dev/null),$(if $(findstring /shims/,$(p)),,$(p)))),$(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12))))
SAM_ENV := PATH="$(dir $(PYTHON312)):$$PATH" SAM_CLI_TELEMETRY=0

$(SAM_VENV)/bin/sam:
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	@$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check aws-sam-cli==$(SAM_CLI_VERSION) \
		|| { echo "make build: the SAM CLI (aws-sam-cli==$(SAM_CLI_VERSION)) could not be installed into $(SAM_VENV)/"; exit 2; }

build:
	@test -n "$(PYTHON312)" || { echo "make build: python3.12 is missing (sam build needs it for the python3.12 runtime; put it on PATH)"; exit 2; }
	@$(MAKE) --no-print-directory $(SAM_VENV)/bin/sam
	@test -x $(SAM_VENV)/bin/sam || { echo "make build: the SAM CLI is missing ($(SAM_VENV)/bin/sam)"; exit 2; }
	$(SAM_ENV) $(SAM_VENV)/bin/sam build --parallel

# What `sam build` made: unzipped size per function and layer.
sizes: build
	@du -sh .aws-sam/build/*/ | sed 's|.aws-sam/build/||'

# pytest exits 5 when a selection holds no test: not a failure here.
PYTEST = $(BIN)/pytest
NO_TESTS_OK = || test $$? -eq 5

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint template.yaml

# The type checker, strict on handler/ (configured in pyproject.toml).
types: $(BIN)/.installed
	$(BIN)/mypy

# In-process only (moto, servers on 127.0.0.1 in threads): no subprocess, under 60 s.
# Spread over the machine's cores (pytest-xdist): most of the time is moto building a stack per test.
unit: $(BIN)/.installed
	$(PYTEST) -m "not integration" -n auto $(NO_TESTS_OK)

# The local stack as subprocesses: tests/integration and tests/reliability at CI size.
integration: $(BIN)/.installed
	$(PYTEST) -m integration $(NO_TESTS_OK)

# What CI runs (.ci/run), in this order, stopping at the first failure.
test:
	$(MAKE) lint
	$(MAKE) types
	$(MAKE) unit
	$(MAKE) integration

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam

# The whole system on this machine, no AWS account or Docker (infra/local/serve.py).
serve: $(BIN)/.installed
	$(BIN)/python -m infra.local.serve

# The main job once, end to end, on the local stack with the bundled sample video.
demo: $(BIN)/.installed
	$(BIN)/python -m infra.local.demo

# Transfer throughput and peak RSS vs boto3 upload_fileobj on a moto server (not in the tests;
# bench/transfer_bench.py). BENCH_ARGS="--quick" for 256 MiB, "--help" for the rest.
bench: $(BIN)/.installed
	$(BIN)/python -m bench.transfer_bench $(BENCH_ARGS)

# The reliability scenarios at full size, against the local stack from the outside
# (tests/reliability; `make test` runs them at CI size). Prints a summary table per scenario.
reliability: $(BIN)/.installed
	$(BIN)/python -m tests.reliability

# The owner's `videohook` command (docs/cli.md) on a deployed stack (STACK=name [REGION=r]) or,
# without STACK, on the local stack of `make serve` (LOCAL_API, default http://127.0.0.1:3000).
LOCAL_API ?= http://127.0.0.1:$(or $(API_PORT),3000)
VIDEOHOOK_TARGET = $(if $(STACK),--stack "$(STACK)" $(if $(REGION),--region "$(REGION)"),--local "$(LOCAL_API)")

callback-url: $(BIN)/.installed
	@$(BIN)/videohook callback-url $(VIDEOHOOK_TARGET)

redrive: $(BIN)/.installed
	@$(BIN)/videohook redrive $(VIDEOHOOK_TARGET)

# The console's picture in docs/ (shown in the README), taken by headless chromium from a local
# stack with a few tasks (infra/local/browser.py). Needs `chromium` (apt-get install chromium).
console-screenshot: $(BIN)/.installed
	$(BIN)/python -m infra.local.browser docs/console.png
