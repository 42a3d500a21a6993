#!/usr/bin/env bash
# The whole GPU check of issue 17 in one go, on a bare GPU machine (torch + CUDA, no
# pycocotools / PyAV): about 8 minutes on an H200. Results: $OUT/gpu.json (+ logs in $OUT).
#
# Prepare here (once; the wheels stay out of git: /.whl/ is ignored):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       --platform manylinux1_x86_64 -d .whl pycocotools==2.0.11   # (PyAV is not needed: no step decodes video)
#   mkdir -p .gpu_shared/avism_reference && cp -r ../shared/avism_reference/golden_S1 .gpu_shared/avism_reference/
#   (the golden reference, 12 MB; /.gpu_shared/ is ignored too)
# Then on the machine (device tool: carry [".whl", ".gpu_shared"], timeout_s 600):
#   bash benchmarks/gpu_check.sh
# Steps, each under its own time limit, results merged into $OUT/gpu.json as they come:
#   1. golden parity on CUDA under --precision fp32 (tests/test_golden_parity.py)
#   2. inference throughput table (benchmarks/gpu.py throughput)
#   3. the tiny GPU recipe (configs/avism_tiny_gpu.yaml, RECIPE_MINUTES of training) + test eval
#   4. avism_r50 training iterations/s, fp32 vs bf16 (benchmarks/gpu.py train-speed)
# STEPS picks steps (default all: "golden throughput recipe trainspeed"); the synthetic data
# is made when a step needs it. Two calls fit a 15-minute device lease better than one:
#   STEPS="golden throughput trainspeed" bash benchmarks/gpu_check.sh   # about 5 minutes
#   STEPS=recipe bash benchmarks/gpu_check.sh                           # about 6 minutes
# CPU_SMOKE=1 runs every step on the CPU with tiny sizes (a dry run of the script itself).
set -u
OUT=${OUT:-/tmp/avis_gpu_out}
RECIPE_MINUTES=${RECIPE_MINUTES:-2.5}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
export AVIS_SHARED_DIR=${AVIS_SHARED_DIR:-$PWD/.gpu_shared}
JSON=$OUT/gpu.json
SYNTH=/tmp/avis_synth
DEVICE=cuda SMOKE="" SYNTH_ARGS="" RECIPE_ARGS="" TRAIN_ITERS=${TRAIN_ITERS:-30} EVAL_ARGS="" GOLDEN_ARGS=""
COMPILE="--compile-modes reduce-overhead"
if [ "${CPU_SMOKE:-0}" = 1 ]; then
  DEVICE=cpu SMOKE=--cpu-smoke SYNTH=/tmp/avis_synth_smoke RECIPE_MINUTES=0.2 TRAIN_ITERS=3
  SYNTH_ARGS="--num-train 4 --num-val 2 --num-test 2 --workers 1"
  RECIPE_ARGS="iterations=3 data.short_sides=[64] data.max_size=128 data.num_workers=1"
  EVAL_ARGS="--max-videos 2" COMPILE="" GOLDEN_ARGS="-k config_maps"  # CPU: the plumbing only
fi
STEPS=${STEPS:-golden throughput recipe trainspeed}
SYNTH_WORKERS=${SYNTH_WORKERS:-12}  # leave cores to the timed runs beside it
step() { echo "== $(date -u +%H:%M:%S) $*"; }
wants() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

step "environment"
python3 - <<'PY' 2>&1 | tee "$OUT/env.log"
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO GPU")
for name in ("pycocotools", "av", "scipy", "yaml", "rich", "PIL"):
    try:
        importlib.import_module(name); print(name, "ok")
    except Exception as err:
        print(name, "MISSING", err)
PY

if wants golden; then
step "1. golden parity on CUDA, --precision fp32"
AVIS_TEST_DEVICE=$DEVICE timeout 120 python3 -m pytest tests/test_golden_parity.py -q -p no:cacheprovider $GOLDEN_ARGS \
  > "$OUT/golden.log" 2>&1; echo "golden rc=$?" | tee -a "$OUT/golden.log"; tail -3 "$OUT/golden.log"
fi

SYNTH_PID=""
if wants recipe || wants trainspeed; then
  if [ -f "$SYNTH/test.json" ]; then
    step "synthetic data: kept from an earlier call ($SYNTH)"
  else
    step "synthetic data (default splits, no WAV)"
    timeout 150 python3 -m avis.cli.main synth --out "$SYNTH" --force --no-wav --workers $SYNTH_WORKERS $SYNTH_ARGS > "$OUT/synth.log" 2>&1 &
    SYNTH_PID=$!
  fi
fi

if wants throughput; then
step "2. throughput"
timeout 200 python3 benchmarks/gpu.py throughput $SMOKE --out "$JSON" $COMPILE \
  > "$OUT/throughput.log" 2>&1; echo "throughput rc=$?"; tail -14 "$OUT/throughput.log"
fi

if [ -n "$SYNTH_PID" ]; then wait $SYNTH_PID; echo "synth rc=$?"; fi
if wants recipe; then
step "3. tiny GPU recipe (${RECIPE_MINUTES} min of training) + test evaluation"
rm -rf /tmp/avis_tiny_gpu
T0=$(date +%s)
timeout 330 python3 -m avis.cli.main train --preset avism_tiny --data "$SYNTH" \
  --config configs/avism_tiny_gpu.yaml --device $DEVICE --output /tmp/avis_tiny_gpu --no-eval \
  max_minutes="$RECIPE_MINUTES" $RECIPE_ARGS > "$OUT/recipe.log" 2>&1; echo "recipe rc=$?"
cp /tmp/avis_tiny_gpu/metrics.jsonl "$OUT/recipe_metrics.jsonl" 2>/dev/null
timeout 120 python3 benchmarks/gpu.py recipe-eval $SMOKE $EVAL_ARGS --train-wall-s $(( $(date +%s) - T0 )) --run /tmp/avis_tiny_gpu --data "$SYNTH" --out "$JSON" \
  >> "$OUT/recipe.log" 2>&1; echo "recipe-eval rc=$?"; tail -12 "$OUT/recipe.log"
fi

if wants trainspeed; then
step "4. avism_r50 training speed"
timeout 110 python3 benchmarks/gpu.py train-speed $SMOKE --data "$SYNTH" --precisions fp32 bf16 --iterations $TRAIN_ITERS \
  --out "$JSON" > "$OUT/train_speed.log" 2>&1; echo "train-speed rc=$?"; tail -3 "$OUT/train_speed.log"
fi
step "done"
