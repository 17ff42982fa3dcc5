# videohook — every install step lives here so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONPATH := handler:.

.PHONY: test lint types unit integration serve demo bench reliability callback-url redrive clean

$(BIN)/.installed: requirements.txt requirements-dev.txt handler/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

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
	rm -rf $(VENV) .aws-sam

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
.PHONY: console-screenshot
console-screenshot: $(BIN)/.installed
	$(BIN)/python -m infra.local.browser docs/console.png
