#!/usr/bin/env bash
# The GPU checks of one lent CUDA machine, in one go (issue "Results you can trust, part 1", item 7):
#   1. the CUDA tests (tests/test_cuda.py and the CUDA cases elsewhere);
#   2. atari-pong-gpu until an evaluation reaches 18 (eval.stop_at) or PONG_SECONDS pass, with the GPU's
#      utilisation sampled every second beside it; `python -m drl.bench.run_speed` then adds to machine.txt its
#      env steps/s (filling, learning), updates/s, minutes to 18, GPU utilisation while learning and what bounds it;
#   3. drl.bench on CUDA only (pong and update sections, short).
# Run from the repo root: `OUT=/some/dir bash scripts/gpu_check.sh`. Each step has its own time limit, so one that
# hangs does not cost the others; everything worth keeping lands in $OUT (at most 8 files).
# Packages the machine lacks travel as wheels in .whl/ (git-ignored locally), made here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic pydantic_core annotated-types typing-inspection typing_extensions gymnasium farama-notifications \
#     ale-py stable-baselines3          (same versions as this venv's; 6.4 MB in all)
# and installed there into /tmp/site.
set -u
OUT=${OUT:-gpu-out}
PONG_SECONDS=${PONG_SECONDS:-270}
TEST_SECONDS=${TEST_SECONDS:-120}
BENCH_SECONDS=${BENCH_SECONDS:-150}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1 WANDB_MODE=disabled
{
    date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    lscpu | grep -E "^Model name|^CPU\(s\)"
    python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)"
} > "$OUT/machine.txt" 2>&1

# 1. CUDA tests first: a broken CUDA path shows in 30 s, not after the Pong budget
timeout -k 10 "$TEST_SECONDS" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    "tests/test_sequences.py::test_fused_cuda_lstm_stays_float32_under_autocast" \
    "tests/test_torch_native.py::test_cuda_matches_contract" > "$OUT/cuda-tests.log" 2>&1
echo "cuda tests: exit $?" >> "$OUT/machine.txt"

# 2. Pong to 18 on the GPU (wall clock includes evaluations; only the final checkpoint is written)
(
    while :; do
        printf '%s,%s\n' "$(date +%s.%N)" "$(nvidia-smi --query-gpu=utilization.gpu,memory.used \
            --format=csv,noheader,nounits | head -1)"
        sleep 1
    done
) > "$OUT/gpu-util.csv" 2>/dev/null &
sampler=$!
start=$(date +%s)
timeout -s INT -k 60 "$PONG_SECONDS" python3 -m drl.train atari-pong-gpu seed=0 tracking.wandb=off \
    checkpoint_interval=100000000 --run-dir /tmp/atari-pong-gpu > "$OUT/pong-gpu.log" 2>&1
echo "pong: exit $? after $(( $(date +%s) - start )) s" >> "$OUT/machine.txt"
kill "$sampler"
python3 -m drl.bench.run_speed /tmp/atari-pong-gpu --gpu-util "$OUT/gpu-util.csv" --score 18 >> "$OUT/machine.txt" 2>&1
cp /tmp/atari-pong-gpu/metrics.jsonl "$OUT/metrics.jsonl"
cp /tmp/atari-pong-gpu/config.yaml "$OUT/config.yaml"
rm -rf /tmp/atari-pong-gpu

# 3. drl.bench on CUDA (short: one repeat, 2,000 timed steps)
timeout -k 10 "$BENCH_SECONDS" python3 -m drl.bench --devices cuda --only pong,update --steps 2000 --repeats 1 \
    --timeout 60 --out "$OUT/bench-cuda.json" > "$OUT/bench-cuda.log" 2>&1
echo "bench: exit $?" >> "$OUT/machine.txt"
