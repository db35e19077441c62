#!/usr/bin/env python3
"""Run slither on the contracts, offline, and fail on any finding not accepted in the code.

Slither (PyPI ``slither-analyzer``) compiles ``contracts/ChainScheduler.sol``, the deployed
market, with every source it imports (its base, its extension, the interface),
through crytic-compile, which calls the solc-js wrapper ``scripts/solc`` in the
legacy ``FILE --combined-json ...`` mode. Files in sub-directories are analysed
when a top-level file imports them. The forge tests in ``contracts/test/`` are
not analysed: they are test code (cheatcodes, pranks, try/catch on purpose)
and ship nothing.

Slither runs on a copy of ``contracts/`` in a temporary directory, outside the
repository: with the repository's ``foundry.toml`` in sight, crytic-compile
takes the ``contracts`` directory for a Foundry project and refuses it under
``--compile-force-framework solc`` ("contracts is a directory"), and for a
single file it swaps our ``--solc-args`` for ``forge config``'s. Reported paths
are the same (``contracts/...``).

A finding is accepted only by a comment beside the code, on its own line right
above the reported element (a plain ``//`` comment, not NatSpec ``///``), with
the reason after the detector name::

    // slither-disable-next-line low-level-calls (plain ETH transfer; the return value is checked)

A range takes ``// slither-disable-start DETECTOR`` ... ``// slither-disable-end DETECTOR``.

``--warn-unused-ignores`` is on, so a disable comment that no longer suppresses
anything is itself a finding and must be removed.

Detectors excluded globally (each with its reason) are listed in
``EXCLUDED_DETECTORS``.

Usage::

    python scripts/run_slither.py

Slither exits 0 and prints "analyzed (0 contracts" when it cannot read the
compiler's output, so this script also requires at least one analysed contract.

Exit codes: 0 clean, 1 findings, 2 slither failed or analysed no contract.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
SOLC_WRAPPER: Final = REPO_ROOT / "scripts" / "solc"
CONTRACTS: Final = "contracts"
#: The file slither compiles: the deployed market, which imports every other shipped source.
#: (Compiled one by one, the abstract ChainSchedulerBase would look like dead code.)
ENTRY: Final = f"{CONTRACTS}/ChainScheduler.sol"
#: Sub-directory of ``contracts/`` holding the forge tests (not analysed).
FORGE_TESTS: Final = "test"

#: Import remappings (``prefix=target``), as in ``solc`` itself. None yet. Slither
#: runs in a temporary copy of ``contracts/``, so give targets as absolute paths.
SOLC_REMAPS: Final[Sequence[str]] = ()

_ANALYZED = re.compile(r"analyzed \((\d+) contracts? with (\d+) detectors?\)")

#: Detectors switched off for the whole code base, and why. Everything else
#: must be fixed or accepted with a comment beside the code.
EXCLUDED_DETECTORS: Final[Mapping[str, str]] = {
    # Every phase deadline (bid window, commit, reveal, challenge, unbonding) is
    # a block.timestamp comparison by design: seconds mean the same on every EVM
    # chain (block numbers do not: on Arbitrum block.number is the L1 block), and
    # a proposer's few seconds of drift are negligible against windows of
    # minutes to days. Slither also taints a whole struct once one field holds a
    # timestamp, so every status/round/count comparison on the packed `Job`
    # (whose `deadline` is a timestamp) is reported: ~20 false positives.
    "timestamp": "phase deadlines are block.timestamp based by design",
    # "Dangerous strict equality" is meant for `address(this).balance == x`.
    # Here it fires only through the same whole-struct taint of `Job.deadline`
    # (block.timestamp is one of its sources) on `job.status == ...`-style
    # checks: ~20 false positives. The contract never compares ETH balances; it
    # keeps its own ledger, and the property test checks the balance against it.
    "incorrect-equality": "fires only through the timestamp taint of the packed Job struct",
}


def _load_compile_contracts() -> ModuleType:
    # scripts/ is not a package; share the pinned settings with the artifacts.
    path = Path(__file__).resolve().with_name("compile_contracts.py")
    spec = importlib.util.spec_from_file_location("compile_contracts", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def solc_args(settings: Mapping[str, Any]) -> str:
    """Translate standard-JSON compiler settings into solc command-line flags.

    Slither compiles with the same settings as the committed artifacts, so it
    analyses the code that ships (and fails where the build would fail).

    Args:
        settings: The ``settings`` of a standard-JSON input.

    Returns:
        The flags for ``--solc-args``.
    """
    args = [f"--evm-version {settings['evmVersion']}"]
    optimizer = settings.get("optimizer", {})
    if optimizer.get("enabled"):
        args.append(f"--optimize --optimize-runs {optimizer.get('runs', 200)}")
    if settings.get("viaIR"):
        args.append("--via-ir")
    bytecode_hash = settings.get("metadata", {}).get("bytecodeHash")
    if bytecode_hash:
        args.append(f"--metadata-hash {bytecode_hash}")
    return " ".join(args)


def slither_command(
    json_path: Path,
    solc: Path = SOLC_WRAPPER,
    remaps: Sequence[str] = SOLC_REMAPS,
    target: str = ENTRY,
) -> list[str]:
    """Build the slither command line.

    Args:
        json_path: Where slither writes its JSON report.
        target: What slither compiles: the market's entry file, or a directory.
        solc: The compiler command.
        remaps: Import remappings.

    Returns:
        The argv to run from the repository root.
    """
    slither = Path(sys.executable).with_name("slither")
    command = [
        str(slither) if slither.exists() else "slither",
        target,
        "--solc",
        str(solc),
        "--solc-args",
        solc_args(_load_compile_contracts().COMPILER_SETTINGS),
        # Without it crytic-compile guesses a framework from files in the tree.
        # (It still looks for a foundry.toml above the working directory, hence
        # the copy outside the repository in `run`.)
        "--compile-force-framework",
        "solc",
        "--exclude",
        ",".join(EXCLUDED_DETECTORS),
        "--warn-unused-ignores",
        "--json",
        str(json_path),
        "--fail-none",
        "--disable-color",
    ]
    if remaps:
        command += ["--solc-remaps", " ".join(remaps)]
    return command


def _findings(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    # Each top-level file is its own compilation, so a finding in a shared
    # import can be reported once per compilation: keep one per id.
    unique: dict[str, dict[str, Any]] = {}
    for finding in report.get("results", {}).get("detectors", []):
        key = finding.get("id") or json.dumps(finding, sort_keys=True)
        unique.setdefault(key, finding)
    return list(unique.values())


def _describe(finding: Mapping[str, Any]) -> str:
    head = f"[{finding.get('check')}] impact={finding.get('impact')} confidence={finding.get('confidence')}"
    body = str(finding.get("description", "")).strip()
    if finding.get("check") == "unused-ignore-directive":
        places = sorted(
            {f"{u['file']}#{u['line']}: {','.join(u['unused_detectors'])}" for u in finding["unused_ignores"]}
        )
        body += "\n\t" + "\n\t".join(places)
    return f"{head}\n{body}"


def _copy_contracts(source: Path, target: Path) -> None:
    # Everything but the forge tests, into a directory with no foundry.toml
    # above it (see the module docstring).
    def skip_tests(directory: str, names: list[str]) -> list[str]:
        return [FORGE_TESTS] if Path(directory) == source and FORGE_TESTS in names else []

    shutil.copytree(source, target, ignore=skip_tests)


def run(
    repo_root: Path = REPO_ROOT,
    solc: Path = SOLC_WRAPPER,
    remaps: Sequence[str] = SOLC_REMAPS,
) -> int:
    """Run slither on ``<repo_root>/contracts`` and print a verdict.

    Args:
        repo_root: The directory holding ``contracts/``.
        solc: The compiler command.
        remaps: Import remappings.

    Returns:
        The process exit code (see the module docstring).
    """
    with tempfile.TemporaryDirectory(prefix="slither-") as tmp:
        workdir = Path(tmp)
        _copy_contracts(repo_root / CONTRACTS, workdir / CONTRACTS)
        json_path = workdir / "report.json"
        # The market's entry file when there is one, else every file in the directory.
        target = ENTRY if (workdir / ENTRY).is_file() else CONTRACTS
        command = slither_command(json_path, solc, remaps, target)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env, check=False)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0 or not json_path.is_file():
            print(log, file=sys.stderr)
            print(f"slither failed (exit {proc.returncode}): {' '.join(command)}", file=sys.stderr)
            return 2
        report = json.loads(json_path.read_text(encoding="utf-8"))

    if not report.get("success", False):
        print(log, file=sys.stderr)
        print(f"slither reported an error: {report.get('error')}", file=sys.stderr)
        return 2
    counts = [int(m.group(1)) for m in _ANALYZED.finditer(log)]
    analysed = sum(counts)
    if not counts or analysed == 0:
        # A compiler output slither cannot read gives "analyzed (0 contracts"
        # and exit 0: never take that for a pass.
        print(log, file=sys.stderr)
        print(
            "slither analysed no contract: the compiler wrapper's output was not understood. "
            f"Check `{solc} {CONTRACTS}/<File>.sol --combined-json abi,ast,bin` by hand.",
            file=sys.stderr,
        )
        return 2

    findings = _findings(report)
    for finding in findings:
        print(_describe(finding), end="\n\n")
    excluded = ", ".join(EXCLUDED_DETECTORS)
    if findings:
        print(
            f"slither: {len(findings)} finding(s) in {analysed} analysed contract(s) (excluded: {excluded}). "
            "Fix each one, or accept it with `// slither-disable-next-line <detector> (reason)` "
            "on the line above the reported element.",
            file=sys.stderr,
        )
        return 1
    print(f"slither: no findings in {analysed} analysed contract(s) (excluded: {excluded}).")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; it takes no arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        print(__doc__, file=sys.stderr)
        return 2
    return run()


if __name__ == "__main__":
    sys.exit(main())
