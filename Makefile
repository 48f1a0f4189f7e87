# The two commands of the quick start: `make run` and `make test`; `make check` lints,
# checks the formatting and the types (configured in pyproject.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINTED := tierd tests bench examples

.PHONY: run test check install bench clean

$(BIN)/tierd: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/tierd

install: $(BIN)/tierd

run: install
	$(BIN)/tierd run

test: install
	$(BIN)/python -m pytest -q

# Every check runs even when one fails, so one pass shows everything to fix; one line a
# problem (run ruff without --output-format for each one's context).
check: install
	@status=0; \
	$(BIN)/ruff check --output-format concise $(LINTED) || status=1; \
	$(BIN)/ruff format --check --output-format concise $(LINTED) || status=1; \
	$(BIN)/mypy || status=1; \
	exit $$status

bench: install
	$(BIN)/python bench/events.py

clean:
	rm -rf $(VENV) var build *.egg-info
