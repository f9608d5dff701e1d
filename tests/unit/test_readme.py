"""The README says what the code does: its tables and usage lines are checked against the code
they describe, so they cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import galley.facts
from galley.lab.cli import parser as lab_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_facts_table_lists_every_fact_and_no_other():
    rows = re.findall(r"^\| (`galley\.facts\.[^|]+)\|", README, re.MULTILINE)
    listed = [name for row in rows for name in re.findall(r"`galley\.facts\.(\w+)", row)]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(galley.facts.__all__)


def test_lab_up_shows_each_option_with_its_default():
    (usage,) = re.findall(r"^galley lab up (.+)$", README, re.MULTILINE)
    shown = dict(re.findall(r"\[(--[\w-]+)(?: (\d+))?\]", usage))
    up = lab_parser()._subparsers._group_actions[0].choices["up"]
    options = {
        action.option_strings[0]: "" if action.const else str(action.default)
        for action in up._actions
        if action.option_strings and action.dest != "help"
    }
    assert shown == options
