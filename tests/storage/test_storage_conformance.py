"""The conformance suite: every ContentStore backend must pass these, byte for byte."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest
from storage_helpers import DagBuilder, make_vector_dir, stream, tree, vector_bytes

from storage import (
    CHUNK_SIZE,
    ContentNotFound,
    ContentStore,
    ContentTooLarge,
    DestinationExists,
    InvalidCid,
    MalformedDag,
    NotAFile,
    UnsafePath,
    parse_cid,
)
from storage._cid import RAW, Cid
from storage._unixfs import PBLink, encode_directory

UNKNOWN = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka"  # valid, never stored
EMPTY_DIR = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


class TestContentStore:
    """Run once per backend (the ``store`` fixture is parametrized)."""

    @pytest.mark.parametrize("name", ["empty", "hello", "256KiB", "256KiB+1", "10MiB", "174x256KiB+1"])
    def test_file_vectors_match_a_real_ipfs_node(self, store: ContentStore, vectors: dict[str, Any], name: str) -> None:
        # Given the bytes a real node was given
        vector = next(v for v in vectors["files"] if v["name"] == name)
        data = vector_bytes(vector["bytes"])
        # When they are put, Then the CID is the node's, and they come back intact
        cid = store.put_bytes(data)
        assert cid == vector["cid"]
        assert store.get_bytes(cid, max_size=len(data)) == data

    def test_directory_vector_and_round_trip(
        self, store: ContentStore, vectors: dict[str, Any], tmp_path: Path
    ) -> None:
        vector = vectors["directories"][0]
        source = make_vector_dir(tmp_path / "dir", vector["layout"])
        cid = store.put_directory(source)
        assert cid == vector["cid"]
        store.fetch(cid, tmp_path / "out")
        expected = tree(source)
        del expected[".hidden"]  # dotfiles are skipped unless asked for
        assert tree(tmp_path / "out") == expected
        assert expected["empty"] is None  # the empty sub-directory survived

    def test_hidden_files_kept_when_asked(self, store: ContentStore, tmp_path: Path) -> None:
        source = tmp_path / "src"
        (source / ".config").mkdir(parents=True)
        (source / ".config" / "x").write_bytes(b"secret")
        (source / "visible").write_bytes(b"v")
        skipped = store.put_directory(source)
        kept = store.put_directory(source, include_hidden=True)
        assert skipped != kept
        store.fetch(kept, tmp_path / "out")
        assert tree(tmp_path / "out") == tree(source)

    def test_put_file_and_stream_agree_with_bytes(self, store: ContentStore, tmp_path: Path) -> None:
        data = stream(3 * CHUNK_SIZE + 7, seed=b"agree")
        path = tmp_path / "f.bin"
        path.write_bytes(data)
        from_bytes = store.put_bytes(data)
        assert store.put_file(path) == from_bytes
        assert store.put_stream(io.BytesIO(data)) == from_bytes

    def test_nested_tree_with_empty_file_and_empty_dirs(self, store: ContentStore, tmp_path: Path) -> None:
        source = tmp_path / "src"
        (source / "a" / "b" / "c").mkdir(parents=True)
        (source / "a" / "empty-dir").mkdir()
        (source / "a" / "b" / "c" / "deep.bin").write_bytes(stream(2 * CHUNK_SIZE + 1))
        (source / "a" / "zero").write_bytes(b"")
        (source / "top.txt").write_bytes(b"top\n")
        (source / "\u00e9t\u00e9.txt").write_bytes(b"unicode name")
        cid = store.put_directory(source)
        store.fetch(cid, tmp_path / "out")
        assert tree(tmp_path / "out") == tree(source)

    def test_empty_directory(self, store: ContentStore, tmp_path: Path) -> None:
        (tmp_path / "nothing").mkdir()
        cid = store.put_directory(tmp_path / "nothing")
        assert cid == EMPTY_DIR
        store.fetch(cid, tmp_path / "out")
        assert tree(tmp_path / "out") == {}

    def test_large_multi_level_file_fetched_to_disk(
        self, store: ContentStore, vectors: dict[str, Any], tmp_path: Path
    ) -> None:
        # 174 chunks + 1 byte: the smallest file whose tree has two levels of nodes
        vector = next(v for v in vectors["files"] if v["name"] == "174x256KiB+1")
        data = vector_bytes(vector["bytes"])
        cid = store.put_bytes(data)
        store.fetch(cid, tmp_path / "big.bin")
        assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).digest() == hashlib.sha256(data).digest()

    def test_size_limit_is_checked_before_reading(self, store: ContentStore, monkeypatch: pytest.MonkeyPatch) -> None:
        data = stream(4 * CHUNK_SIZE)
        cid = store.put_bytes(data)
        fetched: list[Cid] = []
        original = store.get_block  # type: ignore[attr-defined]

        def spy(block_cid: Cid) -> bytes:
            fetched.append(block_cid)
            block: bytes = original(block_cid)
            return block

        monkeypatch.setattr(store, "get_block", spy)
        with pytest.raises(ContentTooLarge) as caught:
            store.get_bytes(cid, max_size=len(data) - 1)
        assert (caught.value.size, caught.value.limit) == (len(data), len(data) - 1)
        assert fetched == [Cid.parse(cid)]  # only the root node, no chunk
        assert store.get_bytes(cid, max_size=len(data)) == data

    def test_fetch_size_limit(self, store: ContentStore, tmp_path: Path) -> None:
        cid = store.put_bytes(stream(CHUNK_SIZE + 1))
        with pytest.raises(ContentTooLarge):
            store.fetch(cid, tmp_path / "dest" / "out", max_size=CHUNK_SIZE)
        assert os.listdir(tmp_path / "dest") == []  # neither the file nor a partial one

    def test_get_bytes_of_a_directory(self, store: ContentStore, tmp_path: Path) -> None:
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "f").write_bytes(b"f")
        cid = store.put_directory(tmp_path / "d")
        with pytest.raises(NotAFile):
            store.get_bytes(cid)

    @pytest.mark.timeout(60)
    def test_unknown_cid(self, store: ContentStore, tmp_path: Path) -> None:
        assert not store.has(UNKNOWN)
        with pytest.raises(ContentNotFound) as caught:
            store.get_bytes(UNKNOWN)
        assert caught.value.cid == UNKNOWN
        with pytest.raises(ContentNotFound):
            store.fetch(UNKNOWN, tmp_path / "out")
        with pytest.raises(ContentNotFound):
            store.pin(UNKNOWN)
        assert not (tmp_path / "out").exists()

    @pytest.mark.parametrize("bad", ["", "hello", "bafy", "Qm123", "bafkrei!!!", "zzzz", UNKNOWN[:-4], UNKNOWN + "aa"])
    def test_malformed_cid(self, store: ContentStore, bad: str, tmp_path: Path) -> None:
        with pytest.raises(InvalidCid):
            store.get_bytes(bad)
        with pytest.raises(InvalidCid):
            store.fetch(bad, tmp_path / "out")
        with pytest.raises(InvalidCid):
            store.has(bad)

    def test_cidv0_names_the_same_content(self, store: ContentStore, tmp_path: Path) -> None:
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "f").write_bytes(b"f")
        cid = store.put_directory(tmp_path / "d")
        digest = Cid.parse(cid).digest
        v0 = _b58encode(b"\x12\x20" + digest)
        assert v0.startswith("Qm")
        assert parse_cid(v0) == cid
        assert store.has(v0)

    def test_pin_and_unpin(self, store: ContentStore) -> None:
        cid = store.put_bytes(b"pin me", pin=False)
        assert cid not in store.pins()
        store.pin(cid)
        assert cid in store.pins()
        store.unpin(cid)
        store.unpin(cid)  # a second unpin is not an error
        assert cid not in store.pins()
        assert store.has(cid)  # unpinning does not delete

    def test_car_round_trip_within_a_store(self, store: ContentStore, tmp_path: Path) -> None:
        source = tmp_path / "src"
        (source / "sub").mkdir(parents=True)
        (source / "sub" / "x.bin").write_bytes(stream(CHUNK_SIZE * 2 + 3))
        cid = store.put_directory(source)
        car = io.BytesIO()
        store.export_car(cid, car)
        car.seek(0)
        assert store.import_car(car) == [cid]

    @pytest.mark.parametrize(
        ("entries", "reason"),
        [
            ({"..": "file"}, "parent"),
            ({".": "file"}, "itself"),
            ({"": "file"}, "empty"),
            ({"/etc/cron.d/evil": "file"}, "absolute path"),
            ({"a/../../x": "file"}, "path separator"),
            ({"link": "symlink:../../outside"}, "outside"),
            ({"link": "symlink:/etc/passwd"}, "absolute path"),
            ({"sub": {"up": "symlink:.."}, "esc": "symlink:sub/up/../outside"}, "outside"),
            # out and back in: the kernel would leave the tree, whatever it is called once unpacked
            ({"a": "file", "back": "symlink:../out/a"}, "outside"),
            ({"missing": {"x": "file"}, "up": "symlink:nowhere/../../x"}, "outside"),
            ({"a": "symlink:b", "b": "symlink:a"}, "loop"),
        ],
        ids=[
            "dotdot",
            "dot",
            "empty",
            "absolute",
            "separator",
            "up-up",
            "link-absolute",
            "link-chain",
            "out-and-back",
            "dangling-up",
            "loop",
        ],
    )
    def test_fetch_and_inspect_refuse_entries_escaping_the_destination(
        self, store: ContentStore, tmp_path: Path, entries: dict[str, Any], reason: str
    ) -> None:
        dag = DagBuilder()
        root = _build(dag, entries)
        assert store.import_car(dag.car(root), pin=False) == [root.text()]
        # The dry run refuses it, with the same error, and writes nothing
        with pytest.raises(UnsafePath, match=reason) as inspected:
            store.inspect(root.text())
        dest = tmp_path / "dest" / "out"
        with pytest.raises(UnsafePath, match=reason) as fetched:
            store.fetch(root.text(), dest)
        assert str(inspected.value) == str(fetched.value)
        assert not dest.exists()
        assert os.listdir(tmp_path / "dest") == []  # the partial tree was removed
        assert not (tmp_path / "outside").exists()

    def test_a_name_listed_twice_is_refused_by_fetch_and_inspect(self, store: ContentStore, tmp_path: Path) -> None:
        dag = DagBuilder()
        first, second = dag.file(b"first"), dag.file(b"second")
        links = [PBLink(first, b"twice", 5), PBLink(second, b"twice", 6)]
        root = dag.add(0x70, encode_directory(links))
        store.import_car(dag.car(root), pin=False)
        with pytest.raises(MalformedDag, match="'twice' twice") as inspected:
            store.inspect(root.text())
        with pytest.raises(MalformedDag, match="'twice' twice") as fetched:
            store.fetch(root.text(), tmp_path / "out")
        assert str(inspected.value) == str(fetched.value)
        assert not (tmp_path / "out").exists()

    def test_inspect_accepts_links_that_stay_inside_and_gives_the_size(
        self, store: ContentStore, tmp_path: Path
    ) -> None:
        dag = DagBuilder()
        entries = {
            "a.txt": "file",  # 4 bytes
            "d": {"f": "12345678"},
            "sub": {"link": "symlink:../a.txt", "loop-free": "symlink:../d/../d/f"},
            "l": "symlink:d",
            "m": "symlink:l/f",
            "through-a-file": "symlink:a.txt/../../../x",  # the kernel stops at the file: harmless
        }
        root = _build(dag, entries)
        store.import_car(dag.car(root), pin=False)
        assert store.inspect(root.text()) == 4 + 8
        store.fetch(root.text(), tmp_path / "out")
        assert (tmp_path / "out" / "m").read_bytes() == b"12345678"

    def test_inspect_reads_no_chunk_and_agrees_with_fetch_on_sizes(
        self, store: ContentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        source = tmp_path / "src"
        (source / "sub").mkdir(parents=True)
        (source / "big.bin").write_bytes(stream(3 * CHUNK_SIZE + 5))
        (source / "sub" / "small.txt").write_bytes(b"small")
        cid = store.put_directory(source)
        small = Cid.parse(store.put_bytes(b"small"))  # a one-block file: its root is its only chunk
        size = 3 * CHUNK_SIZE + 5 + 5
        read: list[Cid] = []
        original = store.get_block  # type: ignore[attr-defined]

        def spy(block_cid: Cid) -> bytes:
            read.append(block_cid)
            block: bytes = original(block_cid)
            return block

        monkeypatch.setattr(store, "get_block", spy)
        assert store.inspect(cid) == size
        assert store.inspect(cid, max_size=size) == size
        assert [c for c in read if c.codec == RAW and c != small] == []  # not one chunk of big.bin
        with pytest.raises(ContentTooLarge) as caught:
            store.inspect(cid, max_size=size - 1)
        assert (caught.value.size, caught.value.limit) == (size, size - 1)
        with pytest.raises(ContentTooLarge):
            store.fetch(cid, tmp_path / "out", max_size=size - 1)
        single = store.put_bytes(b"0123456789")
        assert store.inspect(single) == 10
        with pytest.raises(ContentTooLarge):
            store.inspect(single, max_size=9)
        assert not (tmp_path / "out").exists()

    @pytest.mark.timeout(60)
    def test_inspect_an_unknown_cid_or_a_symlink(self, store: ContentStore) -> None:
        with pytest.raises(ContentNotFound):
            store.inspect(UNKNOWN)
        with pytest.raises(InvalidCid):
            store.inspect("bafy")
        dag = DagBuilder()
        link = dag.symlink("a")
        store.import_car(dag.car(link), pin=False)
        with pytest.raises(NotAFile):
            store.inspect(link.text())

    def test_fetch_keeps_symlinks_inside_the_destination(self, store: ContentStore, tmp_path: Path) -> None:
        dag = DagBuilder()
        root = _build(dag, {"a.txt": "file", "sub": {"link": "symlink:../a.txt"}})
        store.import_car(dag.car(root), pin=False)
        store.fetch(root.text(), tmp_path / "out")
        assert os.readlink(tmp_path / "out" / "sub" / "link") == "../a.txt"
        assert (tmp_path / "out" / "sub" / "link").read_bytes() == b"file"

    def test_fetch_never_overwrites(self, store: ContentStore, tmp_path: Path) -> None:
        cid = store.put_bytes(b"new")
        (tmp_path / "taken").write_bytes(b"old")
        with pytest.raises(DestinationExists):
            store.fetch(cid, tmp_path / "taken")
        assert (tmp_path / "taken").read_bytes() == b"old"


def _build(dag: DagBuilder, entries: dict[str, Any]) -> Cid:
    children: dict[str, Cid] = {}
    for name, spec in entries.items():
        if isinstance(spec, dict):
            children[name] = _build(dag, spec)
        elif spec.startswith("symlink:"):
            children[name] = dag.symlink(spec.removeprefix("symlink:"))
        else:
            children[name] = dag.file(spec.encode())
    return dag.directory(children)


def _b58encode(raw: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number = int.from_bytes(raw, "big")
    out = ""
    while number:
        number, rem = divmod(number, 58)
        out = alphabet[rem] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out
