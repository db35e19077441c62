"""Moving content between the embedded store and a real IPFS node keeps every CID."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from storage_helpers import stream, tree

from storage import CHUNK_SIZE, CorruptBlock, IpfsStore, LocalStore, transfer
from storage._car import write_car
from storage._cid import RAW, Cid


def _sample_tree(base: Path) -> Path:
    (base / "inputs" / "empty").mkdir(parents=True)
    (base / "inputs" / "x.bin").write_bytes(stream(5 * CHUNK_SIZE + 11, seed=b"interop"))
    (base / "inputs" / "y").write_bytes(b"")
    (base / "a").mkdir()
    (base / "a" / "b.txt").write_bytes(b"b\n")
    (base / "spec.json").write_bytes(b'{"k": 1}')
    (base / ".git").mkdir()
    (base / ".git" / "HEAD").write_bytes(b"ref")
    return base


@pytest.mark.parametrize("include_hidden", [False, True])
def test_both_backends_give_the_same_cids(
    local_store: LocalStore, ipfs_store: IpfsStore, tmp_path: Path, include_hidden: bool
) -> None:
    source = _sample_tree(tmp_path / "src")
    local = local_store.put_directory(source, include_hidden=include_hidden)
    remote = ipfs_store.put_directory(source, include_hidden=include_hidden)
    assert local == remote


def test_local_to_car_to_ipfs_and_back(local_store: LocalStore, ipfs_store: IpfsStore, tmp_path: Path) -> None:
    # Given content that only the local store holds (unique bytes, never added to the node)
    source = _sample_tree(tmp_path / "src")
    (source / "nonce").write_bytes(os.urandom(32))
    cid = local_store.put_directory(source)
    # When it is published to the node as a CAR
    assert transfer(cid, source=local_store, target=ipfs_store) == cid
    # Then the node serves it under the same CID
    assert cid in ipfs_store.pins()
    ipfs_store.fetch(cid, tmp_path / "from-ipfs")
    # And it comes back into a second, empty local store intact
    second = LocalStore(root=tmp_path / "second").connect()
    assert transfer(cid, source=ipfs_store, target=second) == cid
    assert second.missing(cid) == []
    second.fetch(cid, tmp_path / "from-second")
    expected = {k: v for k, v in tree(source).items() if not k.startswith(".git")}
    assert tree(tmp_path / "from-ipfs") == expected
    assert tree(tmp_path / "from-second") == expected


def test_forged_block_on_the_node_is_refused(local_store: LocalStore, ipfs_store: IpfsStore, tmp_path: Path) -> None:
    # Given a node holding bytes under a CID they do not hash to (js-ipfs takes
    # them from a CAR unchecked, as a malicious or broken node might serve them)
    genuine = b"genuine " + os.urandom(16)
    cid = Cid.of_block(RAW, genuine)
    car = io.BytesIO()
    write_car(car, [cid], [(cid, b"forged " + os.urandom(16))])
    car.seek(0)
    ipfs_store.import_car(car, pin=False)
    # When it is read or fetched into the local store, Then it is refused
    with pytest.raises(CorruptBlock):
        ipfs_store.get_bytes(cid.text())
    with pytest.raises(CorruptBlock):
        transfer(cid.text(), source=ipfs_store, target=local_store)
    assert not local_store.has(cid.text())
    with pytest.raises(CorruptBlock):
        ipfs_store.fetch(cid.text(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
