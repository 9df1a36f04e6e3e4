#!/bin/sh
# Builds the gateway's Python environment from the hashed locks, exactly as the Docker image ships it
# (docs/adr/0021-production-image-and-locks.md). The Dockerfile's build stage runs this script, and so
# does tests/integration/test_image_env.py, so the image's recipe is exercised where no container
# engine runs.
#
#   usage: docker/build-venv.sh SOURCE_DIR TARGET_VENV
#
# SOURCE_DIR holds pyproject.toml, README.md, src/ and requirements/{build,runtime}.lock. pip reads its
# index and CA bundle from the environment (PIP_INDEX_URL, PIP_CERT: the image's build arguments).
# The result holds the runtime lock and the passerelle wheel, nothing else: no pip, no build backend,
# no test or lint tool.
set -eu

src=$(cd "$1" && pwd)
target=$2
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. The build backend (pyproject [build-system]: setuptools, wheel) in a throw-away environment.
"$python" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$src/requirements/build.lock"

# 2. The passerelle wheel, built from a copy so the source tree stays untouched.
mkdir "$work/src"
cp -R "$src/pyproject.toml" "$src/README.md" "$src/src" "$work/src/"
"$work/tools/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$work/wheels" "$work/src"

# 3. The runtime environment, without pip: the runtime lock (hash-checked), then the wheel.
"$python" -m venv --without-pip "$target"
"$work/tools/bin/python" -m pip --python "$target/bin/python" install --quiet --require-hashes --no-deps \
  -r "$src/requirements/runtime.lock"
"$work/tools/bin/python" -m pip --python "$target/bin/python" install --quiet --no-deps --no-index \
  "$work"/wheels/passerelle-*.whl
