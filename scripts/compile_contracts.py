#!/usr/bin/env python3
"""Compile the Solidity sources into the committed artifacts of ``chain_scheduler``.

Every ``*.sol`` file under ``contracts/`` (except the forge tests in
``contracts/test/``, which do not ship) is compiled in one standard-JSON run
through py-solc-x and the solc-js wrapper ``scripts/solc``, with the pinned
compiler version and settings below. Each contract, interface and library gets
``chain_scheduler/_artifacts/<Name>.json`` (ABI, creation and runtime bytecode,
link references, method identifiers, storage layout, compiler version and
settings), and ``manifest.json`` records which contracts were written and a
digest over the sources and settings (``sources_sha256``).

Run-time code never compiles: it loads these files. The freshness check only
hashes the sources, so it is cheap enough for every test run.

Usage::

    python scripts/compile_contracts.py            # (re)write the artifacts
    python scripts/compile_contracts.py --check    # exit 1 if the artifacts are stale
    python scripts/compile_contracts.py --verify   # recompile, exit 1 unless identical

Exit codes: 0 fresh (or written), 1 stale or not reproducible, 2 compiler error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
CONTRACTS_DIR: Final = REPO_ROOT / "contracts"
ARTIFACTS_DIR: Final = REPO_ROOT / "chain_scheduler" / "_artifacts"
SOLC_WRAPPER: Final = REPO_ROOT / "scripts" / "solc"
MANIFEST_NAME: Final = "manifest.json"
ARTIFACT_FORMAT: Final = "chain-scheduler-artifact/1"
#: Sub-directory of ``contracts/`` holding the forge tests (see foundry.toml).
FORGE_TESTS_DIR: Final = "test"

#: The compiler the artifacts are built with (npm ``solc``, pinned in package.json).
SOLC_VERSION: Final = "0.8.28"

#: Compiler settings that change the bytecode. Part of the digest: changing any
#: of them makes the committed artifacts stale.
#:
#: viaIR with runs=2000. The market is two contracts since the verifier pool
#: (ChainScheduler: the lifecycle functions; ChainSchedulerExtension: the rest,
#: by delegatecall), so the lifecycle's code has room to be optimized for runs.
#: Measured with bench/gas.py (anvil, k=1 lifecycle: post, bid, commit, reveal,
#: finalize, withdraw), runtime sizes of market / extension:
#:
#:   settings          market     extension   k=1 lifecycle gas
#:   viaIR, runs=200   17,899 B   12,087 B        370,217
#:   viaIR, runs=2000  19,787 B   14,135 B        368,201
#:   viaIR, runs=5000  22,551 B   14,662 B        367,397
#:
#: runs=2000 keeps 4.8 kB of the 24,576 B limit free for what the market still
#: has to learn. viaIR costs compile time (about 15 s in solc-js against 5 s),
#: which only the compile step pays.
COMPILER_SETTINGS: Final[Mapping[str, Any]] = {
    "evmVersion": "cancun",
    "optimizer": {"enabled": True, "runs": 2000},
    "viaIR": True,
    "metadata": {"bytecodeHash": "ipfs"},
}

_OUTPUTS: Final = [
    "abi",
    "evm.bytecode.object",
    "evm.bytecode.linkReferences",
    "evm.deployedBytecode.object",
    "evm.deployedBytecode.linkReferences",
    "evm.methodIdentifiers",
    "storageLayout",
]


class ArtifactsError(Exception):
    """Root of this script's errors.

    ArtifactsError
    ├── CompilationFailed   the compiler rejected the sources
    └── StaleArtifacts      the committed artifacts do not match the sources
    """


class CompilationFailed(ArtifactsError):
    """The compiler reported errors; the message carries its diagnostics."""


class StaleArtifacts(ArtifactsError):
    """The committed artifacts were built from other sources or settings."""


def source_files(contracts_dir: Path = CONTRACTS_DIR) -> list[Path]:
    """Return every shipped Solidity source under ``contracts_dir``, sorted by relative path.

    The forge tests in ``contracts/test/`` are not shipped: they are neither
    compiled into artifacts nor part of the digest, so editing a test never
    makes the artifacts stale.

    Args:
        contracts_dir: The directory holding the contracts.

    Returns:
        Absolute paths of the ``*.sol`` files, recursively, without ``test/``.
    """
    tests = contracts_dir / FORGE_TESTS_DIR
    return sorted(
        (path for path in contracts_dir.rglob("*.sol") if not path.is_relative_to(tests)),
        key=lambda p: p.relative_to(contracts_dir).as_posix(),
    )


def _source_unit_name(path: Path, contracts_dir: Path) -> str:
    # Names are relative ("contracts/X.sol") so the bytecode's metadata hash
    # does not depend on where the repository is checked out.
    return f"contracts/{path.relative_to(contracts_dir).as_posix()}"


def sources_digest(
    contracts_dir: Path = CONTRACTS_DIR,
    settings: Mapping[str, Any] = COMPILER_SETTINGS,
    solc_version: str = SOLC_VERSION,
) -> str:
    """Hash the Solidity sources together with the compiler version and settings.

    Any change to a source byte, a file name, the set of files, the settings
    or the compiler version gives a different digest. Nothing is compiled.

    Args:
        contracts_dir: The directory holding the contracts.
        settings: The compiler settings the artifacts are built with.
        solc_version: The pinned compiler version.

    Returns:
        The SHA-256 digest as lowercase hex.
    """
    digest = hashlib.sha256()
    header = {"format": ARTIFACT_FORMAT, "solc": solc_version, "settings": settings}
    digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for path in source_files(contracts_dir):
        name = _source_unit_name(path, contracts_dir).encode()
        content = path.read_bytes()
        # Length-prefixed so that no two different trees hash the same bytes.
        digest.update(b"%d:%s%d:" % (len(name), name, len(content)))
        digest.update(content)
    return digest.hexdigest()


def _file_digests(contracts_dir: Path) -> dict[str, str]:
    return {
        _source_unit_name(path, contracts_dir): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in source_files(contracts_dir)
    }


def _standard_input(contracts_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    sources = {
        _source_unit_name(path, contracts_dir): {"content": path.read_text(encoding="utf-8")}
        for path in source_files(contracts_dir)
    }
    return {
        "language": "Solidity",
        "sources": sources,
        "settings": {
            **settings,
            "outputSelection": {"*": {"*": _OUTPUTS}},
        },
    }


def compile_all(
    contracts_dir: Path = CONTRACTS_DIR,
    solc_binary: Path = SOLC_WRAPPER,
    settings: Mapping[str, Any] = COMPILER_SETTINGS,
) -> dict[str, dict[str, Any]]:
    """Compile every source under ``contracts_dir`` and build the artifacts.

    Args:
        contracts_dir: The directory holding the contracts.
        solc_binary: The compiler command (the solc-js wrapper by default).
        settings: The compiler settings.

    Returns:
        The artifacts by contract name, ready to be written as JSON.

    Raises:
        CompilationFailed: The compiler reported errors, the version is not the
            pinned one, or two contracts share a name.
    """
    import solcx  # imported here so that --check works without py-solc-x
    from solcx.exceptions import SolcError
    from solcx.wrapper import get_solc_version

    full_version = str(get_solc_version(solc_binary, with_commit_hash=True))
    if full_version.split("+")[0] != SOLC_VERSION:
        raise CompilationFailed(
            f"{solc_binary} is solc {full_version}, expected {SOLC_VERSION}. "
            "Run `npm ci` in the repository root to install the pinned compiler."
        )
    if not source_files(contracts_dir):
        raise CompilationFailed(f"No *.sol files under {contracts_dir}.")
    try:
        output = solcx.compile_standard(
            _standard_input(contracts_dir, settings),
            base_path=contracts_dir.parent,
            allow_paths=[contracts_dir],
            solc_binary=solc_binary,
        )
    except SolcError as exc:
        raise CompilationFailed(f"solc rejected the contracts:\n{exc.message}") from exc

    digest = sources_digest(contracts_dir, settings)
    artifacts: dict[str, dict[str, Any]] = {}
    for source_name, contracts in sorted(output.get("contracts", {}).items()):
        for name, data in sorted(contracts.items()):
            if name in artifacts:
                raise CompilationFailed(
                    f"Contract name {name} is defined in both {artifacts[name]['sourceName']} and "
                    f"{source_name}; artifacts are keyed by name, so rename one of them."
                )
            evm = data["evm"]
            artifacts[name] = {
                "format": ARTIFACT_FORMAT,
                "contractName": name,
                "sourceName": source_name,
                "abi": data["abi"],
                "bytecode": "0x" + evm["bytecode"]["object"],
                "deployedBytecode": "0x" + evm["deployedBytecode"]["object"],
                "linkReferences": evm["bytecode"].get("linkReferences", {}),
                "deployedLinkReferences": evm["deployedBytecode"].get("linkReferences", {}),
                "methodIdentifiers": evm.get("methodIdentifiers", {}),
                "storageLayout": data.get("storageLayout", {}),
                "compiler": {"version": full_version, "settings": dict(settings)},
                "sources_sha256": digest,
            }
    warnings = [e["formattedMessage"] for e in output.get("errors", []) if e.get("severity") != "error"]
    for warning in warnings:
        print(warning, file=sys.stderr)
    return artifacts


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_artifacts(
    artifacts: Mapping[str, Mapping[str, Any]],
    artifacts_dir: Path = ARTIFACTS_DIR,
    contracts_dir: Path = CONTRACTS_DIR,
) -> list[Path]:
    """Write the artifacts and the manifest, removing artifacts of deleted contracts.

    The files are first written to a sibling temporary directory that then
    replaces ``artifacts_dir``, so a failure never leaves a half-written set.

    Args:
        artifacts: The artifacts by contract name, from :func:`compile_all`.
        artifacts_dir: Where the artifacts live.
        contracts_dir: The sources the artifacts were built from.

    Returns:
        The paths written.
    """
    digests = {a["sources_sha256"] for a in artifacts.values()}
    if len(digests) != 1:
        raise ValueError("artifacts must come from one compilation")
    manifest = {
        "format": ARTIFACT_FORMAT,
        "sources_sha256": digests.pop(),
        "solc": next(iter(artifacts.values()))["compiler"]["version"],
        "contracts": {name: a["sourceName"] for name, a in sorted(artifacts.items())},
        "sources": _file_digests(contracts_dir),
    }
    staging = artifacts_dir.with_name(artifacts_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, artifact in artifacts.items():
        (staging / f"{name}.json").write_text(_dump(artifact), encoding="utf-8")
    (staging / MANIFEST_NAME).write_text(_dump(manifest), encoding="utf-8")
    if artifacts_dir.exists():
        # Keep anything that is not a generated JSON file (e.g. a README).
        for extra in artifacts_dir.iterdir():
            if extra.suffix != ".json":
                shutil.move(str(extra), staging / extra.name)
        shutil.rmtree(artifacts_dir)
    staging.rename(artifacts_dir)
    return sorted(artifacts_dir.glob("*.json"))


def stale_reasons(
    contracts_dir: Path = CONTRACTS_DIR,
    artifacts_dir: Path = ARTIFACTS_DIR,
) -> list[str]:
    """Explain why the committed artifacts do not match the sources, without compiling.

    Args:
        contracts_dir: The directory holding the contracts.
        artifacts_dir: Where the artifacts live.

    Returns:
        One line per problem; empty when the artifacts are fresh.
    """
    manifest_path = artifacts_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing."]
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    reasons: list[str] = []
    expected = sources_digest(contracts_dir)
    if manifest.get("sources_sha256") != expected:
        old: dict[str, str] = manifest.get("sources", {})
        new = _file_digests(contracts_dir)
        changed = sorted(n for n in old.keys() & new.keys() if old[n] != new[n])
        for name in changed:
            reasons.append(f"{name} changed since the artifacts were built.")
        for name in sorted(new.keys() - old.keys()):
            reasons.append(f"{name} is new since the artifacts were built.")
        for name in sorted(old.keys() - new.keys()):
            reasons.append(f"{name} was removed since the artifacts were built.")
        if not reasons:
            reasons.append("The compiler version or settings changed since the artifacts were built.")
    for name in manifest.get("contracts", {}):
        path = artifacts_dir / f"{name}.json"
        if not path.is_file():
            reasons.append(f"{path} is missing.")
            continue
        artifact = json.loads(path.read_text(encoding="utf-8"))
        if artifact.get("sources_sha256") != manifest.get("sources_sha256"):
            reasons.append(f"{path} was built from other sources than {MANIFEST_NAME}.")
    return reasons


def check(contracts_dir: Path = CONTRACTS_DIR, artifacts_dir: Path = ARTIFACTS_DIR) -> None:
    """Raise when the committed artifacts are stale.

    Raises:
        StaleArtifacts: With every reason, and the command that fixes it.
    """
    reasons = stale_reasons(contracts_dir, artifacts_dir)
    if reasons:
        raise StaleArtifacts(
            "The contract artifacts in chain_scheduler/_artifacts are stale:\n  "
            + "\n  ".join(reasons)
            + "\nRun `.venv/bin/python scripts/compile_contracts.py` and commit the result."
        )


def verify(contracts_dir: Path = CONTRACTS_DIR, artifacts_dir: Path = ARTIFACTS_DIR) -> list[str]:
    """Recompile and compare with the committed artifacts.

    Returns:
        The names of the artifacts that differ from a fresh build; empty when
        the committed files are exactly what the compiler produces.
    """
    check(contracts_dir, artifacts_dir)
    built = compile_all(contracts_dir)
    differing = []
    for name, artifact in built.items():
        path = artifacts_dir / f"{name}.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != _dump(artifact):
            differing.append(name)
    return differing


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the artifacts are stale (no compiling)")
    mode.add_argument("--verify", action="store_true", help="recompile and exit 1 unless identical")
    args = parser.parse_args(argv)
    try:
        if args.check:
            check()
            print(f"Contract artifacts are fresh (sources_sha256 {sources_digest()[:16]}…).")
            return 0
        if args.verify:
            differing = verify()
            if differing:
                print(
                    f"Committed artifacts differ from a fresh build: {', '.join(differing)}. "
                    "Run `.venv/bin/python scripts/compile_contracts.py` and commit the result.",
                    file=sys.stderr,
                )
                return 1
            print("Contract artifacts are fresh and reproducible.")
            return 0
        written = write_artifacts(compile_all())
        for path in written:
            print(f"wrote {path.relative_to(REPO_ROOT)}")
        return 0
    except StaleArtifacts as exc:
        print(exc, file=sys.stderr)
        return 1
    except CompilationFailed as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
