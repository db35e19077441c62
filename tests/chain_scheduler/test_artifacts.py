"""The committed contract artifacts match the sources, and the solc wrapper works.

The freshness tests only hash files (no compiling). The wrapper tests run the
real solc-js compiler through ``scripts/solc`` on tiny sources, about a second
each.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SOLC = REPO_ROOT / "scripts" / "solc"
MAIN_CONTRACT = "ChainScheduler"


def _load_compile_contracts() -> ModuleType:
    # scripts/ is not a package: load the script by path, as the Makefile runs it.
    path = REPO_ROOT / "scripts" / "compile_contracts.py"
    spec = importlib.util.spec_from_file_location("compile_contracts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cc = _load_compile_contracts()


@pytest.fixture
def tree_copy(tmp_path: Path) -> tuple[Path, Path]:
    """Copy contracts/ to a temporary tree, with fresh artifacts written for the copy.

    The artifacts are stand-ins (no compiling): the staleness logic only reads
    the digests and the manifest, so these tests do not depend on whether the
    committed artifacts are fresh (test_committed_artifacts_match_sources does).
    """
    contracts = tmp_path / "contracts"
    artifacts = tmp_path / "_artifacts"
    shutil.copytree(cc.CONTRACTS_DIR, contracts)
    digest = cc.sources_digest(contracts)
    source_name = f"contracts/{cc.source_files(contracts)[0].relative_to(contracts).as_posix()}"
    stand_ins = {
        name: {
            "contractName": name,
            "sourceName": source_name,
            "compiler": {"version": cc.SOLC_VERSION, "settings": dict(cc.COMPILER_SETTINGS)},
            "sources_sha256": digest,
        }
        for name in ("Alpha", "Beta")
    }
    cc.write_artifacts(stand_ins, artifacts, contracts)
    return contracts, artifacts


def _solc(*args: str, stdin: str | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SOLC), *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


# --- freshness of the committed artifacts --------------------------------------


def test_committed_artifacts_match_sources() -> None:
    reasons = cc.stale_reasons()

    assert reasons == [], "\n".join(reasons) + "\nRun: .venv/bin/python scripts/compile_contracts.py"


def test_main_contract_artifact_is_deployable() -> None:
    manifest = json.loads((cc.ARTIFACTS_DIR / cc.MANIFEST_NAME).read_text())
    assert MAIN_CONTRACT in manifest["contracts"]

    artifact = json.loads((cc.ARTIFACTS_DIR / f"{MAIN_CONTRACT}.json").read_text())

    assert artifact["sources_sha256"] == cc.sources_digest()
    assert artifact["compiler"]["version"].startswith(cc.SOLC_VERSION + "+commit.")
    assert artifact["compiler"]["settings"] == dict(cc.COMPILER_SETTINGS)
    assert re.fullmatch(r"0x[0-9a-f]{200,}", artifact["bytecode"])
    assert re.fullmatch(r"0x[0-9a-f]{200,}", artifact["deployedBytecode"])
    assert any(entry["type"] == "function" for entry in artifact["abi"])


def test_digest_of_identical_copy_is_unchanged(tree_copy: tuple[Path, Path]) -> None:
    contracts, artifacts = tree_copy

    assert cc.sources_digest(contracts) == cc.sources_digest()
    assert cc.stale_reasons(contracts, artifacts) == []


def test_one_changed_source_byte_makes_artifacts_stale(tree_copy: tuple[Path, Path]) -> None:
    # Given a fresh copy
    contracts, artifacts = tree_copy
    source = cc.source_files(contracts)[0]
    data = bytearray(source.read_bytes())

    # When one byte of one source changes (a space becomes a tab)
    index = data.index(b" ")
    data[index : index + 1] = b"\t"
    source.write_bytes(bytes(data))

    # Then the digest differs and the check names the file and the fix
    assert cc.sources_digest(contracts) != cc.sources_digest()
    name = f"contracts/{source.relative_to(contracts).as_posix()}"
    assert cc.stale_reasons(contracts, artifacts) == [f"{name} changed since the artifacts were built."]
    with pytest.raises(cc.StaleArtifacts, match=r"scripts/compile_contracts\.py"):
        cc.check(contracts, artifacts)


def test_new_or_removed_source_makes_artifacts_stale(tree_copy: tuple[Path, Path]) -> None:
    contracts, artifacts = tree_copy
    (contracts / "sub").mkdir()
    (contracts / "sub" / "Extra.sol").write_text("// SPDX-License-Identifier: MIT\n")

    assert cc.stale_reasons(contracts, artifacts) == ["contracts/sub/Extra.sol is new since the artifacts were built."]

    (contracts / "sub" / "Extra.sol").unlink()
    removed = cc.source_files(contracts)[0]
    removed.unlink()

    assert cc.stale_reasons(contracts, artifacts) == [
        f"contracts/{removed.name} was removed since the artifacts were built."
    ]


def test_forge_tests_are_not_shipped_sources(tree_copy: tuple[Path, Path]) -> None:
    # Given a fresh copy
    contracts, artifacts = tree_copy

    # When a forge test is added or edited under contracts/test/
    (contracts / "test").mkdir(exist_ok=True)
    (contracts / "test" / "New.t.sol").write_text("// SPDX-License-Identifier: MIT\n")

    # Then it is no source of the artifacts: they stay fresh
    assert all("test" not in path.relative_to(contracts).parts for path in cc.source_files(contracts))
    assert cc.sources_digest(contracts) == cc.sources_digest()
    assert cc.stale_reasons(contracts, artifacts) == []


def test_settings_and_version_are_part_of_the_digest() -> None:
    other_runs = {**cc.COMPILER_SETTINGS, "optimizer": {"enabled": True, "runs": 201}}

    assert cc.sources_digest(settings=other_runs) != cc.sources_digest()
    assert cc.sources_digest(solc_version="0.8.27") != cc.sources_digest()


def test_missing_or_mismatched_artifact_file_is_reported(tree_copy: tuple[Path, Path]) -> None:
    contracts, artifacts = tree_copy
    manifest = json.loads((artifacts / cc.MANIFEST_NAME).read_text())
    first, second = sorted(manifest["contracts"])[:2]
    (artifacts / f"{first}.json").unlink()
    tampered = json.loads((artifacts / f"{second}.json").read_text())
    tampered["sources_sha256"] = "0" * 64
    (artifacts / f"{second}.json").write_text(json.dumps(tampered))

    reasons = cc.stale_reasons(contracts, artifacts)

    assert reasons == [
        f"{artifacts / f'{first}.json'} is missing.",
        f"{artifacts / f'{second}.json'} was built from other sources than {cc.MANIFEST_NAME}.",
    ]


def test_rewrite_drops_artifacts_of_deleted_contracts(tree_copy: tuple[Path, Path]) -> None:
    contracts, artifacts = tree_copy
    (artifacts / "README.md").write_text("kept\n")
    alpha = json.loads((artifacts / "Alpha.json").read_text())

    cc.write_artifacts({"Alpha": alpha}, artifacts, contracts)

    assert sorted(p.name for p in artifacts.iterdir()) == ["Alpha.json", "README.md", cc.MANIFEST_NAME]
    assert json.loads((artifacts / cc.MANIFEST_NAME).read_text())["contracts"] == {"Alpha": alpha["sourceName"]}
    assert cc.stale_reasons(contracts, artifacts) == []


# --- the solc wrapper ---------------------------------------------------------


def test_wrapper_version_is_what_py_solc_x_expects(tmp_path: Path) -> None:
    from solcx.wrapper import get_solc_version

    result = _solc("--version", cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout.startswith("solc, the solidity compiler commandline interface\nVersion: 0.8.28+commit.")
    assert str(get_solc_version(SOLC)) == cc.SOLC_VERSION


def _write_project(root: Path) -> None:
    (root / "src" / "lib").mkdir(parents=True)
    (root / "src" / "lib" / "Math.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.28;\n"
        "library MathLib { function twice(uint256 a) internal pure returns (uint256) { return 2 * a; } }\n"
    )
    # Many functions so that the combined JSON is larger than a 64 KiB pipe buffer.
    functions = "\n".join(
        f"    function f{i}(uint256 a) external pure returns (uint256) {{ return MathLib.twice(a) + {i}; }}"
        for i in range(60)
    )
    (root / "src" / "Main.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.28;\n"
        'import {MathLib} from "mathlib/Math.sol";\n'
        f"contract Main {{\n{functions}\n}}\n"
    )


def test_wrapper_combined_json_matches_native_shape(tmp_path: Path) -> None:
    # Given a project whose import goes through a remapping, as crytic-compile calls it
    _write_project(tmp_path)

    # When compiled in the legacy combined-json mode
    result = _solc(
        "mathlib/=src/lib/",
        "src/Main.sol",
        "--combined-json",
        "abi,ast,bin,bin-runtime,srcmap,srcmap-runtime,userdoc,devdoc,hashes",
        "--allow-paths",
        f".,{tmp_path / 'src'}",
        cwd=tmp_path,
    )

    # Then stdout is one complete JSON document (not cut at 64 KiB) shaped like native solc's
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) > 65536
    output = json.loads(result.stdout)
    assert sorted(output) == ["contracts", "sourceList", "sources", "version"]
    assert sorted(output["contracts"]) == ["src/Main.sol:Main", "src/lib/Math.sol:MathLib"]
    main = output["contracts"]["src/Main.sol:Main"]
    assert sorted(main) == ["abi", "bin", "bin-runtime", "devdoc", "hashes", "srcmap", "srcmap-runtime", "userdoc"]
    assert main["hashes"]["f0(uint256)"] == "2ae1431c"
    assert re.fullmatch(r"[0-9a-f]+", main["bin-runtime"])
    assert output["sourceList"] == ["src/Main.sol", "src/lib/Math.sol"]
    assert output["sources"]["src/lib/Math.sol"]["AST"]["nodeType"] == "SourceUnit"
    assert output["sources"]["src/lib/Math.sol"]["id"] == 1


def test_wrapper_refuses_imports_outside_allowed_paths(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    project = tmp_path / "project"
    outside.mkdir()
    project.mkdir()
    (outside / "Secret.sol").write_text("pragma solidity 0.8.28; library Secret {}\n")
    (project / "A.sol").write_text(f'pragma solidity 0.8.28; import "{outside}/Secret.sol"; contract A {{}}\n')

    refused = _solc("A.sol", "--combined-json", "abi", cwd=project)
    allowed = _solc("A.sol", "--combined-json", "abi", "--allow-paths", str(outside), cwd=project)

    assert refused.returncode == 1
    assert "File outside of allowed directories" in refused.stderr
    assert refused.stdout == ""
    assert allowed.returncode == 0, allowed.stderr
    assert f"{outside}/Secret.sol:Secret" in json.loads(allowed.stdout)["contracts"]


def test_wrapper_standard_json_reads_imports_under_base_path(tmp_path: Path) -> None:
    import solcx

    _write_project(tmp_path)
    source = (tmp_path / "src" / "Main.sol").read_text()
    standard_input = {
        "language": "Solidity",
        "sources": {"src/Main.sol": {"content": source}},
        "settings": {
            "remappings": ["mathlib/=src/lib/"],
            "outputSelection": {"*": {"*": ["evm.methodIdentifiers"]}},
        },
    }

    output = solcx.compile_standard(standard_input, base_path=tmp_path, solc_binary=SOLC)

    assert output["contracts"]["src/Main.sol"]["Main"]["evm"]["methodIdentifiers"]["f59(uint256)"]
    assert sorted(output["sources"]) == ["src/Main.sol", "src/lib/Math.sol"]


def test_wrapper_reports_unknown_options_like_native_solc(tmp_path: Path) -> None:
    result = _solc("--frobnicate", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.startswith("unrecognised option '--frobnicate'")


# --- slither through the wrapper ----------------------------------------------


def _load_run_slither() -> ModuleType:
    path = REPO_ROOT / "scripts" / "run_slither.py"
    spec = importlib.util.spec_from_file_location("run_slither", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_PAYOUT = """// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

contract Payout {
    mapping(address => uint256) public credit;

    function deposit() external payable {
        credit[msg.sender] += msg.value;
    }

    function withdraw() external {
        uint256 amount = credit[msg.sender];
        credit[msg.sender] = 0;
        %s(bool ok, ) = msg.sender.call{value: amount}("");
        require(ok, "transfer failed");
    }
}
"""


def test_slither_fails_on_a_finding_until_it_is_accepted_beside_the_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rs = _load_run_slither()
    (tmp_path / "contracts").mkdir()
    contract = tmp_path / "contracts" / "Payout.sol"

    contract.write_text(_PAYOUT % "")
    assert rs.run(tmp_path) == 1
    assert "[low-level-calls]" in capsys.readouterr().out

    accepted = "// slither-disable-next-line low-level-calls (plain ETH transfer, result checked)\n        "
    contract.write_text(_PAYOUT % accepted)
    assert rs.run(tmp_path) == 0
    assert "no findings in 1 analysed contract(s)" in capsys.readouterr().out


def test_slither_that_analysed_nothing_is_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a compiler that answers --version but whose output slither cannot use
    rs = _load_run_slither()
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "Payout.sol").write_text(_PAYOUT % "")
    bogus = tmp_path / "bogus-solc"
    bogus.write_text(
        '#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Version: 0.8.28+commit.7893614a"; else echo "{}"; fi\n'
    )
    bogus.chmod(0o755)

    # When slither runs with it, it exits 0 on its own, but the script fails
    assert rs.run(tmp_path, solc=bogus) == 2
    assert "slither analysed no contract" in capsys.readouterr().err
