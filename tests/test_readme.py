"""The README holds up for a newcomer: its test command is the one CI runs, its python blocks
and the own-transaction example pass ``mypy --strict`` run from another folder (so the
editable install is visible to type checkers), and it names only files a user has."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The README sections whose python blocks must type-check as they stand.
TYPED_SECTIONS = ("The event loop", "Send your own transaction")
#: Sections that must not point at files outside the repository (the rest: see the report).
OWN_SECTIONS = ("Concepts on one screen", "The event loop", "Send your own transaction",
                "The simsync command", "Examples")


def sections() -> Dict[str, str]:
    """``{title: text}`` of every ``## `` section (``###`` stay inside their section)."""
    parts = re.split(r"^## (.+)$", README, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2])}


def blocks(text: str, language: str) -> List[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    intro = README.split("## ")[0]
    commands = [b.strip() for b in blocks(intro, "bash")]
    assert len(commands) == 2, commands          # install-and-run, then the tests
    test_command = commands[1]
    assert test_command.endswith("pytest") and "'.[test]'" in test_command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci, "README's test command and .ci/run differ"
    clone = next(i for i, line in enumerate(ci) if line.startswith("git clone"))
    assert clone < ci.index(test_command), "the test command must run in the fresh clone"


@pytest.mark.parametrize("title", OWN_SECTIONS)
def test_readme_names_only_files_a_user_has(title: str) -> None:
    text = sections()[title]
    for name in re.findall(r"[\w./-]+\.(?:md|py|cfg|toml|ini|txt)\b", text):
        if name in ("your_bot.py", "my_build.so"):
            continue
        assert (ROOT / name).exists(), f"the README's {title!r} names {name}, not in the repo"


def test_readme_paths_in_backticks_exist() -> None:
    for name in re.findall(r"`(?:python |pytest )?((?:[\w.-]+/)+[\w.-]+\.(?:py|md))", README):
        assert (ROOT / name).exists(), name


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_readme_snippets_and_example_pass_mypy_strict_from_another_folder(
        tmp_path: Path) -> None:
    """Run from a folder outside the repository, as a user would run it on their own bot:
    mypy must find the installed simsync (an editable install included) and its types."""
    pytest.importorskip("mypy", reason="mypy is in the test extra; install '.[test]'")
    found = sections()
    files = []
    for title in TYPED_SECTIONS:
        for index, code in enumerate(blocks(found[title], "python")):
            path = tmp_path / f"readme_{title.split()[-1].lower()}_{index}.py"
            path.write_text(code, encoding="utf-8")
            files.append(path)
    assert len(files) == 2, files
    example = tmp_path / "own_transaction.py"
    shutil.copy(ROOT / "examples" / "own_transaction.py", example)
    files.append(example)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
         "--cache-dir", str(tmp_path / ".mypy_cache"), *map(str, files)],
        cwd=tmp_path, capture_output=True, text=True, timeout=170)
    hint = ("" if "simsync" not in result.stdout or "import-not-found" not in result.stdout
            else "\nmypy cannot see the installed simsync: reinstall with pip install -e "
                 "(setup.cfg selects the compat editable mode)")
    assert result.returncode == 0, result.stdout + result.stderr + hint
