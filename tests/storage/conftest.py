"""Fixtures for the storage tests: the CID vectors, a real js-ipfs node, both backends."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from storage_helpers import ROOT, VECTORS

from storage import ContentStore, IpfsStore, LocalStore


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    """CIDs a real IPFS node returned for known inputs (copied from shared/ipfs)."""
    loaded: dict[str, Any] = json.loads(VECTORS.read_text())
    return loaded


def _load_ipfs_node_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ipfs_node", ROOT / "scripts" / "ipfs_node.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ipfs_node"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ipfs_node_script() -> ModuleType:
    """scripts/ipfs_node.py as a module."""
    return _load_ipfs_node_script()


@pytest.fixture(scope="session")
def ipfs_node(ipfs_node_script: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One private js-ipfs node for the whole session, stopped at the end."""
    repo = tmp_path_factory.mktemp("ipfs-repo")
    node = ipfs_node_script.start(repo)
    try:
        yield node
    finally:
        ipfs_node_script.stop(repo)


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[LocalStore]:
    """A fresh embedded store."""
    with LocalStore(root=tmp_path / "store") as store:
        yield store


@pytest.fixture
def ipfs_store(ipfs_node: Any) -> Iterator[IpfsStore]:
    """A client of the session's node; unknown CIDs give up after 2 s."""
    with IpfsStore(api=ipfs_node.api, fetch_timeout=2.0, has_timeout=1.0) as store:
        yield store


@pytest.fixture(params=["local", "ipfs"])
def store(request: pytest.FixtureRequest) -> ContentStore:
    """Each backend in turn, for the conformance suite."""
    backend: ContentStore = request.getfixturevalue(f"{request.param}_store")
    return backend
