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

# The whole suite twice: on SQLite, then on PostgreSQL (TIERD_TEST_STORAGE=postgresql: every
# test daemon gets a database of a throw-away server the tests start from Debian's binaries,
# see tierd/testing.py). The second pass leaves out what it would only repeat: tests of SQLite
# itself (marked sqlite_only: its file, locks, compact, backup), the browser tests (HTML, not
# storage) and the API fuzzer (its network namespace cannot reach the test server). Without
# PostgreSQL's binaries the second pass says so and is skipped; .ci/run installs them.
# Time, in fresh-clone CI runs on the 2-core machine: SQLite pass 11 min, PostgreSQL pass 14 min
# (the PostgreSQL pass costs about what the SQLite one does). The tests that touch no storage are quick: leaving them out saves
# little. Tests that start a PostgreSQL server of their own (modules *_pg.py, *_postgres.py,
# marked own_postgres: ~5 min) run once, in the PostgreSQL pass (in the SQLite pass when it
# is the only one).
# One backend: `make test BACKENDS=sqlite` (or postgresql); some tests: `make test ARGS=tests/core`.
BACKENDS ?= sqlite postgresql
ARGS ?=

test: install
	@status=0; \
	for backend in $(BACKENDS); do \
	    case $$backend in \
	    sqlite) \
	        echo "==> tests on SQLite"; \
	        only=; \
	        case " $(BACKENDS) " in *" postgresql "*) \
	            ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && only="not own_postgres";; \
	        esac; \
	        TIERD_TEST_STORAGE=sqlite $(BIN)/python -m pytest -q $${only:+-m "$$only"} $(ARGS) || status=1;; \
	    postgresql) \
	        if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	            echo "==> tests on PostgreSQL (a throw-away server; tests of SQLite itself left out)"; \
	            TIERD_TEST_STORAGE=postgresql $(BIN)/python -m pytest -q -m "not sqlite_only" $(ARGS) || status=1; \
	        else \
	            echo "==> tests on PostgreSQL SKIPPED: PostgreSQL is not installed here (no"; \
	            echo "    /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql, as .ci/run does)"; \
	        fi;; \
	    *) echo "unknown backend $$backend (BACKENDS: sqlite, postgresql)"; status=1;; \
	    esac; \
	done; \
	exit $$status

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
