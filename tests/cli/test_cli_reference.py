"""`patou`'s commands keep their help pages and options: what a user types and reads does not drift
(tests/cli_reference.py, tests/data/cli_reference.json)."""
from __future__ import annotations

import json

from cli_reference import REFERENCE, commands, snapshot


def test_every_command_has_the_recorded_help_and_options():
    ref = json.loads(REFERENCE.read_text())
    assert len(ref) >= 16 and "patou run" in ref and "patou models install" in ref and "patou reid search" in ref
    new = snapshot()
    assert sorted(new) == sorted(ref)  # no verb or sub-verb added or lost
    for name in ref:
        assert new[name]["params"] == ref[name]["params"], name
        assert new[name]["help"] == ref[name]["help"], name


def test_the_walk_finds_every_sub_verb():
    names = {" ".join(p) for p in commands()}
    assert {"run", "guard", "models install", "models list", "models remove", "reid train", "reid search",
            "reid evaluate"} <= names
