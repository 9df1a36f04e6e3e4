# Two commands for a fresh machine: `make demo` and `make test`.
# Everything is installed into .venv from requirements.lock (pinned, hashed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench lock clean node-deps

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/passerelle demo

test: $(STAMP) node-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Third-party HL7 client used by the interoperability tests (pinned in tests/peers/package-lock.json).
node-deps:
	@if command -v npm >/dev/null 2>&1 && [ -f tests/peers/package.json ]; then \
	  cd tests/peers && { [ -d node_modules ] || npm ci --silent --no-audit --no-fund; }; fi

lock:
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build *.egg-info src/*.egg-info
