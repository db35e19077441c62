#!/usr/bin/env python3
"""Plant known bugs in a copy of ChainScheduler.sol and check that the forge invariants catch each.

An invariant test proves little until it has failed on a bug. Each mutant below
is one small edit of ``contracts/ChainScheduler.sol`` that breaks a money or
state rule. For each one this script copies ``contracts/`` (tests included) and
``foundry.toml`` into a temporary project, applies the edit there (the
repository is never touched), compiles it with forge through ``scripts/solc``,
and runs the invariant campaign of ``make forge`` (same runs and depth) with a
few seeds, shrinking off so the time is the time to find the bug. It reports,
per seed, whether the invariants failed, with which error, after how many
handler calls and how many seconds.

Usage::

    python scripts/forge_mutants.py                 # every mutant, 3 seeds each
    python scripts/forge_mutants.py --list          # the mutants and their bugs
    python scripts/forge_mutants.py finalize-twice --seeds 1 --runs 256

Each mutant compiles the contract and the tests afresh (viaIR in solc-js: about
a minute), so the whole set takes about ten minutes on two cores.

A mutant's ``original`` text must appear exactly once in the contract. When the
contract changes so that it no longer does, the script says so (exit 2): update
the mutant to plant the same bug in the new code.

Exit codes: 0 every mutant caught with every seed, 1 a mutant survived a seed,
2 a mutant does not apply or forge failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
CONTRACT: Final = Path("contracts") / "ChainScheduler.sol"
FORGE: Final = REPO_ROOT / "node_modules" / "@foundry-rs" / "forge-linux-amd64" / "bin" / "forge"
SOLC_WRAPPER: Final = REPO_ROOT / "scripts" / "solc"
INVARIANT: Final = "invariant_marketLedger"

#: The campaign of `make forge` (foundry.toml, [profile.default.invariant]).
DEFAULT_RUNS: Final = 64
DEFAULT_DEPTH: Final = 100
DEFAULT_SEEDS: Final = (0x5EED, 0x1, 0xC0FFEE)


@dataclass(frozen=True, slots=True)
class Mutant:
    """One planted bug: replace ``original`` (found exactly once) with ``mutated``."""

    name: str
    bug: str
    original: str
    mutated: str


MUTANTS: Final[Sequence[Mutant]] = (
    Mutant(
        name="slash-pool-paid-twice",
        bug="settlement credits the client the whole slash pool while the winners get their shares too",
        original="_credit(terms.client, refund + pool - bonus.poolShare * n);",
        mutated="_credit(terms.client, refund + pool);",
    ),
    Mutant(
        name="withdrawbid-keeps-lock",
        bug="withdrawBid empties the slot but leaves its collateral locked",
        original="        _unlock(_providers[msg.sender], terms.collateral);\n        emit BidWithdrawn(",
        mutated="        emit BidWithdrawn(",
    ),
    Mutant(
        name="withdraw-pays-extra-wei",
        bug="withdraw() pays the stored value, one wei more than the credit",
        original="uint256 amount = stored - 1;",
        mutated="uint256 amount = stored;",
    ),
    Mutant(
        name="finalize-twice",
        bug="finalize() skips its status check, so a finished job can be settled again",
        original=(
            "        _requireStatus(jobId, job, JobStatus.Succeeded);\n"
            "        _requireAfter(jobId, job.deadline);\n"
            "        _settle(jobId, job, terms);"
        ),
        mutated="        _requireAfter(jobId, job.deadline);\n        _settle(jobId, job, terms);",
    ),
    Mutant(
        name="cancel-releases-one-short",
        bug="cancel releases the collateral of slots 0..k-2 only, not the last main slot",
        original="_releaseRange(jobId, 0, terms.k, terms.collateral);",
        mutated="_releaseRange(jobId, 0, terms.k - 1, terms.collateral);",
    ),
    Mutant(
        name="slash-keeps-lock",
        bug="a slash moves the collateral into the pool but leaves it counted as locked stake",
        original="        p.locked -= collateral;\n        p.slashed += 1;",
        mutated="        p.slashed += 1;",
    ),
    Mutant(
        name="reveal-timeout-no-slash",
        bug="a reveal timeout does not slash the slots that committed and never revealed",
        original=(
            "            if (_slots[jobId][i].state == SlotState.Committed) "
            "_slash(jobId, i, terms.collateral, false);\n"
        ),
        mutated="",
    ),
    Mutant(
        name="displaced-bid-keeps-lock",
        bug="a bid displaced in the bid window loses its slot but its collateral stays locked",
        original="            _unlock(_providers[loser], terms.collateral);\n",
        mutated="",
    ),
    Mutant(
        name="void-challenge-keeps-bond",
        bug="a challenge nobody could decide does not return the client's bond (it vanishes)",
        original="        job.winner = c.originalWinner;\n        _credit(terms.client, c.bond);",
        mutated="        job.winner = c.originalWinner;",
    ),
)


class MutantError(Exception):
    """A mutant could not be tried: it no longer applies, or forge failed to build."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one campaign against one mutant."""

    seed: int
    caught: bool
    reason: str
    calls: int
    seconds: float


_FAIL = re.compile(r"\[FAIL: (?P<reason>.*)\]")
_SEQUENCE = re.compile(r"\[Sequence\] \(original: (?P<original>\d+)")
_RUNS = re.compile(re.escape(INVARIANT) + r"\(\) \(runs: (?P<runs>\d+), calls: (?P<calls>\d+)")


def plant(mutant: Mutant, source: str) -> str:
    """Return ``source`` with the mutant's bug planted.

    Raises:
        MutantError: ``mutant.original`` is not in the source exactly once.
    """
    count = source.count(mutant.original)
    if count != 1:
        raise MutantError(
            f"mutant {mutant.name} does not apply: its original text appears {count} times in {CONTRACT} "
            "(expected once). Update it in scripts/forge_mutants.py to plant the same bug in the new code."
        )
    return source.replace(mutant.original, mutant.mutated)


def make_project(mutant: Mutant, root: Path) -> None:
    """Lay out a forge project in ``root``: the repository's contracts and config, one bug planted."""
    shutil.copytree(REPO_ROOT / "contracts", root / "contracts")
    shutil.copy2(REPO_ROOT / "foundry.toml", root / "foundry.toml")
    target = root / CONTRACT
    target.write_text(plant(mutant, target.read_text(encoding="utf-8")), encoding="utf-8")


def _forge_env(runs: int, depth: int) -> dict[str, str]:
    return {
        **os.environ,
        # foundry.toml names the wrapper relative to the repository root.
        "FOUNDRY_SOLC": str(SOLC_WRAPPER),
        "FOUNDRY_INVARIANT_RUNS": str(runs),
        "FOUNDRY_INVARIANT_DEPTH": str(depth),
        # Time to find the bug, not to shrink the failing sequence.
        "FOUNDRY_INVARIANT_SHRINK_RUN_LIMIT": "0",
        "NO_COLOR": "1",
    }


def build(root: Path, env: dict[str, str]) -> float:
    """Compile the project; return the seconds it took.

    Raises:
        MutantError: The compiler rejected the mutant.
    """
    start = time.monotonic()
    proc = subprocess.run([str(FORGE), "build"], cwd=root, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise MutantError(f"forge build failed in {root}:\n{proc.stdout}{proc.stderr}")
    return time.monotonic() - start


def campaign(root: Path, env: dict[str, str], seed: int, depth: int) -> Outcome:
    """Run the invariant campaign once with ``seed``, from no saved failure.

    Raises:
        MutantError: forge's output shows neither a pass nor an invariant failure.
    """
    shutil.rmtree(root / ".forge" / "cache" / "invariant", ignore_errors=True)
    command = [str(FORGE), "test", "--match-test", INVARIANT, "--fuzz-seed", hex(seed)]
    start = time.monotonic()
    proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    output = proc.stdout + proc.stderr
    runs = _RUNS.search(output)
    if runs is None:
        raise MutantError(f"unexpected forge output for seed {hex(seed)}:\n{output}")
    failure = _FAIL.search(output)
    if failure is None:
        return Outcome(seed, caught=False, reason="", calls=int(runs["calls"]), seconds=seconds)
    sequence = _SEQUENCE.search(output)
    # forge counts the runs completed before the failing one; that one stopped at
    # its failing call, the last of the (unshrunk) sequence.
    calls = int(runs["runs"]) * depth + (int(sequence["original"]) if sequence else depth)
    return Outcome(seed, caught=True, reason=failure["reason"], calls=calls, seconds=seconds)


def try_mutant(mutant: Mutant, seeds: Sequence[int], runs: int, depth: int) -> list[Outcome]:
    """Plant one bug in a temporary project and run a campaign per seed."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        root = Path(tmp)
        make_project(mutant, root)
        env = _forge_env(runs, depth)
        compiled = build(root, env)
        print(f"{mutant.name}: {mutant.bug} (compiled in {compiled:.0f} s)", flush=True)
        outcomes = []
        for seed in seeds:
            outcome = campaign(root, env, seed, depth)
            if outcome.caught:
                print(
                    f"  seed {hex(seed)}: CAUGHT after {outcome.calls} calls in {outcome.seconds:.1f} s: "
                    f"{outcome.reason}",
                    flush=True,
                )
            else:
                print(f"  seed {hex(seed)}: SURVIVED {outcome.calls} calls ({outcome.seconds:.1f} s)", flush=True)
            outcomes.append(outcome)
        return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help="mutants to try (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--seeds", type=int, default=len(DEFAULT_SEEDS), help="campaigns per mutant")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="invariant runs per campaign")
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="handler calls per run")
    args = parser.parse_args(argv)

    if args.list:
        for mutant in MUTANTS:
            print(f"{mutant.name}: {mutant.bug}")
        return 0
    by_name = {mutant.name: mutant for mutant in MUTANTS}
    unknown = [name for name in args.names if name not in by_name]
    if unknown:
        print(f"unknown mutant(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    chosen = [by_name[name] for name in args.names] or list(MUTANTS)
    seeds = [*DEFAULT_SEEDS, *range(2, 2 + max(0, args.seeds - len(DEFAULT_SEEDS)))][: args.seeds]

    print(f"{len(chosen)} mutant(s), {len(seeds)} seed(s) each, {args.runs} runs x {args.depth} calls per campaign")
    survivors: list[str] = []
    try:
        for mutant in chosen:
            outcomes = try_mutant(mutant, seeds, args.runs, args.depth)
            if not all(outcome.caught for outcome in outcomes):
                survivors.append(mutant.name)
    except MutantError as exc:
        print(exc, file=sys.stderr)
        return 2
    if survivors:
        print(f"{len(survivors)} mutant(s) survived: {', '.join(survivors)}", file=sys.stderr)
        return 1
    print(f"every mutant caught ({len(chosen)} x {len(seeds)} campaigns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
