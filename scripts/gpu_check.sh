#!/usr/bin/env bash
# The CUDA checks, in one call on a lent NVIDIA machine (its image: CUDA PyTorch, CPU onnxruntime,
# no network; onnxslim, polygraphy, av, scenedetect-headless and platformdirs travel as wheels in
# .whl/, the photos in build/photos).
#   OUT=build/gpu BUDGET=420 bash scripts/gpu_check.sh [TRAIN_MINUTES]
# Steps run one after another, most wanted first, each under its own timeout (training, tests and
# exports side by side on 16 cores starve each other):
# 1. the gpu-marked tests; 2. MoCE-IR-S export and `moce bench` on CUDA (device events, batch 1 and 4;
#    host dispatch of per-graph replays against one graph with IF nodes);
# 2b. the torch backend in fp16/bf16 and with TF32 (scripts/precision_check.py); 3. a short training run on CUDA (step speed with the padded expert sub-batches);
# 4. `moce evaluate` and the demo restore on the torch CUDA backend, `moce bench --tiling` at 4K,
#    `moce bench --video` at 1080p (clips against the same frames as images); 5. MoCE-IR bench;
# 6. the whole suite with CUDA visible, in what is left of BUDGET seconds (failures named as they happen).
# SKIP_GPU_TESTS=1 / SKIP_L=1 leave out steps 1 / 5 (a second call after a cut-off first one).
set -u
OUT=${OUT:-build/gpu}
MINUTES=${1:-1}  # the whole script then needs about 7 minutes
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 -c "from moce.cli.main import main; main()" "$@"\n' >/tmp/bin/moce
chmod +x /tmp/bin/moce && export PATH=/tmp/bin:$PATH  # a program, not a shell function: timeout runs it
step() { echo; echo "=== $(date +%T) (${SECONDS}s) $*"; }

step machine
nvidia-smi -L; nproc
python3 -c 'import torch, onnx, onnxruntime as o; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "| onnx", onnx.__version__, "| onnxruntime", o.__version__, o.get_available_providers())'
[ -d build/photos/train ] || python3 scripts/make_demo_data.py build/photos

if [ -z "${SKIP_GPU_TESTS:-}" ]; then
  step "gpu-marked tests"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu -rs tests 2>&1 | tail -15
fi

step "export MoCE-IR-S (random weights) for the bench (validation on a GPU machine: 3e-7)"
python3 scripts/make_random_s.py /tmp/moceir_S.safetensors S && timeout 120 moce export /tmp/moceir_S.safetensors -o /tmp/S.moce \
  --no-validate --no-conditional --no-dense --no-tiles 2>&1 | tail -2  # the torch backend runs the split plan

step "bench on CUDA (S: batch 1 and 4; the torch backend plain and replaying CUDA graphs; split: the host
# launches each chosen expert's graph, conditional: one graph per batch whose IF nodes choose on the GPU)"
timeout 240 moce bench --model /tmp/S.moce --backends torch,torch-graphs --routing split,conditional --sizes 256,512 --batch 1,4 --device cuda \
  --rounds 10 --json "$OUT/bench_S_cuda.json" --chart "$OUT/bench_S_cuda.png"

step "torch backend in fp16/bf16 and TF32 (quality on the samples, demo model; speed on S)"
timeout 120 python3 scripts/precision_check.py --speed-model /tmp/moceir_S.safetensors --sizes 256:1,512:4 2>&1 | tail -12

step "TensorRT operator support of every exported graph (no TensorRT needed)"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/engines/test_tensorrt_ops.py 2>&1 | tail -3

if [ "$MINUTES" != 0 ]; then
  step "training: $MINUTES minutes (step speed with padded expert sub-batches)"
  MIX=noise15,noise25,noise50,rain,haze,blur,blur,lowlight
  timeout $((MINUTES * 60 + 60)) moce train build/photos/train --device cuda \
    --workers 6 --threads 2 --crop 128 --batch 32 --minutes "$MINUTES" --iterations 100000 --save-every 100000 \
    --degradations $MIX --relative-l1 -o /tmp/runs/ft --init moce/data/moce_demo.ckpt --lr 1e-4 --route-weight 0.1 2>&1 \
    | tr '\r' '\n' | grep -E "step |wrote|Error" | tail -8
fi

step "evaluate the demo model on the torch CUDA backend"
timeout 90 moce evaluate --data build/photos/heldout --model moce/data/moce_demo.ckpt --backend torch --crops 8 2>&1 | tail -12

step "demo restore on CUDA"
timeout 60 moce demo --output /tmp/demo --backend torch 2>&1 | tail -5

step "tiling at photo sizes on CUDA (--tile auto's memory model on device memory against measured peaks)"
timeout 150 moce bench --tiling untiled,auto,1024 --sizes 2160x3840 --backends torch \
  --json "$OUT/tiling_cuda.json" 2>&1 | tail -8

step "video at 1080p on CUDA (decode and encode on the CPU beside restoring on the GPU)"
timeout 90 moce bench --video --sizes 1080x1920 --frames 16 --backends torch --json "$OUT/video_cuda.json" 2>&1 | tail -4

if [ -z "${SKIP_L:-}" ]; then
  step "MoCE-IR (L) export and bench on CUDA, batch 1"
  python3 scripts/make_random_s.py /tmp/moceir_L.safetensors L && timeout 150 moce export /tmp/moceir_L.safetensors -o /tmp/L.moce \
    --no-validate --no-conditional --no-dense --no-tiles 2>&1 | tail -2
  timeout 90 moce bench --model /tmp/L.moce --backends torch --routing split --sizes 256,512 --batch 1 --device cuda \
    --rounds 10 --no-memory --json "$OUT/bench_L_cuda.json"
fi

LEFT=$(( ${BUDGET:-420} - SECONDS ))
step "the whole suite with CUDA visible (${LEFT}s left)"
XDIST=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
# -v names each result as it comes, so a run cut by the timeout still says which tests failed
[ "$LEFT" -gt 30 ] && timeout "$LEFT" python3 -m pytest -v -p no:cacheprovider $XDIST -rs tests 2>&1 \
  | grep -E "FAILED|ERROR|passed|failed" | tail -25
step done
