"""The embedded store: blocks in files on disk, no daemon.

Layout under the store root::

    FORMAT                     "chain-scheduler blockstore 1"
    blocks/<xy>/<cid>          one file per block; <xy> = the CID's next-to-last two characters
    pins/<cid>                 one empty file per recursive pin
    tmp/                       partial writes, renamed into blocks/ when complete

A block is written to ``tmp/`` and renamed into place, so a reader never sees
half a block; every read re-hashes the block, so a file damaged on disk is
reported as :class:`~storage.CorruptBlock` and never returned. Several
processes may share one store.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from storage._car import read_car, write_car
from storage._cid import CID, RAW, Cid
from storage._errors import ContentNotFound, CorruptBlock, StorageError
from storage._importer import (
    Imported,
    import_bytes,
    import_directory,
    import_stream,
    scan_directory,
)
from storage._protocol import DEFAULT_MAX_SIZE
from storage._reader import dag_links, fetch_tree, inspect_tree, iter_dag, read_file

__all__ = ["LocalStore"]

_log = logging.getLogger(__name__)

_FORMAT = "chain-scheduler blockstore 1\n"


class _BackgroundWriter:
    """A block sink that writes on worker threads while the caller hashes the next chunk.

    Hashing, reading and writing all release the GIL, so on two cores an import
    runs close to the speed of the slower of sha256 and the disk. At most
    ``in_flight`` blocks wait in memory, so memory stays flat.
    """

    def __init__(self, store: LocalStore, *, workers: int = 2, in_flight: int = 8) -> None:
        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="block-writer")
        self._slots = threading.BoundedSemaphore(in_flight)
        self._errors: list[BaseException] = []

    def put_block(self, cid: Cid, data: bytes) -> None:
        if self._errors:
            raise self._errors[0]
        self._slots.acquire()
        self._pool.submit(self._write, cid, data)

    def _write(self, cid: Cid, data: bytes) -> None:
        try:
            self._store.put_block(cid, data)
        except BaseException as exc:  # noqa: BLE001 - handed to the importing thread
            self._errors.append(exc)
        finally:
            self._slots.release()

    def __enter__(self) -> _BackgroundWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pool.shutdown(wait=True)
        if self._errors and exc is None:
            raise self._errors[0]


class LocalStore:
    """A content store in a local directory, with IPFS-identical CIDs.

    Args:
        root: Directory holding the store (created by :meth:`connect`).

    Example:
        >>> store = LocalStore(root=Path("/tmp/demo")).connect()
        >>> cid = store.put_bytes(b"hello world")
        >>> cid
        'bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e'
        >>> store.get_bytes(cid)
        b'hello world'
    """

    def __init__(self, *, root: Path | str) -> None:
        self.root = Path(root)
        self._blocks = str(self.root / "blocks")
        self._pins = self.root / "pins"
        self._tmp = str(self.root / "tmp")
        self._shards: set[str] = set()
        self._counter = itertools.count()
        self._connected = False

    def __repr__(self) -> str:
        return f"LocalStore(root={str(self.root)!r})"

    # lifecycle

    def connect(self) -> Self:
        """Create the store's directories if needed; return ``self``.

        Raises:
            StorageError: the directory holds something that is not a store.
        """
        fmt = self.root / "FORMAT"
        if fmt.exists():
            found = fmt.read_text(encoding="utf-8", errors="replace")
            if found != _FORMAT:
                raise StorageError(
                    f"{self.root} holds a store in format {found.strip()!r}, expected "
                    f"{_FORMAT.strip()!r}. Point local: at another directory."
                )
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            # Several processes may open a new store at once (a devnet's daemons): the marker
            # appears whole or not at all, so none of them reads it half-written.
            tmp = self.root / f".FORMAT.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            tmp.write_text(_FORMAT, encoding="utf-8")
            try:
                os.link(tmp, fmt)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        for sub in (self._blocks, self._pins, self._tmp):
            os.makedirs(sub, exist_ok=True)
        self._connected = True
        _log.debug("local store open at %s", self.root)
        return self

    def close(self) -> None:
        """Nothing to release; present for the `ContentStore` protocol."""
        self._connected = False

    def __enter__(self) -> Self:
        return self.connect() if not self._connected else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # blocks

    def _block_path(self, text: str) -> tuple[str, str]:
        shard = os.path.join(self._blocks, text[-3:-1])
        return shard, os.path.join(shard, text)

    def put_block(self, cid: Cid, data: bytes) -> None:
        """Store one block whose CID the caller computed or verified."""
        shard, path = self._block_path(cid.text())
        try:
            if os.stat(path).st_size == len(data):
                return
        except FileNotFoundError:
            pass
        if shard not in self._shards:
            os.makedirs(shard, exist_ok=True)
            self._shards.add(shard)
        tmp = os.path.join(self._tmp, f"{os.getpid()}-{threading.get_ident()}-{next(self._counter)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def get_block(self, cid: Cid) -> bytes:
        """Read one block and verify it against its CID.

        Raises:
            ContentNotFound: the block is not in the store.
            CorruptBlock: the file's bytes do not hash to the CID.
        """
        _, path = self._block_path(cid.text())
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            raise ContentNotFound(cid.text()) from None
        cid.verify(data, path)
        return data

    def has_block(self, cid: Cid) -> bool:
        """True when the block's file exists (not verified)."""
        return os.path.exists(self._block_path(cid.text())[1])

    # content

    def _finish_put(self, root: Imported, pin: bool, what: str) -> CID:
        text = root.cid.text()
        if pin:
            (self._pins / text).touch()
        _log.debug("stored %s as %s (%d bytes)", what, text, root.size)
        return text

    def put_bytes(self, data: bytes, *, pin: bool = True) -> CID:
        """Store ``data`` as a file; return its CID."""
        with _BackgroundWriter(self) as sink:
            root = import_bytes(data, sink)
        return self._finish_put(root, pin, "bytes")

    def put_stream(self, stream: BinaryIO, *, pin: bool = True) -> CID:
        """Store everything readable from ``stream`` as a file; return its CID."""
        with _BackgroundWriter(self) as sink:
            root = import_stream(stream, sink)
        return self._finish_put(root, pin, "stream")

    def put_file(self, path: Path, *, pin: bool = True) -> CID:
        """Store a file's content; return its CID."""
        with open(path, "rb") as stream, _BackgroundWriter(self) as sink:
            root = import_stream(stream, sink)
        return self._finish_put(root, pin, str(path))

    def put_directory(self, path: Path, *, include_hidden: bool = False, pin: bool = True) -> CID:
        """Store a directory tree; return its CID (see `ContentStore.put_directory`)."""
        path = Path(path)
        scan_directory(path, include_hidden=include_hidden)
        with _BackgroundWriter(self) as sink:
            root = import_directory(path, sink, include_hidden=include_hidden)
        return self._finish_put(root, pin, str(path))

    def get_bytes(self, cid: str, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
        """Return a file's content (see `ContentStore.get_bytes`)."""
        return read_file(self, Cid.parse(cid), max_size=max_size)

    def fetch(self, cid: str, dest: Path, *, max_size: int | None = None) -> None:
        """Write a file or a tree to ``dest`` (see `ContentStore.fetch`)."""
        fetch_tree(self, Cid.parse(cid), Path(dest), max_size=max_size)

    def inspect(self, cid: str, *, max_size: int | None = None) -> int:
        """Check a file or a tree as `fetch` would, writing nothing (see `ContentStore.inspect`)."""
        return inspect_tree(self, Cid.parse(cid), max_size=max_size)

    def has(self, cid: str) -> bool:
        """True when the root block of ``cid`` is in the store."""
        return self.has_block(Cid.parse(cid))

    def missing(self, cid: str) -> list[CID]:
        """Blocks of the DAG under ``cid`` that are absent (empty when complete).

        Internal nodes are read and verified; leaves are only checked for presence.

        Raises:
            ContentNotFound: the root itself is absent.
        """
        root = Cid.parse(cid)
        if not self.has_block(root):
            raise ContentNotFound(root.text())
        absent: list[CID] = []
        seen: set[Cid] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if not self.has_block(node):
                absent.append(node.text())
            elif node.codec != RAW:
                stack.extend(dag_links(node, self.get_block(node)))
        return absent

    # pins

    def pin(self, cid: str) -> None:
        """Pin ``cid`` after checking that its whole DAG is present.

        Raises:
            ContentNotFound: a block of the DAG is missing (the first one is named).
        """
        text = Cid.parse(cid).text()
        absent = self.missing(text)
        if absent:
            raise ContentNotFound(
                absent[0],
                f"Cannot pin {text}: {len(absent)} of its blocks are missing, first {absent[0]}. "
                "Import a complete CAR of it first.",
            )
        (self._pins / text).touch()

    def unpin(self, cid: str) -> None:
        """Remove the pin on ``cid`` if there is one."""
        (self._pins / Cid.parse(cid).text()).unlink(missing_ok=True)

    def pins(self) -> frozenset[CID]:
        """The pinned CIDs."""
        return frozenset(CID(entry.name) for entry in self._pins.iterdir())

    def gc(self) -> int:
        """Delete blocks not reachable from a pin; return how many were removed.

        Blocks written after the collection started are kept, so a concurrent
        put is safe; a concurrent unpin may leave garbage for the next run.
        """
        started = time.time()
        keep: set[str] = set()
        for pinned in self.pins():
            for cid, _ in iter_dag(self, Cid.parse(pinned)):
                keep.add(cid.text())
        removed = 0
        for shard in os.scandir(self._blocks):
            for entry in os.scandir(shard.path):
                if entry.name in keep or entry.stat().st_mtime >= started:
                    continue
                os.unlink(entry.path)
                removed += 1
        _log.info("gc removed %d blocks from %s", removed, self.root)
        return removed

    def verify(self) -> list[CID]:
        """Re-hash every block; delete and return the corrupt ones (re-import to repair)."""
        corrupt: list[CID] = []
        for shard in os.scandir(self._blocks):
            for entry in os.scandir(shard.path):
                try:
                    self.get_block(Cid.parse(entry.name))
                except CorruptBlock:
                    os.unlink(entry.path)
                    corrupt.append(CID(entry.name))
        if corrupt:
            _log.warning("removed %d corrupt blocks from %s", len(corrupt), self.root)
        return corrupt

    # CAR

    def export_car(self, cid: str, out: BinaryIO) -> None:
        """Write the DAG under ``cid`` to ``out`` as CAR v1 (blocks depth-first)."""
        root = Cid.parse(cid)
        write_car(out, [root], iter_dag(self, root))

    def import_car(self, source: BinaryIO, *, pin: bool = True) -> list[CID]:
        """Load a CAR stream, verifying every block; return its roots.

        Raises:
            MalformedCar: the stream is not CAR v1/v2.
            CorruptBlock: a block does not hash to its CID; blocks before it are kept.
            ContentNotFound: ``pin`` is set and a root's DAG is incomplete.
        """
        roots, blocks = read_car(source, where="CAR stream")
        count = 0
        with _BackgroundWriter(self) as sink:
            for cid, data in blocks:
                sink.put_block(cid, data)
                count += 1
        texts = [root.text() for root in roots]
        if pin:
            for text in texts:
                self.pin(text)
        _log.debug("imported %d blocks, roots %s", count, texts)
        return texts
