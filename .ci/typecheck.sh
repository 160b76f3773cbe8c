#!/usr/bin/env bash
# mypy on the package as it installs: agents/, envs/ and experiments/ become drl.agents, drl.envs and
# drl.experiments (pyproject.toml's package-dir), a mapping mypy cannot follow through an editable install. The
# package is copied to a temporary folder, checked there with the repository's [tool.mypy] settings, and the
# reported paths are mapped back to the repository's files.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip install -q --no-deps --no-build-isolation --target "$work" "$repo" >/dev/null 2>&1
cd "$work"
set +e
python -m mypy --config-file "$repo/pyproject.toml" --cache-dir "$repo/.mypy_cache" -p drl > "$work/mypy.out" 2>&1
rc=$?
set -e
sed -e 's#^drl/agents/#agents/#' -e 's#^drl/envs/#envs/#' -e 's#^drl/experiments/#experiments/#' "$work/mypy.out"
exit $rc
