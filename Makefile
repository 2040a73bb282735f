# Developer and CI entry points: `make test` is what CI runs (.ci/run), `make demo` the tour.
# Nothing here needs Docker: the tests bring up the local stack themselves (stream stack).

VENV := .venv
BIN := $(VENV)/bin
# The first Python 3.11+ that actually runs (pyenv shims exist for versions not enabled);
# override with `make PYTHON=/path/to/python3.12 venv`.
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; \
	done)

.PHONY: venv lint test demo stack-up stack-down bench

venv: $(VENV)/.installed

# Reinstalls only when pyproject.toml changes, so `make test` stays quick.
$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python 3.11+ found; pass PYTHON=..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

lint: venv
	$(BIN)/ruff check stream tests bench
	$(BIN)/mypy --strict stream

test: venv lint
	$(BIN)/pytest -q

demo: venv
	$(BIN)/stream demo

stack-up: venv
	$(BIN)/stream stack up

stack-down: venv
	$(BIN)/stream stack down

bench: venv
	$(BIN)/python -m bench
