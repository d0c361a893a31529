#!/usr/bin/env bash
# Download the pure-Python wheels ci/gpu.sh needs into ci/wheels, on a machine with
# network access, before the working tree travels to an offline GPU machine
# (which already has numpy, CuPy, PyTorch and JAX).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p ci/wheels
python3 -m pip download -q --only-binary=:all: --dest ci/wheels \
    array-api-compat array-api-strict pytest hypothesis tqdm pluggy iniconfig packaging \
    attrs sortedcontainers exceptiongroup tomli typing-extensions
ls ci/wheels
