#!/usr/bin/env bash
# CPU CI: fresh virtual environment, every CPU backend, lint, types, tests.
# Usage: bash ci/cpu.sh   (VENV=/path overrides the environment's location)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$(mktemp -d)/venv}
start=$(date +%s)
python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# the CPU build of torch first: a plain 'torch' requirement would pull a CUDA build
python -m pip install -q torch==2.13.0
# cupy installs without a GPU; the tests check that xbp reports why it is unusable
python -m pip install -q -e '.[test,jax,plot,sklearn,mpi,tensorboard,docs]' cupy-cuda12x
echo "install: $(( $(date +%s) - start )) s"
ruff check xbp xbp_start tests scripts examples docs
ruff format --check xbp xbp_start tests scripts examples docs/*.py
mypy xbp xbp_start
export XBP_REQUIRE_BACKENDS=numpy,array_api_strict,torch,jax
# every test: the README's test command (`python -m pytest`, on every core) leaves out the
# tests marked slow; -m "" runs them too
python -m pytest -m ""
# the documentation site, warnings as errors (it executes the example gallery)
docs_start=$(date +%s)
rm -rf docs/_build docs/auto_examples docs/api/generated docs/sg_execution_times.rst
python -m sphinx -W --keep-going -q -b html docs docs/_build/html
echo "docs: $(( $(date +%s) - docs_start )) s"
echo "ci/cpu.sh total: $(( $(date +%s) - start )) s"
