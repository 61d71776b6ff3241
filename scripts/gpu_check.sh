#!/usr/bin/env bash
# The CUDA checks, in one call on a lent NVIDIA machine (its image: CUDA PyTorch, CPU onnxruntime,
# no network; onnxslim and polygraphy travel as wheels in .whl/, the photos in build/photos).
#   OUT=build/gpu bash scripts/gpu_check.sh [TRAIN_MINUTES]
# Steps run one after another: in session 6 training, tests and exports side by side on 16 cores
# starved each other (docs/performance.md), so nothing here shares the machine.
# 1. the test suite with CUDA visible (gpu-marked tests included);
# 2. one GPU training run (a demo-model candidate, copied to $OUT), speed printed as it goes;
# 3. MoCE-IR-S/L export, `moce bench` on CUDA (device events), `moce evaluate` of the candidate on
#    the torch CUDA backend, and the demo restore on CUDA.
set -u
OUT=${OUT:-build/gpu}
MINUTES=${1:-3}  # the whole script then needs about 9 minutes
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
moce() { python3 -c 'from moce.cli.main import main; main()' "$@"; }
step() { echo; echo "=== $(date +%T) $*"; }

step machine
nvidia-smi -L; nproc
python3 -c 'import torch, onnx, onnxruntime as o; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "| onnx", onnx.__version__, "| onnxruntime", o.__version__, o.get_available_providers())'
[ -d build/photos/train ] || python3 scripts/make_demo_data.py build/photos

step "tests with CUDA visible"
XDIST=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
timeout 240 python3 -m pytest -q -p no:cacheprovider $XDIST -rs tests 2>&1 | tail -25

step "training: $MINUTES minutes"
MIX=noise15,noise25,noise50,rain,rain,rain,haze,haze,haze,blur,blur,blur,blur,blur,blur,lowlight,lowlight,lowlight
moce train build/photos/train --device cuda --workers 6 --threads 2 --crop 128 --batch 32 --minutes "$MINUTES" \
  --iterations 100000 --save-every 1000 --degradations $MIX --relative-l1 -o /tmp/runs/ft16 \
  --init moce/data/moce_demo.ckpt --lr 1e-4 --route-weight 0.1 2>&1 | tr '\r' '\n' | grep -E "step .*(00|50)/|wrote|Error"
cp /tmp/runs/ft16/final.ckpt "$OUT/ft16.ckpt" || echo "training wrote no final.ckpt"

step "export MoCE-IR-S and MoCE-IR (random weights) for the bench (validated in session 6: 3e-7)"
for size in S L; do
  python3 scripts/make_random_s.py /tmp/moceir_${size}.safetensors $size && moce export /tmp/moceir_${size}.safetensors -o /tmp/$size.moce \
    --no-validate --no-conditional --no-dense --no-tiles 2>&1 | tail -2  # the torch backend runs the split plan
done

step "bench on CUDA (S: batch 1 and 4; L: batch 1; the torch backend runs the split plan only)"
moce bench --model /tmp/S.moce --backends torch --routing split --sizes 256,512 --batch 1,4 --device cuda \
  --rounds 10 --json "$OUT/bench_S_cuda.json" --chart "$OUT/bench_S_cuda.png"
moce bench --model /tmp/L.moce --backends torch --routing split --sizes 256,512 --batch 1 --device cuda \
  --rounds 10 --no-memory --json "$OUT/bench_L_cuda.json"

step "evaluate the candidates on the torch CUDA backend"
for ckpt in moce/data/moce_demo.ckpt "$OUT"/*.ckpt; do
  echo "--- $ckpt"; timeout 120 moce evaluate --data build/photos/heldout --model "$ckpt" --backend torch --crops 24 2>&1 | tail -12
done

step "demo restore on CUDA"
timeout 60 moce demo --out /tmp/demo --backend torch 2>&1 | tail -5
step done
