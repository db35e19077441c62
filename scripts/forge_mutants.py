#!/usr/bin/env python3
"""Plant known bugs in a copy of the market contracts and check that the forge tests catch each.

A test proves little until it has failed on a bug. Each mutant below is one
small edit of the market's sources (``contracts/ChainScheduler*.sol``) that breaks a money, state or
verification rule. For each one this script copies ``contracts/`` (tests
included) and ``foundry.toml`` into a temporary project, applies the edit there
(the repository is never touched), compiles it with forge through
``scripts/solc``, then

* runs every forge test except the invariant campaign once (the attack tests of
  ``contracts/test/Attacks.t.sol`` and the handler coverage test, which checks
  the invariants after each of its calls; all deterministic), reporting the
  tests that failed, and
* runs the invariant campaign of ``make forge`` (same runs and depth) with a
  few seeds, shrinking off so the time is the time to find the bug, reporting
  per seed whether the invariants failed, with which error, after how many
  handler calls and how many seconds.

A mutant is caught when a deterministic test fails, or when the campaign fails
with every seed.

Usage::

    python scripts/forge_mutants.py                 # every mutant, 3 seeds each
    python scripts/forge_mutants.py --list          # the mutants and their bugs
    python scripts/forge_mutants.py finalize-twice --seeds 1 --runs 256
    python scripts/forge_mutants.py --seeds 0       # the deterministic tests only

Each mutant compiles the contract and the tests afresh (viaIR in solc-js: about
a minute), so the whole set takes about half an hour on two cores.

A mutant's ``original`` text must appear exactly once in the market's sources. When the
contract changes so that it no longer does, the script says so (exit 2): update
the mutant to plant the same bug in the new code.

Exit codes: 0 every mutant caught, 1 a mutant survived (no test failed and the
campaign passed with some seed), 2 a mutant does not apply or forge failed.
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
#: The market's sources a mutant may edit (the market, its extension and their shared base).
CONTRACTS: Final = tuple(
    Path("contracts") / name for name in ("ChainScheduler.sol", "ChainSchedulerBase.sol", "ChainSchedulerExtension.sol")
)
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
        original="_credit(terms.client, refund + pool - bonus.poolShare * votes);",
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
            "        if (_sealedWinner(job, terms)) {"
        ),
        mutated="        _requireAfter(jobId, job.deadline);\n        if (_sealedWinner(job, terms)) {",
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
        original="        p.locked -= amount;\n        p.slashed += 1;",
        mutated="        p.slashed += 1;",
    ),
    Mutant(
        name="reveal-timeout-no-slash",
        bug="a reveal timeout does not slash the slots that committed and never revealed",
        original=(
            "            if (_slots[jobId][i].state == SlotState.Committed) "
            "_slash(jobId, job, i, terms.collateral, false);\n"
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
    # Drawn verification: who may be drawn, when, and how the pool follows stake.
    Mutant(
        name="draw-picks-client",
        bug="the draw does not skip the job's client: a client in the pool can verify its own job",
        original="        if (candidate == terms.client) return false;\n",
        mutated="",
    ),
    Mutant(
        name="draw-ignores-held-slots",
        bug="_mayVerify ignores the slots already held in the job: a main provider can audit itself",
        original="            if (_slots[jobId][i].provider == candidate) return false;\n",
        mutated="",
    ),
    Mutant(
        name="slash-skips-pool-sync",
        bug="_slash takes the collateral but leaves the provider's pool weight (and the pool total) as it was",
        original="        _syncPool(s.provider, p);\n        _slashPool[jobId] += amount;",
        mutated="        _slashPool[jobId] += amount;",
    ),
    Mutant(
        name="fail-pays-pool-to-client",
        bug="_fail refunds the slash pool to the client even when someone revealed (the result for free)",
        original="        uint256 share = pool / votes;\n",
        mutated="        uint256 share = 0;\n",
    ),
    Mutant(
        name="no-quorum-pays-nothing",
        bug="a job failing without a quorum refunds the client in full: the revealed results were free",
        original="            _credit(s.provider, amount + share * weight);",
        mutated="            paid -= amount;\n            _credit(s.provider, share * weight);",
    ),
    Mutant(
        name="pool-moves-under-a-draw",
        bug="seat draws read the pool as it is now, not at the epoch's start (stake added after the hash steers them)",
        original="return node >> 224 < _epoch() ? node & WEIGHT_MASK : (node >> 112) & WEIGHT_MASK;",
        mutated="return node & WEIGHT_MASK;",
    ),
    Mutant(
        name="draw-across-epochs",
        bug="a seat draw armed in an earlier epoch is not re-armed (its hash was known before the snapshot)",
        original="if (base / EPOCH_BLOCKS != _epoch()) _armDraw(jobId, job.round);",
        mutated="if (false) _armDraw(jobId, job.round);",
    ),
    Mutant(
        name="sealed-settles-unpublished",
        bug="finalize settles a sealed result nobody published: a provider whose envelope does not open is paid",
        original="        if (_sealedWinner(job, terms)) {\n",
        mutated="        if (false) {\n",
    ),
    Mutant(
        name="publish-before-window",
        bug="a result may be published during its challenge window, where a drawn verifier can copy it",
        original="        _requireAfter(jobId, job.deadline);\n        if (bytes24(keccak256(bytes(resultCid)))",
        mutated="        if (bytes24(keccak256(bytes(resultCid)))",
    ),
    Mutant(
        name="unread-bond-to-accused",
        bug="an unread challenge's bond goes to the accused when the result stands: garbage envelopes farm bonds",
        original="        if (upheld || c.unread) {\n",
        mutated="        if (upheld) {\n",
    ),
    Mutant(
        name="draw-in-arming-block",
        bug="a draw may run in the block that armed it (its hash does not exist yet: the draw is re-armed, no revert)",
        original="if (block.number <= base) revert ChainSchedulerDrawTooEarly(jobId, base);",
        mutated="if (block.number < base) revert ChainSchedulerDrawTooEarly(jobId, base);",
    ),
    Mutant(
        name="bid-fills-drawn-round",
        bug="bid() takes audit and verifier seats again: a challenger fills the verify round with its own accounts",
        original="        if (job.round != Round.Main) revert ChainSchedulerDrawnRound(jobId);\n",
        mutated="",
    ),
    Mutant(
        name="expired-decision-tossed",
        bug="an audit decision drawn after its hash expired tosses a coin anyone could read (waiting dodges it)",
        original='if (hash != 0 && uint256(keccak256(abi.encode(random, "audit"))) % BPS >= terms.auditBps) {',
        mutated='if (uint256(keccak256(abi.encode(random, "audit"))) % BPS >= terms.auditBps) {',
    ),
    Mutant(
        name="expired-hash-lottery-drawn",
        bug="a lottery whose draw hash expired (blockhash is 0, a known value) draws its replicas anyway",
        original="if (hash == 0) _armDraw(jobId, Round.Main);",
        mutated="if (false) _armDraw(jobId, Round.Main);",
    ),
    Mutant(
        name="drawn-seat-not-redrawn",
        bug="a drawn auditor or verifier that misses its commit is slashed but its seat is not redrawn",
        original=(
            "bool reopen = (job.round != Round.Main || terms.safety != SafetyClass.Destructive) "
            "&& _reopens(job) < MAX_REOPENS;"
        ),
        mutated=(
            "bool reopen = job.round == Round.Main && terms.safety != SafetyClass.Destructive "
            "&& _reopens(job) < MAX_REOPENS;"
        ),
    ),
    Mutant(
        name="pool-weight-free-only",
        bug="the pool weighs a provider by its free stake only, not free + locked",
        original="? uint256(p.free) + p.locked : 0;",
        mutated="? uint256(p.free) : 0;",
    ),
    Mutant(
        name="unbonding-stays-in-pool",
        bug="an unbonding provider keeps its pool weight",
        original="p.capabilities & VERIFIER_BIT != 0 && p.unbondingAt == 0",
        mutated="p.capabilities & VERIFIER_BIT != 0",
    ),
    Mutant(
        name="extra-vote-not-locked",
        bug="a verifier drawn for another seat of its round gains a vote without locking another collateral",
        original=(
            "            Provider storage p = _providers[drawn];\n"
            "            p.free -= terms.collateral;\n"
            "            p.locked += terms.collateral;\n"
            "            uint256 i = _seatFor(jobId, drawn, first, end);\n"
        ),
        mutated=(
            "            Provider storage p = _providers[drawn];\n"
            "            uint256 i = _seatFor(jobId, drawn, first, end);\n"
            "            if (_slots[jobId][i].provider != drawn) {\n"
            "                p.free -= terms.collateral;\n"
            "                p.locked += terms.collateral;\n"
            "            }\n"
        ),
    ),
    Mutant(
        name="tally-counts-slots-not-votes",
        bug="the quorum counts each agreeing slot once, however many votes it holds",
        original="if (votes[j] != 0 && _matches(keys[i], keys[j], deterministic)) agree += votes[j];",
        mutated="if (votes[j] != 0 && _matches(keys[i], keys[j], deterministic)) ++agree;",
    ),
    Mutant(
        name="slash-one-collateral-per-slot",
        bug="a slot holding several votes is slashed one collateral, leaving the others locked",
        original="uint96 amount = collateral * (1 + s.extraVotes);",
        mutated="uint96 amount = collateral;",
    ),
    Mutant(
        name="pay-one-vote-per-slot",
        bug="a winner holding several votes is paid and unlocked for one",
        original="            uint256 votes = 1 + uint256(s.extraVotes);\n            uint256 amount",
        mutated="            uint256 votes = 1;\n            uint256 amount",
    ),
    Mutant(
        name="one-seat-per-account",
        bug="a member already seated in the round is refused for its other seats (splitting stake wins more seats)",
        original="        for (uint256 i = 0; i < first; ++i) {\n            if (_slots[jobId][i].provider == cand",
        mutated="        for (uint256 i = 0; i < first + 16; ++i) {\n            if (_slots[jobId][i].provider == cand",
    ),
    Mutant(
        name="redraw-of-votes-waits",
        bug="a redraw that only added votes to committed verifiers leaves the round waiting for commits",
        original="if (job.round == Round.Verify && job.committed == job.filled) _closeCommits(jobId, job, terms);",
        mutated="",
    ),
    Mutant(
        name="verify-round-not-armed",
        bug="opening a verify round does not arm its draw: it uses an older block hash, known to the challenger",
        original="        if (round == Round.Verify) _armDraw(jobId, round);\n",
        mutated="",
    ),
    Mutant(
        name="verifier-reveals-sealed",
        bug="a verifier seat may reveal the hash it saw instead of the CID: a copycat verifies without running",
        original="bool mustSeal = terms.verifiers != 0 && slot <= terms.k;",
        mutated="bool mustSeal = sealed_ && slot <= 255;",
    ),
    Mutant(
        name="main-reveals-in-the-open",
        bug="a main slot of a job with verifiers reveals its CID in the open: the verifiers can copy it",
        original="bool mustSeal = terms.verifiers != 0 && slot <= terms.k;",
        mutated="bool mustSeal = terms.verifiers != 0 && slot <= terms.k && sealed_;",
    ),
    Mutant(
        name="publish-unchecked",
        bug="publish() accepts any CID as a finalized job's result: a child job reads whatever was published",
        original="        if (bytes24(keccak256(bytes(resultCid))) != bytes24(_sealed[jobId][job.winner])) {",
        mutated="        if (bytes(resultCid).length == 0) {",
    ),
    Mutant(
        name="lottery-first-come",
        bug="the lottery seats the first k entrants: whoever enters first takes every replica",
        original="uint256 r = uint256(keccak256(abi.encode(random, seat))) % total;",
        mutated="uint256 r = 0 * total;",
    ),
    Mutant(
        name="lottery-losers-keep-collateral",
        bug="entrants the lottery did not draw keep their collateral locked",
        original="        _releaseEntries(jobId, entry, terms.collateral);\n        job.filled = terms.k;",
        mutated="        job.filled = terms.k;",
    ),
    Mutant(
        name="lottery-entries-never-close",
        bug="providers may still enter a lottery after its window, once its draw is armed and its hash known",
        original="bool open = _bidWindowOpen(job, terms) || n < terms.k;",
        mutated="bool open = true;",
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


@dataclass(frozen=True, slots=True)
class TestsOutcome:
    """The result of the deterministic tests against one mutant: the tests that failed."""

    failed: tuple[str, ...]
    passed: int
    seconds: float


_FAIL = re.compile(r"\[FAIL: (?P<reason>.*)\]")
_FAILED_TEST = re.compile(r"^\[FAIL(?::.*)?\] (?P<test>\w+)\(", re.MULTILINE)
_PASSED_TEST = re.compile(r"^\[PASS\] \w+\(", re.MULTILINE)
_SUITE = re.compile(r"Suite result: (ok|FAILED)")
_SEQUENCE = re.compile(r"\[Sequence\] \(original: (?P<original>\d+)")
_RUNS = re.compile(re.escape(INVARIANT) + r"\(\) \(runs: (?P<runs>\d+), calls: (?P<calls>\d+)")


def plant(mutant: Mutant, sources: dict[Path, str]) -> tuple[Path, str]:
    """The source file the mutant edits and its text with the bug planted.

    Raises:
        MutantError: ``mutant.original`` is not in the sources exactly once.
    """
    found = [(path, text) for path, text in sources.items() for _ in range(text.count(mutant.original))]
    if len(found) != 1:
        names = ", ".join(str(p) for p in sources)
        raise MutantError(
            f"mutant {mutant.name} does not apply: its original text appears {len(found)} times in {names} "
            "(expected once). Update it in scripts/forge_mutants.py to plant the same bug in the new code."
        )
    path, text = found[0]
    return path, text.replace(mutant.original, mutant.mutated)


def make_project(mutant: Mutant, root: Path) -> None:
    """Lay out a forge project in ``root``: the repository's contracts and config, one bug planted."""
    shutil.copytree(REPO_ROOT / "contracts", root / "contracts")
    shutil.copy2(REPO_ROOT / "foundry.toml", root / "foundry.toml")
    sources = {path: (root / path).read_text(encoding="utf-8") for path in CONTRACTS}
    path, text = plant(mutant, sources)
    (root / path).write_text(text, encoding="utf-8")


def _forge_env(runs: int, depth: int) -> dict[str, str]:
    inherited = dict(os.environ)
    return {
        **inherited,
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


def deterministic_tests(root: Path, env: dict[str, str]) -> TestsOutcome:
    """Run every forge test but the invariant campaign, once.

    Raises:
        MutantError: forge's output shows no test suite result (it did not run the tests).
    """
    command = [str(FORGE), "test", "--no-match-test", INVARIANT]
    start = time.monotonic()
    proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    output = proc.stdout + proc.stderr
    if _SUITE.search(output) is None:
        raise MutantError(f"unexpected forge output for the deterministic tests:\n{output}")
    # forge repeats the failures in a summary at the end: count each test once.
    failed = tuple(dict.fromkeys(match["test"] for match in _FAILED_TEST.finditer(output)))
    return TestsOutcome(failed=failed, passed=len(_PASSED_TEST.findall(output)), seconds=seconds)


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


def try_mutant(mutant: Mutant, seeds: Sequence[int], runs: int, depth: int) -> bool:
    """Plant one bug in a temporary project, run the deterministic tests and a campaign per seed.

    Returns whether the mutant was caught: a deterministic test failed, or every campaign did.
    """
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        root = Path(tmp)
        make_project(mutant, root)
        env = _forge_env(runs, depth)
        compiled = build(root, env)
        print(f"{mutant.name}: {mutant.bug} (compiled in {compiled:.0f} s)", flush=True)
        tests = deterministic_tests(root, env)
        if tests.failed:
            print(
                f"  tests: CAUGHT by {len(tests.failed)} ({tests.passed} passed, {tests.seconds:.1f} s): "
                f"{', '.join(tests.failed)}",
                flush=True,
            )
        else:
            print(f"  tests: all {tests.passed} passed ({tests.seconds:.1f} s)", flush=True)
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
        by_campaign = bool(outcomes) and all(outcome.caught for outcome in outcomes)
        return bool(tests.failed) or by_campaign


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help="mutants to try (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--seeds", type=int, default=len(DEFAULT_SEEDS), help="campaigns per mutant (0: the deterministic tests only)"
    )
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

    print(
        f"{len(chosen)} mutant(s): the deterministic tests, then {len(seeds)} campaign(s) each, "
        f"{args.runs} runs x {args.depth} calls per campaign"
    )
    survivors: list[str] = []
    try:
        for mutant in chosen:
            if not try_mutant(mutant, seeds, args.runs, args.depth):
                survivors.append(mutant.name)
    except MutantError as exc:
        print(exc, file=sys.stderr)
        return 2
    if survivors:
        print(f"{len(survivors)} mutant(s) survived: {', '.join(survivors)}", file=sys.stderr)
        return 1
    print(f"every mutant caught ({len(chosen)} mutants; tests once and {len(seeds)} campaign(s) each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
