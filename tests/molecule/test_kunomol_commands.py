"""The side-effect playbooks call molecule/resources/kunomol.py by command name; a command
the playbooks use and kunomol lacks is found here in a second, not after a molecule
scenario's deploy (the partition scenario's `absent` was lost once that way)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.support.system import REPO

KUNOMOL = REPO / "molecule" / "resources" / "kunomol.py"
CALL = re.compile(r"\{\{ __kunomol \}\} ([^\"\n]+)")
JINJA = re.compile(r"\{\{.*?\}\}")


def calls() -> list[tuple[str, list[str]]]:
    """Every kunomol command line of the side-effect playbooks, Jinja replaced by `1`."""
    found = []
    for playbook in sorted((REPO / "molecule").glob("*/side_effect.yml")):
        text = re.sub(r">-\n\s+", "", playbook.read_text())
        for match in CALL.finditer(text):
            line = JINJA.sub("1", match[1]).strip()
            found.append((f"{playbook.parent.name}: {line}", shlex.split(line)))
    return found


@pytest.mark.parametrize("words", [w for _, w in calls()], ids=[name for name, _ in calls()])
def test_kunomol_accepts_every_command_line_the_playbooks_use(words: list[str]) -> None:
    # --help after the arguments: argparse checks the command and its options first
    # (an unknown one exits 2), then prints the help without running anything.
    run = subprocess.run(
        [sys.executable, str(KUNOMOL), "scenario", *words, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr


def test_the_playbooks_call_kunomol() -> None:
    assert len(calls()) >= 15
