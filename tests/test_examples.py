"""Every example runs with no arguments (against its embedded local simulator) and prints
what it is meant to show."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: For each example, lines (regular expressions) its output must contain.
EXPECTED: Dict[str, List[str]] = {
    "quickstart.py": [r"^session \S+ created for slots", r"^paused at slot \d+; \w+ holds \d+",
                      r"^completed: [1-9]\d* System transactions", r"^session closed$"],
    "own_transaction.py": [r"^sent \w+ in the step that executed slot (\d+)$",
                           r"^status at the pause: slot \d+, err=None$",
                           r"^recipient holds 2000000 lamports, payer 997995000$",
                           r"^notification: slot \d+, err=None, fee 5000 lamports$"],
    "discovery_stepping.py": [r"^paused before batch \d+ of slot \d+",
                              r"^state at the pause: slot \d+, fee payer \w+ holds \d+",
                              r"^simulated \w+: err=None", r"log: Program log: Memo"],
    "program_override.py": [r"^baseline: (\d+) of \1 transactions .* succeeded$",
                            r"^override: 0 of [1-9]\d* transactions",
                            r"^regressions: [1-9]\d*, improvements: 0$"],
    "parallel.py": [r"^3 sub-sessions for slots", r"^  sub-session \S+ slots \d+-\d+: ",
                    r"^all sub-sessions completed: [1-9]\d* slots"],
    "multiprocessing_workers.py": [r"^processes: 4 jobs", r"^threads: 4 jobs",
                                   r"^same results under both executors: True$"],
    "crash_resume.py": [r"^worker killed after \d+ handled events \(exit code -9\)$",
                        r"^the new process handled [1-9]\d* more events$",
                        r"each seen exactly once, in order$"],
    "bot_skeleton.py": [r"RECONNECTING", r"^the control connection was dropped 4 times$",
                        r"^exactly once: every slot and every transfer"],
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SIMULATOR_API_KEY"}
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                            text=True, timeout=90, env=env, stdin=subprocess.DEVNULL,
                            cwd=EXAMPLES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    for pattern in EXPECTED[name]:
        assert re.search(pattern, result.stdout, re.M), (pattern, result.stdout)
    assert "Traceback" not in result.stderr
