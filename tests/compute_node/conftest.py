"""Fixtures for the provider node's tests.

The Wasm example jobs are built once per session from ``examples/wasm/*.c``
by ``scripts/build_examples.py`` (a no-op when the modules are up to date).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from compute_node.executors._base import ExecutionRequest
from compute_node.executors._wasm import WasmExecutor

ROOT = Path(__file__).resolve().parents[2]
WASM_BUILD_DIR = ROOT / "examples" / "wasm" / "build"
TEST_SEED = bytes(range(32))

RequestFactory = Callable[..., ExecutionRequest]


def _content_id(path: Path) -> str:
    if not path.exists():
        return f"missing-{path.name}"
    return "sha256-" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def wasm_examples() -> dict[str, Path]:
    """Example name (``wordcount``, ``pi``, ...) to its built ``.wasm`` module."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_examples.py"), "--quiet", "--wasm-only"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the Wasm examples failed:\n{proc.stderr}", pytrace=False)
    modules = {p.stem: p for p in WASM_BUILD_DIR.glob("*.wasm")}
    assert {"noop", "wordcount", "sha256sum", "pi", "miner", "wordfreq", "merge", "ga"} <= modules.keys()
    return modules


@pytest.fixture(scope="session")
def wasm_executor() -> Iterator[WasmExecutor]:
    """One executor shared by the session, so its module cache stays warm."""
    executor = WasmExecutor()
    yield executor
    executor.close()


@pytest.fixture
def make_request(tmp_path: Path) -> RequestFactory:
    """Build an ExecutionRequest with test defaults and fresh directories.

    Keyword arguments override the defaults. ``inputs`` may be a mapping of
    relative path to bytes, written into a fresh inputs directory. Each call
    gets its own outputs directory.
    """
    counter = iter(range(1_000_000))

    def factory(
        artifact: Path,
        *,
        inputs: dict[str, bytes] | None = None,
        inputs_dir: Path | None = None,
        **overrides: object,
    ) -> ExecutionRequest:
        n = next(counter)
        if inputs_dir is None:
            inputs_dir = tmp_path / f"inputs-{n}"
            inputs_dir.mkdir()
            for name, data in (inputs or {}).items():
                target = inputs_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        fields: dict[str, object] = {
            "job_id": 1,
            "artifact": artifact,
            # Content-derived, like a real CID: the executor caches by it.
            "artifact_cid": _content_id(artifact),
            "args": (),
            "inputs_dir": inputs_dir,
            "outputs_dir": tmp_path / f"outputs-{n}",
            "seed": TEST_SEED,
            "max_units": 10_000_000_000,
            "memory_limit": 64 * 1024 * 1024,
            "timeout": 10.0,
        }
        fields.update(overrides)
        return ExecutionRequest(**fields)  # type: ignore[arg-type]

    return factory
