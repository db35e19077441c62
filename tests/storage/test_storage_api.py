"""The public surface: names, CID parsing, open_store URLs, the node script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import ROOT

import storage
from storage import (
    CHUNK_SIZE,
    BackendError,
    ContentStore,
    InvalidCid,
    InvalidStoreUrl,
    IpfsStore,
    LocalStore,
    open_store,
    parse_cid,
)

HELLO = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


def test_public_surface_is_pinned() -> None:
    assert sorted(storage.__all__) == sorted(
        [
            "CHUNK_SIZE",
            "CID",
            "DEFAULT_IPFS_API",
            "DEFAULT_MAX_SIZE",
            "DEFAULT_STORE_URL",
            "MAX_LINKS",
            "STORE_URL_ENV",
            "BackendError",
            "ContentNotFound",
            "ContentStore",
            "ContentTooLarge",
            "CorruptBlock",
            "DestinationExists",
            "FetchError",
            "IntegrityError",
            "InvalidCid",
            "InvalidStoreUrl",
            "IpfsStore",
            "LocalStore",
            "MalformedCar",
            "MalformedDag",
            "NotAFile",
            "StorageError",
            "UnsafePath",
            "UnsupportedContent",
            "open_store",
            "parse_cid",
            "transfer",
        ]
    )
    for name in storage.__all__:
        assert getattr(storage, name) is not None
    for exported in vars(storage).values():
        if isinstance(exported, type) and issubclass(exported, Exception):
            assert issubclass(exported, storage.StorageError)


def test_both_backends_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(LocalStore(root=tmp_path), ContentStore)
    assert isinstance(IpfsStore(), ContentStore)


class TestParseCid:
    @pytest.mark.parametrize(
        ("text", "canonical"),
        [
            (HELLO, HELLO),
            (HELLO.upper(), HELLO),
            (f"/ipfs/{HELLO}", HELLO),
            ("zb2rhj7crUKTQYRGCRATFaQ6YFLTde2YzdqbbhAASkL9uRDXn", HELLO),
            (
                "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR",
                "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
            ),
            (
                "f01551220b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
                HELLO,
            ),
        ],
    )
    def test_spellings_of_one_cid(self, text: str, canonical: str) -> None:
        assert parse_cid(text) == canonical

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("", "empty"),
            ("hello", "multibase"),
            ("Qm" + "1" * 44, "34-byte"),
            (
                "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5",
                "bytes|base32|truncated",
            ),
            ("b" + "a" * 10, "CIDv1"),
            ("bafkrei!", "base32"),
        ],
    )
    def test_malformed(self, text: str, reason: str) -> None:
        with pytest.raises(InvalidCid, match=reason) as caught:
            parse_cid(text)
        assert caught.value.text == text
        assert "Expected a CIDv1" in str(caught.value)


class TestOpenStore:
    def test_local_url_and_bare_path(self, tmp_path: Path) -> None:
        with open_store(f"local:{tmp_path / 'a'}") as store:
            assert isinstance(store, LocalStore)
            assert store.put_bytes(b"hello world") == HELLO
        with open_store(str(tmp_path / "a")) as again:
            assert again.get_bytes(HELLO) == b"hello world"

    def test_environment_variable(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(storage.STORE_URL_ENV, f"local:{tmp_path / 'env'}")
        with open_store() as store:
            assert isinstance(store, LocalStore)
            assert store.root == tmp_path / "env"

    def test_ipfs_url(self, ipfs_node: Any) -> None:
        with open_store(f"ipfs:{ipfs_node.api}") as store:
            assert isinstance(store, IpfsStore)
            assert store.put_bytes(b"hello world") == HELLO

    def test_ipfs_http_url(self, ipfs_node: Any) -> None:
        port = ipfs_node.api.split("/")[4]
        with open_store(f"ipfs:http://127.0.0.1:{port}") as store:
            assert store.has(HELLO) in (True, False)
            assert store.put_bytes(b"hello world") == HELLO

    def test_unknown_scheme(self) -> None:
        with pytest.raises(InvalidStoreUrl, match="local:PATH"):
            open_store("s3:bucket")

    def test_unreachable_node(self) -> None:
        with pytest.raises(BackendError, match=r"ipfs_node\.py start"):
            open_store("ipfs:/ip4/127.0.0.1/tcp/9")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.one_of(
        st.integers(0, 3 * CHUNK_SIZE),
        st.sampled_from([CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE]),
    ),
    seed=st.binary(max_size=8),
)
def test_round_trip_any_size(local_store: LocalStore, size: int, seed: bytes) -> None:
    data = (seed * (size // max(len(seed), 1) + 1))[:size] if seed else bytes(size)
    cid = local_store.put_bytes(data)
    assert local_store.get_bytes(cid) == data
    assert cid.startswith("bafkrei" if size <= CHUNK_SIZE else "bafybei")


def test_node_script_cli_reports_the_running_node(ipfs_node: Any, ipfs_node_script: ModuleType) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "ipfs_node.py"),
            "status",
            "--repo",
            str(ipfs_node.repo),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert json.loads(result.stdout)["api"] == ipfs_node.api
    with open(f"/proc/{ipfs_node.pid}/environ", "rb") as environ:
        assert f"IPFS_PATH={ipfs_node.repo}".encode() in environ.read().split(b"\0")
    config = json.loads((ipfs_node.repo / "config").read_text())
    assert config["Bootstrap"] == []
    assert config["Routing"] == {"Type": "none"}
    assert config["Discovery"]["MDNS"]["Enabled"] is False
    assert all(addr.startswith("/ip4/127.0.0.1/") for addr in config["Addresses"]["Swarm"])
    assert ipfs_node.api.startswith("/ip4/127.0.0.1/")
    assert ipfs_node_script.status(ipfs_node.repo) == ipfs_node


def test_node_script_refuses_a_second_daemon(ipfs_node: Any, ipfs_node_script: ModuleType) -> None:
    with pytest.raises(ipfs_node_script.IpfsNodeError, match="already runs"):
        ipfs_node_script.start(ipfs_node.repo)
    assert os.path.exists(f"/proc/{ipfs_node.pid}")
