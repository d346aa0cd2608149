"""The README holds up for a newcomer: its test command is the one CI runs, every python block
runs (or is marked ``<!-- fragment: why -->`` on the line before it), its typed python blocks
and the own-transaction example pass ``mypy --strict`` run from another folder (so the
editable install is visible to type checkers), and it names only files a user has."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from simsync.localsim import LocalSimulator

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


FRAGMENT = re.compile(r"^<!-- fragment: (.+) -->$")
#: The hostname the README's blocks connect to; the test runs them against a local simulator.
PLACEHOLDER_HOST = '"sim.example.com", api_key="..."'
#: Code run after a block that only defines something, so that it is exercised too.
AFTERWORDS = {"Send your own transaction": """
from simsync.localsim import LocalSimulator
with LocalSimulator() as sim, simsync.Client(sim.url) as client:
    with client.start_session(start_slot=400_000_000, end_slot=400_000_010) as session:
        while not isinstance(session.next_event(30), simsync.ReadyForContinue):
            pass
        print("sent", send_transfer(session, 1_000_000))   # above the rent-exempt minimum
"""}


def python_blocks() -> List[Tuple[str, str, str]]:
    """``(section title, code, fragment reason or "")`` for every python block."""
    found = []
    for title, text in sections().items():
        for match in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.M | re.S):
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            reason = FRAGMENT.match(before)
            found.append((title, match.group(1), reason.group(1) if reason else ""))
    return found


def test_the_readme_has_python_blocks_that_run() -> None:
    blocks_ = python_blocks()
    assert len(blocks_) >= 5
    assert sum(1 for _, _, reason in blocks_ if not reason) >= 4


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_readme_python_block_runs_or_is_marked_a_fragment(index: int,
                                                                tmp_path: Path) -> None:
    title, code, fragment = python_blocks()[index]
    compile(code, f"README {title!r} block", "exec")      # a fragment still parses
    if fragment:
        return
    with LocalSimulator() as sim:
        program = code.replace(PLACEHOLDER_HOST, repr(sim.url)) + AFTERWORDS.get(title, "")
        result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path,
                                capture_output=True, text=True, timeout=200,
                                stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"README {title!r}:\n{result.stderr[-3000:]}"
    if title in AFTERWORDS:
        assert "sent " in result.stdout


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


def test_readme_calls_only_what_is_callable() -> None:
    """``LocalSimulator.wallets()`` in the prose: a property (``TypeError: 'list' object is not
    callable``). Every ``Class.name()`` the README writes must be a method, not a property."""
    import simsync

    owners = {"LocalSimulator": LocalSimulator, "Client": simsync.Client,
              "Session": simsync.Session, "ParallelSession": simsync.ParallelSession}
    called = re.findall(r"\b(LocalSimulator|Client|Session|ParallelSession)\.(\w+)\(", README)
    assert called
    for owner, name in called:
        attribute = getattr(owners[owner], name)
        assert not isinstance(attribute, property), f"README calls {owner}.{name}()"
