"""Reading UnixFS DAGs back: bytes, files and whole trees, from verified blocks.

Both backends read through here, so the same checks apply whatever node
served the blocks: every block is verified against its CID by the source,
file sizes must add up at every level, a size limit is enforced from the root's
declared size before any chunk is read, and directory entries are refused when
they would write outside the destination.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from storage._cid import DAG_PB, RAW, Cid
from storage._errors import (
    ContentTooLarge,
    DestinationExists,
    MalformedDag,
    NotAFile,
    UnsafePath,
    UnsupportedContent,
)
from storage._unixfs import Node, NodeKind, decode_node, pbnode_links

__all__ = [
    "BlockSource",
    "dag_links",
    "fetch_tree",
    "iter_dag",
    "load_node",
    "read_file",
]

_log = logging.getLogger(__name__)

_MAX_FILE_DEPTH = 32
_MAX_TREE_DEPTH = 512


class BlockSource(Protocol):
    """Somewhere to read verified blocks from."""

    def get_block(self, cid: Cid) -> bytes:
        """Return the block's bytes, verified against ``cid``.

        Raises:
            ContentNotFound: the block is not available.
            CorruptBlock: the bytes do not match the CID.
        """


def load_node(source: BlockSource, cid: Cid) -> Node:
    """Fetch and decode one block as UnixFS."""
    return decode_node(cid, source.get_block(cid))


def dag_links(cid: Cid, block: bytes) -> list[Cid]:
    """The CIDs a block links to (none for raw blocks).

    Raises:
        UnsupportedContent: a codec other than raw or dag-pb.
    """
    if cid.codec == RAW:
        return []
    if cid.codec == DAG_PB:
        return [link.cid for link in pbnode_links(cid, block)]
    raise UnsupportedContent(f"Block {cid.text()} is {cid.codec_name}; this store only walks raw and dag-pb DAGs.")


def iter_dag(source: BlockSource, root: Cid) -> Iterator[tuple[Cid, bytes]]:
    """Every block of a DAG once, depth-first, parents before children (CAR order)."""
    seen: set[Cid] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        block = source.get_block(cid)
        yield cid, block
        stack.extend(reversed(dag_links(cid, block)))


def _file_chunks(source: BlockSource, node: Node, depth: int) -> Iterator[bytes]:
    if node.data:
        yield node.data
    if depth > _MAX_FILE_DEPTH:
        raise MalformedDag(f"File DAG under {node.cid.text()} is deeper than {_MAX_FILE_DEPTH} levels.")
    for link, expected in zip(node.links, node.blocksizes, strict=True):
        child = load_node(source, link.cid)
        if child.kind is not NodeKind.FILE:
            raise MalformedDag(f"File node {node.cid.text()} links to a {child.kind.value}.")
        # decode_node already checked that each node's parts add up to its size,
        # so checking each child against the parent's blocksize bounds the total.
        if child.filesize != expected:
            raise MalformedDag(
                f"Chunk {link.cid.text()} holds {child.filesize} bytes; its parent {node.cid.text()} says {expected}."
            )
        yield from _file_chunks(source, child, depth + 1)


def file_size(source: BlockSource, cid: Cid) -> tuple[Node, int]:
    """The root node and declared content size of a file.

    Raises:
        NotAFile: ``cid`` is a directory or a symlink.
    """
    node = load_node(source, cid)
    if node.kind is not NodeKind.FILE:
        raise NotAFile(cid.text(), node.kind.value)
    return node, node.filesize


def read_file(source: BlockSource, cid: Cid, *, max_size: int) -> bytes:
    """The content of a UnixFS file, refused up front when over ``max_size``.

    Raises:
        ContentTooLarge: the declared size is over the limit (no chunk is read).
        NotAFile: ``cid`` is a directory or a symlink.
    """
    node, size = file_size(source, cid)
    if size > max_size:
        raise ContentTooLarge(cid.text(), size, max_size)
    return b"".join(_file_chunks(source, node, 0))


def _entry_name(raw: bytes, parent: str) -> str:
    shown = raw.decode("utf-8", "backslashreplace")
    where = f"{parent}/{shown}" if parent else shown
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePath(where, "the name is not UTF-8") from None
    if not name:
        raise UnsafePath(where, "the name is empty")
    if name.startswith("/"):
        raise UnsafePath(shown, "an absolute path")
    if name in (".", ".."):
        raise UnsafePath(where, "it names the directory itself or its parent")
    if "/" in name or "\x00" in name:
        raise UnsafePath(where, "the name contains a path separator or NUL")
    return name


def _write_file(source: BlockSource, node: Node, path: str, budget: list[int], limit: int | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        if limit is not None:
            budget[0] += node.filesize
            if budget[0] > limit:
                raise ContentTooLarge(node.cid.text(), budget[0], limit)
        for chunk in _file_chunks(source, node, 0):
            out.write(chunk)


def _partial_name(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:12]}"


def fetch_tree(source: BlockSource, cid: Cid, dest: Path, *, max_size: int | None) -> None:
    """Write a file or a directory tree to ``dest``, all or nothing.

    The content is unpacked next to ``dest`` under a temporary name and renamed
    into place once complete, so ``dest`` never holds a partial tree.

    Raises:
        DestinationExists: ``dest`` exists.
        UnsafePath: an entry named ``..``/``.``/empty/absolute or containing ``/``,
            or a symlink whose target leaves the destination.
        ContentTooLarge: the files add up to more than ``max_size`` bytes.
    """
    if dest.exists() or dest.is_symlink():
        raise DestinationExists(str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_name(dest)
    root = load_node(source, cid)
    budget = [0]
    try:
        if root.kind is NodeKind.FILE:
            _write_file(source, root, str(partial), budget, max_size)
        elif root.kind is NodeKind.DIRECTORY:
            _unpack_directory(source, root, partial, budget, max_size)
        else:
            raise NotAFile(cid.text(), root.kind.value)
        os.rename(partial, dest)
    except BaseException:
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        raise
    _log.debug("fetched %s into %s (%d bytes)", cid.text(), dest, budget[0])


def _unpack_directory(source: BlockSource, root: Node, base: Path, budget: list[int], limit: int | None) -> None:
    os.mkdir(base)
    symlinks: list[tuple[str, str]] = []
    stack: list[tuple[Node, str, int]] = [(root, "", 0)]
    while stack:
        node, rel, depth = stack.pop()
        if depth > _MAX_TREE_DEPTH:
            raise MalformedDag(f"Directory tree under {root.cid.text()} is deeper than {_MAX_TREE_DEPTH}.")
        seen: set[str] = set()
        for link in node.links:
            name = _entry_name(link.name, rel)
            if name in seen:
                raise MalformedDag(f"Directory {node.cid.text()} lists {name!r} twice.")
            seen.add(name)
            child_rel = f"{rel}/{name}" if rel else name
            path = os.path.join(base, child_rel)
            child = load_node(source, link.cid)
            if child.kind is NodeKind.FILE:
                _write_file(source, child, path, budget, limit)
            elif child.kind is NodeKind.DIRECTORY:
                os.mkdir(path)
                stack.append((child, child_rel, depth + 1))
            else:
                try:
                    target = child.data.decode("utf-8")
                except UnicodeDecodeError:
                    raise UnsafePath(child_rel, "the symlink target is not UTF-8") from None
                if not target or target.startswith("/") or "\x00" in target:
                    raise UnsafePath(f"{child_rel} -> {target}", "a symlink to an absolute path")
                symlinks.append((path, target))
    # Symlinks are made last, so no file or directory is ever written through
    # one, and are checked against the finished tree, so chains are resolved.
    for path, target in symlinks:
        os.symlink(target, path)
    real_base = os.path.realpath(base)
    for path, target in symlinks:
        resolved = os.path.realpath(path)
        if resolved != real_base and not resolved.startswith(real_base + os.sep):
            rel = os.path.relpath(path, base)
            raise UnsafePath(f"{rel} -> {target}", "a symlink that leads outside the destination")
