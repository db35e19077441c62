"""The planted bugs of ``make mutants`` still apply to the market's sources.

Each mutant is a text edit; when the contract changes under it, the edit no longer
applies and ``make mutants`` stops at that mutant (exit 2). This test says so at once,
without compiling anything.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("forge_mutants", ROOT / "scripts" / "forge_mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["forge_mutants"] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


FORGE_MUTANTS: Any = _load_script()


@pytest.mark.parametrize("mutant", FORGE_MUTANTS.MUTANTS, ids=lambda m: m.name)
def test_each_mutant_plants_its_bug_in_exactly_one_place(mutant: Any) -> None:
    sources = {path: (ROOT / path).read_text() for path in FORGE_MUTANTS.CONTRACTS}
    path, planted = FORGE_MUTANTS.plant(mutant, sources)
    assert planted != sources[path]


def test_mutant_names_are_unique() -> None:
    names = [m.name for m in FORGE_MUTANTS.MUTANTS]
    assert len(names) == len(set(names)) >= 30
