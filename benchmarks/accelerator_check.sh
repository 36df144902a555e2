#!/usr/bin/env bash
# One short accelerator session, in a fixed time: UNet training throughput in
# float32 and bfloat16, then the DDPM++-sized networks (64x64 and 256x256: MFU
# against the run's measured matmul peak, bfloat16 with float32 master weights,
# both attention paths, sampling images/s at 20 NFE and the loop's per-step
# overhead), then benchmarks/restoration.py with models sized from the
# measured throughput, their five trainings run as parallel processes.
#
#   bash benchmarks/accelerator_check.sh OUT_DIR [TRAIN_SECONDS] [BENCH_SECONDS]
#
# Logs land in OUT_DIR: throughput.log, train.log, restoration.log. Every stage is
# bounded by `timeout`. A training still running at TRAIN_SECONDS gets SIGTERM,
# saves its checkpoint and is benchmarked as it is (train.log says at which step);
# one that has not stopped 60 s later is killed. The benchmark prints each row as
# it is measured, so a cut-off run still reports the rows it finished.
#
# Environment: PYTHON (default python3), ROOT (run folders, default
# /tmp/restoration_accel), IMAGE_SIZE (32), CHANNELS (64), BATCH (64),
# THROUGHPUT_BATCH (128), BENCH_ARGS (more restoration.py flags, e.g. "--tasks
# jpeg"), CONFIGS (the runs to train, default all five), STEPS (steps per model
# instead of the throughput-based count; STEPS_<config> for one config),
# SKIP_THROUGHPUT=1, SKIP_SIZES=1 (the DDPM++-sized stage; its log is sizes.log), SKIP_DIFFUSERS=1 (the
# ddpm-celebahq-256 diffusers-port stage; diffusers256.log),
# SIZES ("ddpmpp64:256 ddpmpp256:32": size:first batch tried; halved on
# out-of-memory down to 1), SIZES_ONLY=1 (stop after the sizes stage).
set -u
out=${1:?usage: accelerator_check.sh OUT_DIR [TRAIN_SECONDS] [BENCH_SECONDS]}
train_seconds=${2:-210}
bench_seconds=${3:-240}
py=${PYTHON:-python3}
root=${ROOT:-/tmp/restoration_accel}
image_size=${IMAGE_SIZE:-32}
channels=${CHANNELS:-64}
batch=${BATCH:-64}
throughput_batch=${THROUGHPUT_BATCH:-128}
cd "$(dirname "$0")/.."
mkdir -p "$out" "$root"
# Several processes share the accelerator: each takes memory as it needs it.
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

# ---------------------------------------------------------------------------
# Training at scale (configs/paper_bf16.py, 256x256, base 128): images/s,
# MFU and per-device parameter bytes of the real training step, float32 vs
# bfloat16 and replicated vs FSDP, block remat on. Run alone with
#   SCALE_ONLY=1 bash benchmarks/accelerator_check.sh OUT_DIR
# or as the first stage of the full check with SCALE=1 (SCALE_BATCH: images per
# step, default 32; SCALE_STEPS: timed steps, default 5). Four cases of at most
# 180 s each; logs to OUT_DIR/scale.log, one JSON line per case.
scale_check() {
  for dtype in bfloat16 float32; do
    for layout in "" "--fsdp"; do
      timeout 180 $py benchmarks/scale_step.py --dtype $dtype $layout --batch "${SCALE_BATCH:-32}" \
        --steps "${SCALE_STEPS:-5}" 2>&1 | grep -v -E "slow_operation_alarm|Very slow compile|^\*+$|^$" | tail -n 3
    done
  done 2>&1 | tee "$out/scale.log"
}
if [ "${SCALE_ONLY:-0}" = 1 ] || [ "${SCALE:-0}" = 1 ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
  scale_check
  [ "${SCALE_ONLY:-0}" = 1 ] && exit 0
fi
# ---------------------------------------------------------------------------

configs=${CONFIGS:-palette_inpainting palette_uncropping palette_colorization palette_jpeg repaint_photos}
[ "${SKIP_THROUGHPUT:-0}" = 1 ] || {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>/dev/null
  $py -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  for dtype in float32 bfloat16; do
    timeout 120 $py benchmarks/train_throughput.py --batch $throughput_batch --dtype $dtype
  done
} 2>&1 | tee "$out/throughput.log"

# DDPM++ sizes: the largest batch that fits (halving from the first one tried),
# per compute dtype and attention path. Each run is bounded by `timeout`.
[ "${SKIP_SIZES:-0}" = 1 ] || {
  for spec in ${SIZES:-ddpmpp64:256 ddpmpp256:32}; do
    size=${spec%%:*}; b=${spec##*:}
    for dtype in bfloat16 float32; do
      for attention in dot_product einsum; do
        bb=$b
        while [ "$bb" -ge 1 ]; do
          log=$(timeout 300 $py benchmarks/train_throughput.py --size $size --dtype $dtype --attention $attention \
                --batch $bb --repeats 5 2>&1)
          echo "$log" | grep -v -E "slow_operation_alarm|^\*+$|^$" | tail -n 20
          echo "$log" | grep -q -E "RESOURCE_EXHAUSTED|Out of memory|out of memory" || break
          echo "== $size $dtype batch $bb does not fit; halving"
          bb=$((bb / 2))
        done
      done
    done
  done
} 2>&1 | tee "$out/sizes.log"
# The published ddpm-celebahq-256 UNet (diffusers UNet2DModel port, random weights): seconds per image of a
# compiled 10-step DDIM loop at batch 4 (diffjax side only; PyTorch is not installed here).
if [ "${SKIP_DIFFUSERS:-0}" != 1 ]; then
  timeout 300 $py benchmarks/diffusers_speed.py --archs ddpm-celebahq-256 --steps 10 --batch 4 2>&1 \
    | tee "$out/diffusers256.log"
fi
[ "${SIZES_ONLY:-0}" = 1 ] && exit 0

# Steps per model: what the measured float32 rate gives each of five parallel
# trainings in TRAIN_SECONDS, scaled from the 9.06 GFLOP/img benchmark UNet to the
# benchmark's narrower one (5.53 GFLOP/img at 32x32 and 64 channels), with 40% held
# back for compilation and sharing; between 1000 and 20000, in hundreds.
# No measured rate and no STEPS: stop, rather than guess a rate.
ips=$(grep -s '"dtype": "float32"' "$out/throughput.log" | $py -c 'import json,sys; print(json.loads(sys.stdin.readline())["train_img_per_s"])' 2>/dev/null)
if [ -z "${STEPS:-}" ] && [ -z "$ips" ]; then
  echo "accelerator_check.sh: no float32 training rate in $out/throughput.log (the throughput stage failed," \
       "timed out or was skipped), so the steps per model cannot be sized; set STEPS=<steps per model>" >&2
  exit 1
fi
steps=${STEPS:-$($py -c "print(max(1000, min(20000, int(0.6 * $train_seconds * $ips * 9.06 / 5.53 * (32 / $image_size) ** 2 * (64 / $channels) ** 2 / 5 / $batch) // 100 * 100)))")}
args="--root $root --image_size $image_size --channels $channels --batch $batch"
echo "float32 training images/s: ${ips:-not measured} -> $steps steps per model ($args)" >"$out/train.log"

start=$(date +%s)
for config in $configs; do
  steps_var=STEPS_$config
  echo "$config: ${!steps_var:-$steps} steps" >>"$out/train.log"
  timeout -s TERM -k 60 "$train_seconds" $py benchmarks/restoration.py $args --steps "${!steps_var:-$steps}" \
    --train_only $config \
    >"$root/$config.log" 2>&1 &
done
wait
echo "trainings took $(($(date +%s) - start)) s" >>"$out/train.log"
for config in $configs; do
  echo "== $config" >>"$out/train.log"
  grep -v -E "slow_operation_alarm|Very slow compile|^\*+$|^$" "$root/$config.log" | tail -n 8 >>"$out/train.log"
  tail -n 1 "$root/$config/metrics.jsonl" >>"$out/train.log" 2>/dev/null
done
cat "$out/train.log"

timeout "$bench_seconds" $py benchmarks/restoration.py $args ${BENCH_ARGS:-} 2>&1 | tee "$out/restoration.log"

