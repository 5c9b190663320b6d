import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_classifies_samples_and_dead_letters_the_malformed():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "worker", "demo"], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "sent 30 events and 4 malformed records" in out
    rows = [line for line in out.splitlines() if line.startswith("demo-")]
    assert len(rows) == 30
    assert all(line.rstrip().endswith("384") for line in rows)
    # The zero-shot labels get the obvious ones right.
    assert any("Why was I charged twice" in line and "billing question" in line for line in rows)
    assert any("Lately I keep thinking about hurting" in line and "self-harm" in line for line in rows)
    assert "dead-letter topic: 4 record(s)" in out
    for reason in ("invalid_json", "missing_text", "empty_text", "invalid_utf8"):
        assert reason in out
    assert "INCOMPLETE" not in out
