#!/usr/bin/env bash
# GPU check: the whole test suite on CUDA, GPU training runs and the GPU benchmark,
# all written to one report. For a fresh machine with an NVIDIA GPU and no network
# where numpy, CuPy, PyTorch and JAX are preinstalled; the other packages come from
# ci/wheels (run ci/fetch-wheels.sh first, where there is network; the folder is
# git-ignored, so carry it along explicitly with the working tree).
#
#   bash ci/gpu.sh                       # writes docs/gpu-report.md (REPORT=path to change)
#   XBP_GPU_DRY_RUN=1 bash ci/gpu.sh     # the same steps on the CPU, to test the script
#                                        # (writes gpu-report.md, git-ignored)
#
# Budget: under 10 minutes in all; every step has its own time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=${XBP_GPU_DRY_RUN:-0}
# a dry run's report is a script test, not a result: it stays out of docs/
if [ "$DRY" = 1 ]; then REPORT=${REPORT:-gpu-report.md}; else REPORT=${REPORT:-docs/gpu-report.md}; fi
PY=${PYTHON:-python3}
start=$(date +%s)
status=0

section() { printf '\n## %s\n\n' "$1" >> "$REPORT"; }
run() {  # run LIMIT_SECONDS TITLE CMD...: output into the report as a code block
    local limit=$1 title=$2; shift 2
    section "$title"
    printf '```\n$ %s\n' "$*" >> "$REPORT"
    local t0=$(date +%s)
    timeout "$limit" "$@" >> "$REPORT" 2>&1
    local rc=$?
    printf '```\n(exit %s, %s s)\n' "$rc" "$(( $(date +%s) - t0 ))" >> "$REPORT"
    [ "$rc" -eq 0 ] || status=1
    return 0
}

: > "$REPORT"
{
  echo "# xbp GPU report"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- mode: $([ "$DRY" = 1 ] && echo 'dry run on the CPU (script test, no GPU numbers)' || echo GPU)"
} >> "$REPORT"

if [ "$DRY" = 1 ]; then
    GPU_BACKENDS="numpy,torch"; TORCH_DEV=cpu; CUPY=numpy
    REQUIRE="numpy,array_api_strict,torch,jax"
    CASES="mid"
    LARGE_N=4096
else
    GPU_BACKENDS="cupy,torch,jax"; TORCH_DEV=cuda; CUPY=cupy
    REQUIRE="numpy,array_api_strict,torch,jax,torch-cuda,cupy-cuda"
    CASES="gpu-large,large,mid"
    LARGE_N=200000
fi

run 30 "Device" bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"'
if [ -d ci/wheels ]; then
    run 120 "Install (offline, from ci/wheels)" "$PY" -m pip install -q --no-index --find-links ci/wheels --no-build-isolation -e ".[test]"
else
    run 120 "Install (no ci/wheels: using what is installed)" "$PY" -m pip install -q --no-deps --no-build-isolation -e .
fi
run 60 "Backends" "$PY" -m xbp backends
run 240 "Test suite (XBP_REQUIRE_BACKENDS=$REQUIRE)" env XBP_REQUIRE_BACKENDS="$REQUIRE" \
    XBP_HYPOTHESIS_EXAMPLES=50 "$PY" -m pytest -q -x -p no:cacheprovider -m "not slow" tests
run 60 "Digits on $CUPY" "$PY" -m xbp train --backend "$CUPY" --dtype float32 --quiet
run 60 "Digits on torch $TORCH_DEV, compiled" "$PY" -m xbp train --backend torch --device "$TORCH_DEV" --dtype float32 --quiet --compile auto
run 60 "Digits on torch $TORCH_DEV, eager" "$PY" -m xbp train --backend torch --device "$TORCH_DEV" --dtype float32 --quiet --compile off
run 90 "Digits on jax, compiled" "$PY" -m xbp train --backend jax --dtype float32 --quiet --compile on
# data parallelism over torch.distributed: NCCL sums CUDA buffers (torch directly, CuPy by
# DLPack), gloo the host sums; world size 1 everywhere, 2 ranks where there are 2 GPUs
if [ "$DRY" = 1 ]; then NGPU=0; else NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
TORCHRUN="$PY -m torch.distributed.run --standalone"
run 120 "torch.distributed, world size 1 ($([ "$DRY" = 1 ] && echo gloo || echo NCCL), torch $TORCH_DEV)" \
    $TORCHRUN --nproc_per_node 1 -m xbp train --distributed --timeout 60 --epochs 5 --backend torch \
    --device "$TORCH_DEV" --dtype float32 --quiet
run 120 "torch.distributed, world size 1, $CUPY arrays (DLPack into $([ "$DRY" = 1 ] && echo gloo || echo NCCL))" \
    $TORCHRUN --nproc_per_node 1 -m xbp train --distributed --timeout 60 --epochs 5 --backend "$CUPY" \
    --dtype float32 --quiet
if [ "${NGPU:-0}" -ge 2 ]; then
    run 180 "torch.distributed, 2 GPUs (NCCL, torch cuda, one GPU per rank from LOCAL_RANK)" \
        $TORCHRUN --nproc_per_node 2 -m xbp train --distributed --timeout 60 --epochs 5 --backend torch \
        --device cuda --dtype float32 --quiet
    run 180 "torch.distributed, 2 GPUs (NCCL, CuPy by DLPack)" \
        $TORCHRUN --nproc_per_node 2 -m xbp train --distributed --timeout 60 --epochs 5 --backend cupy \
        --dtype float32 --quiet
else
    section "torch.distributed, 2 GPUs"
    echo "skipped: ${NGPU:-0} GPU(s) here (needs 2)" >> "$REPORT"
fi
run 60 "Digits on numpy (the CPU reference)" "$PY" -m xbp train --backend numpy --dtype float32 --quiet
run 120 "Large synthetic problem ($LARGE_N x 784 blobs, 784-4096-4096-10, batch 4096)" "$PY" - "$GPU_BACKENDS" "$TORCH_DEV" "$LARGE_N" <<'PYEOF'
import sys, time
import xbp
backends, torch_dev, n = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
x, y = xbp.data.make_blobs(n, centers=10, n_features=784, spread=4.0, seed=0)
for name in backends:
    device = torch_dev if name == "torch" else None
    if name == "jax":
        import jax
        jax.config.update("jax_default_matmul_precision", "highest")  # IEEE float32, not TF32
    net = xbp.mlp([784, 4096, 4096, 10], activation="relu", loss="cross_entropy",
                  backend=name, device=device, dtype="float32", seed=0)
    t0 = time.perf_counter()
    hist = xbp.fit(net, x, y, epochs=2, batch_size=4096, optimizer=xbp.optim.sgd(0.01),
                   progress="lines")
    print(f"{name} {device or ''}: {time.perf_counter() - t0:.1f} s for 2 epochs, "
          f"accuracy {hist['accuracy'][-1]:.4f}")
PYEOF
run 180 "scikit-learn drop-in: xbp.sklearn.MLPClassifier on $GPU_BACKENDS ($LARGE_N x 784, 2 epochs) against scikit-learn on the CPU" \
    "$PY" scripts/bench_sklearn.py --large "$LARGE_N" --large-epochs 2 --backends "$GPU_BACKENDS" --device "$TORCH_DEV"
run 60 "Digits on torch $TORCH_DEV, bf16 mixed precision" "$PY" -m xbp train --backend torch --device "$TORCH_DEV" --dtype float32 --precision bf16 --quiet
run 90 "Step time per precision, torch $TORCH_DEV (large case; Adam, eager, median of 20)" \
    "$PY" scripts/bench_precision.py --backend torch --device "$TORCH_DEV" --tasks "" \
    --precisions exact,tf32,bf16,fp16 --repeat 20
[ "$DRY" = 1 ] || run 120 "Step time per precision, jax gpu (large case; Adam, eager, median of 20)" \
    "$PY" scripts/bench_precision.py --backend jax --device cuda --tasks "" \
    --precisions exact,tf32,bf16,fp16 --repeat 20
run 120 "Streamed memory map: pinned copies on a side stream, prefetched (vs the array in memory)" "$PY" - "$GPU_BACKENDS" "$TORCH_DEV" <<'PYEOF'
import os, sys, tempfile, time
import numpy as np
import xbp
backends, torch_dev = sys.argv[1].split(","), sys.argv[2]
x, y = xbp.data.make_blobs(60000, centers=10, n_features=784, spread=4.0, seed=0)
path = os.path.join(tempfile.mkdtemp(), "x.npy")
np.save(path, x.astype(np.float32))
xm, xa = np.load(path, mmap_mode="r"), np.load(path)
for name in [b for b in backends if b != "jax"]:
    device = torch_dev if name == "torch" else None
    nets, seconds = [], []
    for data in (xa, xm):
        net = xbp.mlp([784, 512, 512, 10], activation="relu", loss="cross_entropy",
                      backend=name, device=device, dtype="float32", seed=0)
        hist = xbp.fit(net, data, y, epochs=2, batch_size=256, compile=False, progress=False,
                       optimizer=xbp.optim.sgd(0.01))
        nets.append(net)
        seconds.append(hist["seconds"][-1])
    diff = max(float(np.max(np.abs(p[k] - q[k]))) for p, q in
               zip(nets[0].host_params(), nets[1].host_params()) for k in p)
    print(f"{name} {device or ''}: epoch in memory {seconds[0]:.2f} s, streamed {seconds[1]:.2f} s "
          f"(ratio {seconds[1] / seconds[0]:.2f}); max |weight difference| {diff:.1e}")
PYEOF
run 240 "Benchmark (cases $CASES)" "$PY" -m xbp bench --cases "$CASES" --backends "$GPU_BACKENDS" --json bench-gpu.json
section "Total"
echo "$(( $(date +%s) - start )) s, status $status" >> "$REPORT"
echo "wrote $REPORT ($(( $(date +%s) - start )) s, status $status)"
exit $status
