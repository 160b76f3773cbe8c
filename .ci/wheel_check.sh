#!/usr/bin/env bash
# The built wheel, installed alone in a fresh venv, run from a folder outside the checkout: named experiments,
# a short training, the Python API, evaluate and compare, and one bad input (one line, exit 2).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip wheel -q --no-deps --wheel-dir "$work/dist" "$repo"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q torch==2.13.0
"$work/venv/bin/python" -m pip install -q "$work"/dist/drl-*.whl
cd "$work"   # nothing of the checkout on the path from here on
py="$work/venv/bin/python"
"$py" - <<'PY'
import drl, sys
assert "site-packages" in drl.__file__, drl.__file__
import importlib.util
for name in ("agents", "envs", "experiments"):   # one top-level import name: drl
    assert importlib.util.find_spec(name) is None, f"top-level '{name}' is installed"
cfg = drl.load_config("cartpole")
print("wheel: load_config('cartpole') ->", cfg.env.kind, cfg.agent.algo)
PY
WANDB_MODE=offline "$py" -m drl.train catch total_steps=3000 eval.interval=1500 eval.episodes=8 --run-dir run-catch
"$py" -m drl.evaluate run-catch --episodes 4
"$py" -m drl.compare run-catch --out comparison
test -n "$(ls comparison)"
WANDB_MODE=offline "$py" -m drl.train atari-pong total_steps=160 agent.learning_starts=100 eval.episodes=2 eval.num_envs=2 --run-dir run-pong
set +e
"$py" -m drl.train atari-pong agent.lr=-1 > bad.out 2> bad.err
rc=$?
set -e
lines=$(wc -l < bad.err)
if [ "$rc" -ne 2 ] || [ "$lines" -ne 1 ]; then
  echo "wheel: bad input gave exit $rc and $lines lines on stderr:"; cat bad.err; exit 1
fi
echo "wheel: bad input -> exit 2: $(cat bad.err)"
echo "wheel: OK"
