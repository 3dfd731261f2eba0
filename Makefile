# `make run` starts the platform, `make test` runs the tests; both set themselves up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format install clean bench audit

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "iolinker needs Python 3.11 or newer (set PYTHON=python3.X)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# A development run: code steps are isolated where the machine allows it, and run
# unconfined (saying so in their logs) where it does not; production keeps the
# default, which fails them there (README, "The code sandbox").
run: $(STAMP)
	$(PY) manage.py bootstrap
	IOLINKER_CODE_SANDBOX=$${IOLINKER_CODE_SANDBOX:-unisolated} exec $(PY) manage.py serve

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

# Needs wrk (apt-get install wrk), PostgreSQL and Redis on 127.0.0.1 (see docs/benchmarks.md).
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) bench/run.py --report $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

# Known vulnerabilities of the installed dependencies. A vulnerable dependency fails;
# dependencies that could not be looked up (the vulnerability database unreachable)
# are named in a warning, never reported as clean, and fail with
# IOLINKER_AUDIT_REQUIRED=1 (.ci/audit.py).
audit: $(STAMP)
	$(VENV)/bin/pip-audit --skip-editable --progress-spinner off -f json -o $(VENV)/audit.json
	$(PY) .ci/audit.py $(VENV)/audit.json

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
