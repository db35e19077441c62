"""The embedded store's own guarantees: verified reads, streaming, pins and gc, CAR parsing."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import pytest
from storage_helpers import stream

from storage import (
    CHUNK_SIZE,
    ContentNotFound,
    CorruptBlock,
    LocalStore,
    MalformedCar,
    MalformedDag,
    StorageError,
    UnsupportedContent,
)
from storage._car import encode_header, read_car, write_car
from storage._cid import DAG_PB, RAW, Cid
from storage._unixfs import PBLink, encode_file_node


def _block_file(store: LocalStore, cid: Cid) -> Path:
    text = cid.text()
    return store.root / "blocks" / text[-3:-1] / text


def _leaves(store: LocalStore, root: str) -> list[Cid]:
    return [cid for cid in _all_blocks(store, root) if cid.codec == RAW]


def _all_blocks(store: LocalStore, root: str) -> list[Cid]:
    car = io.BytesIO()
    store.export_car(root, car)
    car.seek(0)
    _, blocks = read_car(car)
    return [cid for cid, _ in blocks]


class TestVerifiedReads:
    def test_corrupt_block_is_reported_never_returned(self, local_store: LocalStore, tmp_path: Path) -> None:
        # Given a stored file with one chunk flipped on disk
        data = stream(3 * CHUNK_SIZE)
        cid = local_store.put_bytes(data)
        victim = _block_file(local_store, _leaves(local_store, cid)[1])
        damaged = bytearray(victim.read_bytes())
        damaged[100] ^= 0x01
        victim.write_bytes(bytes(damaged))
        # When it is read, Then the corruption is raised, naming the block
        with pytest.raises(CorruptBlock) as caught:
            local_store.get_bytes(cid)
        assert caught.value.cid == victim.name
        with pytest.raises(CorruptBlock):
            local_store.fetch(cid, tmp_path / "out")
        assert not (tmp_path / "out").exists()
        # And verify() removes it, after which a put repairs the content
        assert local_store.verify() == [victim.name]
        assert local_store.put_bytes(data) == cid
        assert local_store.get_bytes(cid) == data

    def test_truncated_block_is_corrupt(self, local_store: LocalStore) -> None:
        cid = local_store.put_bytes(b"some bytes")
        path = _block_file(local_store, Cid.parse(cid))
        path.write_bytes(b"some")
        with pytest.raises(CorruptBlock):
            local_store.get_bytes(cid)

    def test_missing_block_is_not_found_and_blocks_pinning(self, local_store: LocalStore) -> None:
        cid = local_store.put_bytes(stream(2 * CHUNK_SIZE + 1), pin=False)
        leaf = _leaves(local_store, cid)[0]
        _block_file(local_store, leaf).unlink()
        with pytest.raises(ContentNotFound) as caught:
            local_store.get_bytes(cid)
        assert caught.value.cid == leaf.text()
        assert local_store.missing(cid) == [leaf.text()]
        with pytest.raises(ContentNotFound):
            local_store.pin(cid)
        assert cid not in local_store.pins()

    def test_lying_file_sizes_are_malformed(self, local_store: LocalStore) -> None:
        # A file node claiming its two chunks hold 5 bytes each when one holds 6
        first = Cid.of_block(RAW, b"12345")
        second = Cid.of_block(RAW, b"123456")
        links = [PBLink(first, b"", 5), PBLink(second, b"", 6)]
        block = encode_file_node(links, [5, 5])
        root = Cid.of_block(DAG_PB, block)
        for cid, data in ((first, b"12345"), (second, b"123456"), (root, block)):
            local_store.put_block(cid, data)
        with pytest.raises(MalformedDag, match="says 5"):
            local_store.get_bytes(root.text())

    def test_garbage_dag_pb_is_malformed(self, local_store: LocalStore) -> None:
        block = b"\xff\xff\xff"
        cid = Cid.of_block(DAG_PB, block)
        local_store.put_block(cid, block)
        with pytest.raises(MalformedDag):
            local_store.get_bytes(cid.text())


def _generated(total: int) -> io.RawIOBase:
    class Source(io.RawIOBase):
        def __init__(self) -> None:
            self.left = total
            self.pattern = os.urandom(1 << 16)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            size = min(len(buffer), self.left, len(self.pattern))
            # A running offset in front of each piece keeps every chunk distinct.
            piece = (total - self.left).to_bytes(8, "big") + self.pattern[8:size]
            buffer[:size] = piece[:size]
            self.left -= size
            return size

    return Source()


def test_streaming_import_uses_flat_memory(local_store: LocalStore) -> None:
    # 48 MiB through a stream that never holds more than 64 KiB
    total = 48 * 1024 * 1024
    tracemalloc.start()
    try:
        cid = local_store.put_stream(io.BufferedReader(_generated(total), 1 << 16))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"peak Python allocation {peak} bytes"
    # 192 distinct leaves under two nodes (174 + 18) under the root
    assert len(_all_blocks(local_store, cid)) == total // CHUNK_SIZE + 3


class TestPinsAndGc:
    def test_gc_keeps_pinned_and_removes_the_rest(self, local_store: LocalStore) -> None:
        kept = local_store.put_bytes(stream(2 * CHUNK_SIZE, seed=b"keep"))
        dropped = local_store.put_bytes(stream(2 * CHUNK_SIZE, seed=b"drop"), pin=False)
        # gc spares blocks written after it started; age them
        for shard in (local_store.root / "blocks").iterdir():
            for block in shard.iterdir():
                os.utime(block, (1, 1))
        assert local_store.gc() == 3  # the dropped file: two leaves and its root node
        assert local_store.get_bytes(kept) == stream(2 * CHUNK_SIZE, seed=b"keep")
        assert not local_store.has(dropped)

    def test_pinned_on_put_by_default(self, local_store: LocalStore) -> None:
        cid = local_store.put_bytes(b"x")
        assert local_store.pins() == {cid}


class TestCarParsing:
    def test_corrupt_block_in_car_is_refused(self, local_store: LocalStore) -> None:
        good = b"good block"
        cid = Cid.of_block(RAW, good)
        car = io.BytesIO()
        write_car(car, [cid], [(cid, b"evil block")])
        car.seek(0)
        with pytest.raises(CorruptBlock):
            local_store.import_car(car)
        assert not local_store.has(cid.text())

    @pytest.mark.parametrize(
        "payload",
        [
            b"",
            b"\x05abc",
            b"\x01\xf6",  # header is CBOR null
            encode_header([Cid.of_block(RAW, b"x")])[:-1],
            encode_header([Cid.of_block(RAW, b"x")]) + b"\x40\x01",
        ],
    )
    def test_malformed_car(self, local_store: LocalStore, payload: bytes) -> None:
        with pytest.raises(MalformedCar):
            local_store.import_car(io.BytesIO(payload))

    def test_car_v2_is_read(self, local_store: LocalStore) -> None:
        data = b"inside a v2 car"
        cid = Cid.of_block(RAW, data)
        inner = io.BytesIO()
        write_car(inner, [cid], [(cid, data)])
        payload = inner.getvalue()
        pragma = bytes.fromhex("0aa16776657273696f6e02")
        header = bytes(16) + (51).to_bytes(8, "little") + len(payload).to_bytes(8, "little")
        header += bytes(8)
        assert local_store.import_car(io.BytesIO(pragma + header + payload)) == [cid.text()]
        assert local_store.get_bytes(cid.text()) == data

    def test_incomplete_car_cannot_be_pinned(self, local_store: LocalStore) -> None:
        data = stream(2 * CHUNK_SIZE + 5)
        source = LocalStore(root=local_store.root.parent / "source").connect()
        cid = source.put_bytes(data)
        blocks = _all_blocks(source, cid)
        car = io.BytesIO()
        write_car(car, [Cid.parse(cid)], [(b, source.get_block(b)) for b in blocks[:-1]])  # drop the last leaf
        car.seek(0)
        with pytest.raises(ContentNotFound, match="missing"):
            local_store.import_car(car)


class TestPutRefusals:
    def test_symlink_in_tree(self, local_store: LocalStore, tmp_path: Path) -> None:
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "link").symlink_to("/etc/hostname")
        with pytest.raises(UnsupportedContent, match="symlink"):
            local_store.put_directory(tmp_path / "src")

    def test_fifo_in_tree(self, local_store: LocalStore, tmp_path: Path) -> None:
        (tmp_path / "src").mkdir()
        os.mkfifo(tmp_path / "src" / "pipe")
        with pytest.raises(UnsupportedContent, match="not a regular file"):
            local_store.put_directory(tmp_path / "src")

    def test_directory_too_large_for_a_basic_node(self, local_store: LocalStore, tmp_path: Path) -> None:
        (tmp_path / "src").mkdir()
        for i in range(1300):  # 1300 x (180-byte name + 36-byte CID) > 256 KiB
            (tmp_path / "src" / f"{i:0180d}").write_bytes(b"")
        with pytest.raises(UnsupportedContent, match="HAMT"):
            local_store.put_directory(tmp_path / "src")


def test_store_format_is_checked(tmp_path: Path) -> None:
    (tmp_path / "FORMAT").write_text("something else\n")
    with pytest.raises(StorageError, match="format"):
        LocalStore(root=tmp_path).connect()
