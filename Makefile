# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install bench clean

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

bench: install
	$(BIN)/python bench/events.py

clean:
	rm -rf $(VENV) var build *.egg-info
