# Two commands for a fresh machine: `make demo` and `make test`.
# Everything is installed into .venv from requirements/dev.lock (pinned, hashed).
# Locks (docs/adr/0021-production-image-and-locks.md): requirements/runtime.lock is what the Docker image
# installs (pyproject `dependencies` only); requirements/dev.lock adds the `dev` extra (tests, linters);
# requirements/build.lock is the build backend (pyproject [build-system]) used to build the wheel.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_LOCK := requirements/dev.lock
RUNTIME_LOCK := requirements/runtime.lock
BUILD_LOCK := requirements/build.lock

.PHONY: venv demo test lint typecheck check bench lock clean node-deps

$(STAMP): $(DEV_LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/passerelle demo

test: $(STAMP) node-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docker
	$(BIN)/ruff format --check src tests benchmarks docker
	$(BIN)/hadolint --failure-threshold info Dockerfile
	$(BIN)/shellcheck docker/build-venv.sh .ci/run

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Third-party HL7 client used by the interoperability tests (pinned in tests/peers/package-lock.json).
node-deps:
	@if command -v npm >/dev/null 2>&1 && [ -f tests/peers/package.json ]; then \
	  cd tests/peers && { [ -d node_modules ] || npm ci --silent --no-audit --no-fund; }; fi

# Regenerates the three locks with uv (hashes for every published file). The existing pins are kept
# unless pyproject.toml asks otherwise (`make lock UV_ARGS=--upgrade` moves everything forward). The
# runtime and build locks are constrained by the dev lock, so tests run on exactly what the image ships.
UV_COMPILE = $(BIN)/uv pip compile --python-version 3.11 --generate-hashes --quiet $(UV_ARGS)
lock:
	$(BIN)/python -m pip install --quiet uv
	@mkdir -p requirements
	$(UV_COMPILE) pyproject.toml --extra dev -o $(DEV_LOCK)
	$(UV_COMPILE) pyproject.toml -c $(DEV_LOCK) -o $(RUNTIME_LOCK)
	$(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'], sep='\n')" \
	  | $(UV_COMPILE) - -c $(DEV_LOCK) -o $(BUILD_LOCK)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build *.egg-info src/*.egg-info
