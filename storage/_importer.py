"""The UnixFS importer: bytes, files and directories to blocks and a root CID.

It reproduces ``ipfs add --cid-version=1 --raw-leaves`` (the defaults of Kubo
and js-ipfs otherwise): fixed 256 KiB chunks stored as raw blocks, the balanced
layout with at most 174 links per node, dag-pb/UnixFS file nodes carrying each
child's content size (``blocksizes``) and each link's cumulative DAG size
(``Tsize``), and a file of a single chunk stored as that raw block alone.

Memory stays flat whatever the file size: at most one pending group of 174
links per tree level is held (a 1 GB file has three levels).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from storage._cid import DAG_PB, RAW, Cid
from storage._errors import UnsupportedContent
from storage._unixfs import (
    PBLink,
    directory_estimate,
    encode_directory,
    encode_file_node,
)

__all__ = [
    "CHUNK_SIZE",
    "MAX_LINKS",
    "BlockSink",
    "Imported",
    "import_bytes",
    "import_directory",
    "import_stream",
    "scan_directory",
]

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174
HAMT_THRESHOLD = 256 * 1024


class BlockSink(Protocol):
    """Where the importer writes blocks."""

    def put_block(self, cid: Cid, data: bytes) -> None:
        """Store one block (the CID was computed from ``data``)."""


@dataclass(frozen=True, slots=True)
class Imported:
    """The root of an imported DAG.

    Attributes:
        cid: Root CID.
        tsize: Cumulative size of every block in the DAG (the parent link's Tsize).
        size: File content size (0 for a directory).
    """

    cid: Cid
    tsize: int
    size: int


class _FileBuilder:
    """Balanced layout, built bottom-up as chunks stream in.

    ``levels[0]`` holds leaves, ``levels[n]`` nodes of depth n. A full group is
    closed only when another item arrives for it, so at ``finish()`` the tree is
    exactly what go-unixfs' balanced builder makes (including one-child nodes on
    the right edge).
    """

    def __init__(self, sink: BlockSink) -> None:
        self._sink = sink
        self._levels: list[list[Imported]] = [[]]
        self._chunks = 0

    def add_chunk(self, chunk: bytes) -> None:
        cid = Cid.of_block(RAW, chunk)
        self._sink.put_block(cid, chunk)
        self._chunks += 1
        self._push(0, Imported(cid, len(chunk), len(chunk)))

    def _push(self, level: int, item: Imported) -> None:
        if level == len(self._levels):
            self._levels.append([])
        group = self._levels[level]
        if len(group) == MAX_LINKS:
            node = self._close(group)
            group.clear()
            self._push(level + 1, node)
        group.append(item)

    def _close(self, group: list[Imported]) -> Imported:
        links = [PBLink(item.cid, b"", item.tsize) for item in group]
        block = encode_file_node(links, [item.size for item in group])
        cid = Cid.of_block(DAG_PB, block)
        self._sink.put_block(cid, block)
        return Imported(cid, len(block) + sum(item.tsize for item in group), sum(item.size for item in group))

    def finish(self) -> Imported:
        if self._chunks == 0:
            self.add_chunk(b"")
        level = 0
        while True:
            group = self._levels[level]
            if level == len(self._levels) - 1 and len(group) == 1:
                return group[0]
            node = self._close(group)
            group.clear()
            self._push(level + 1, node)
            level += 1


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while True:
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            return
        while len(chunk) < CHUNK_SIZE:
            more = stream.read(CHUNK_SIZE - len(chunk))
            if not more:
                break
            chunk += more
        yield chunk
        if len(chunk) < CHUNK_SIZE:
            return


def import_stream(stream: BinaryIO, sink: BlockSink) -> Imported:
    """Import everything readable from ``stream`` as one UnixFS file."""
    builder = _FileBuilder(sink)
    for chunk in _chunks(stream):
        builder.add_chunk(chunk)
    return builder.finish()


def import_bytes(data: bytes, sink: BlockSink) -> Imported:
    """Import ``data`` as one UnixFS file."""
    builder = _FileBuilder(sink)
    view = memoryview(data)
    for start in range(0, len(data), CHUNK_SIZE):
        builder.add_chunk(bytes(view[start : start + CHUNK_SIZE]))
    return builder.finish()


def _entry_name(entry: os.DirEntry[str]) -> bytes:
    raw = os.fsencode(entry.name)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsupportedContent(
            f"File name {entry.path!r} is not valid UTF-8; UnixFS names must be. Rename it."
        ) from None
    return raw


def scan_directory(path: Path, *, include_hidden: bool) -> None:
    """Check that a tree can be stored: no symlinks, sockets, devices or non-UTF-8 names.

    Raises:
        UnsupportedContent: naming the first offending entry.
        NotADirectoryError: ``path`` is not a directory.
    """
    if not path.is_dir() or path.is_symlink():
        raise NotADirectoryError(f"{path} is not a directory")
    stack = [path]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.name.startswith(".") and not include_hidden:
                    continue
                _entry_name(entry)
                if entry.is_symlink():
                    raise UnsupportedContent(
                        f"{entry.path} is a symlink; symlinks are not stored. "
                        "Replace it with a copy of its target, or remove it."
                    )
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif not entry.is_file(follow_symlinks=False):
                    raise UnsupportedContent(
                        f"{entry.path} is not a regular file or directory (a socket, pipe or "
                        "device); remove it before storing the tree."
                    )


def import_directory(path: Path, sink: BlockSink, *, include_hidden: bool) -> Imported:
    """Import a directory tree; entries named ``.*`` are skipped unless ``include_hidden``.

    Call :func:`scan_directory` first to refuse symlinks and special files up
    front rather than half-way through.

    Raises:
        UnsupportedContent: a directory too large for a basic (unsharded) node,
            or an entry that cannot be stored.
    """
    links: list[PBLink] = []
    with os.scandir(path) as entries:
        listed = list(entries)
    for entry in listed:
        if entry.name.startswith(".") and not include_hidden:
            continue
        name = _entry_name(entry)
        if entry.is_symlink():
            raise UnsupportedContent(f"{entry.path} is a symlink; symlinks are not stored.")
        if entry.is_dir(follow_symlinks=False):
            child = import_directory(Path(entry.path), sink, include_hidden=include_hidden)
        elif entry.is_file(follow_symlinks=False):
            with open(entry.path, "rb") as stream:
                child = import_stream(stream, sink)
        else:
            raise UnsupportedContent(f"{entry.path} is not a regular file or directory.")
        links.append(PBLink(child.cid, name, child.tsize))
    if directory_estimate(links) >= HAMT_THRESHOLD:
        raise UnsupportedContent(
            f"Directory {path} has {len(links)} entries, too many for a basic UnixFS directory "
            "(IPFS would shard it as a HAMT, which this store does not build yet). "
            "Split it into sub-directories."
        )
    block = encode_directory(links)
    cid = Cid.of_block(DAG_PB, block)
    sink.put_block(cid, block)
    return Imported(cid, len(block) + sum(link.tsize for link in links), 0)
