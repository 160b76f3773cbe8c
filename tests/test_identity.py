"""Before/after identity: catch and 10k steps of Pong train bit-identically to the code before the framework
redesign (digests in tests/golden/identity.json, recorded by scripts/identity_check.py at commit bd70dea)."""
from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import identity_check  # noqa: E402

GOLDEN = json.loads(identity_check.GOLDEN.read_text())


@pytest.mark.parametrize("name", sorted(GOLDEN["runs"]))
def test_training_is_bit_identical_to_the_recorded_run(tmp_path, name):
    here = identity_check.machine()
    recorded = {k: GOLDEN[k] for k in ("cpu", "isa", "torch")}
    if here != recorded:
        pytest.skip(f"digests were recorded on {recorded}; floating point differs on {here}")
    digest, rows, final_eval = identity_check.run(name, tmp_path)
    assert rows == GOLDEN["runs"][name]["rows"]
    assert final_eval == GOLDEN["runs"][name]["final_eval"]
    assert digest == GOLDEN["runs"][name]["sha256"]
