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

run: $(STAMP)
	$(PY) manage.py bootstrap
	exec $(PY) manage.py serve

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

# Needs wrk (apt-get install wrk), PostgreSQL and Redis on 127.0.0.1 (see docs/benchmarks.md).
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) bench/run.py --report $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Known vulnerabilities of the installed dependencies (needs the vulnerability
# database online). --strict: a dependency it could not look up fails the audit too,
# so an unreachable database never reads as "no known vulnerabilities".
audit: $(STAMP)
	$(VENV)/bin/pip-audit --strict --skip-editable --progress-spinner off \
		|| { echo "pip-audit FAILED: a vulnerable dependency (upgrade it, or add --ignore-vuln ID here with the reason), or dependencies it could not audit (vulnerability database unreachable: nothing was checked)"; exit 1; }

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
