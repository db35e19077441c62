"""Reading UnixFS DAGs back: bytes, files and whole trees, from verified blocks.

Both backends read through here, so the same checks apply whatever node
served the blocks: every block is verified against its CID by the source,
file sizes must add up at every level, a size limit is enforced from the root's
declared size before any chunk is read, and directory entries are refused when
they would write outside the destination.

`fetch_tree` and `inspect_tree` walk a tree with one generator (`_walk`), so a
dry run refuses exactly what an unpacking would: names that are empty, ``.``,
``..``, absolute or hold a ``/``; a name listed twice in one directory; trees
deeper than 512 levels; declared file sizes adding up past the limit; and
symlinks that lead out of the tree. Symlinks are judged lexically, against the
tree itself (not the disk): their targets are followed as the kernel would,
through the tree's own directories and links, and refused when they climb
above the tree's root (even to come back in), are absolute, or need more than
40 hops (a loop). The result does not depend on where the tree is unpacked.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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
    "inspect_tree",
    "iter_dag",
    "load_node",
    "read_file",
]

_log = logging.getLogger(__name__)

_MAX_FILE_DEPTH = 32
_MAX_TREE_DEPTH = 512
# Linux follows at most 40 symlinks while resolving one path (ELOOP beyond).
_MAX_SYMLINK_HOPS = 40


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


@dataclass(frozen=True, slots=True)
class _Entry:
    """One entry of a directory tree: its path below the root (``/``-separated) and its node."""

    path: str
    node: Node

    @property
    def target(self) -> str:
        """A symlink's target (checked by `_walk`)."""
        return self.node.data.decode("utf-8")


def _walk(source: BlockSource, root: Node, limit: int | None) -> Iterator[_Entry]:
    """Every entry below the directory ``root``, each directory before what it holds.

    Reads directory nodes and the root node of every file and symlink, never a
    file's chunks. Raises before yielding anything unsafe; the symlink check
    needs the whole tree, so it runs last, after every entry was yielded.

    Raises:
        UnsafePath: a bad name (see `_entry_name`), a symlink target that is not
            UTF-8, empty or absolute, or a symlink that leads out of the tree.
        MalformedDag: a name listed twice in one directory, or a tree too deep.
        ContentTooLarge: the declared file sizes add up to more than ``limit``.
    """
    total = 0
    kinds: dict[str, NodeKind] = {}
    links: dict[str, str] = {}
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
            path = f"{rel}/{name}" if rel else name
            child = load_node(source, link.cid)
            kinds[path] = child.kind
            if child.kind is NodeKind.FILE:
                total += child.filesize
                if limit is not None and total > limit:
                    raise ContentTooLarge(child.cid.text(), total, limit)
            elif child.kind is NodeKind.DIRECTORY:
                stack.append((child, path, depth + 1))
            else:
                links[path] = _symlink_target(child, path)
            yield _Entry(path, child)
    for path, target in sorted(links.items()):
        _check_symlink(path, target, kinds, links)


def _symlink_target(node: Node, path: str) -> str:
    try:
        target = node.data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePath(path, "the symlink target is not UTF-8") from None
    if not target or target.startswith("/") or "\x00" in target:
        raise UnsafePath(f"{path} -> {target}", "a symlink to an absolute path")
    return target


def _check_symlink(path: str, target: str, kinds: Mapping[str, NodeKind], links: Mapping[str, str]) -> None:
    """Follow ``path``'s ``target`` through the tree as the kernel would; refuse any step above the root.

    A component naming a file with more to follow ends the walk (the kernel
    stops there too); a component the tree does not hold is walked lexically,
    so a dangling ``missing/../..`` is refused as well.
    """
    where = f"{path} -> {target}"
    directory = path.split("/")[:-1]
    pending = deque(target.split("/"))
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not directory:
                raise UnsafePath(where, "a symlink that leads outside the destination")
            directory.pop()
            continue
        here = "/".join([*directory, part])
        inner = links.get(here)
        if inner is not None:
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise UnsafePath(where, f"a symlink loop (more than {_MAX_SYMLINK_HOPS} links to follow)")
            pending.extendleft(reversed(inner.split("/")))  # relative to the link's own directory
            continue
        directory.append(part)
        if kinds.get(here) is NodeKind.FILE and any(p not in ("", ".") for p in pending):
            return


def _write_file(source: BlockSource, node: Node, path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        for chunk in _file_chunks(source, node, 0):
            out.write(chunk)


def _check_file_size(node: Node, limit: int | None) -> None:
    if limit is not None and node.filesize > limit:
        raise ContentTooLarge(node.cid.text(), node.filesize, limit)


def _partial_name(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:12]}"


def fetch_tree(source: BlockSource, cid: Cid, dest: Path, *, max_size: int | None) -> None:
    """Write a file or a directory tree to ``dest``, all or nothing.

    The content is unpacked next to ``dest`` under a temporary name and renamed
    into place once complete, so ``dest`` never holds a partial tree.

    Raises:
        DestinationExists: ``dest`` exists.
        UnsafePath: an entry named ``..``/``.``/empty/absolute or containing ``/``,
            or a symlink whose target leaves the destination (see the module docstring).
        MalformedDag: a name listed twice in a directory, or sizes that do not add up.
        ContentTooLarge: the files add up to more than ``max_size`` bytes.
        NotAFile: ``cid`` is a symlink.
    """
    if dest.exists() or dest.is_symlink():
        raise DestinationExists(str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_name(dest)
    root = load_node(source, cid)
    try:
        if root.kind is NodeKind.FILE:
            _check_file_size(root, max_size)
            _write_file(source, root, str(partial))
        elif root.kind is NodeKind.DIRECTORY:
            _unpack_directory(source, root, partial, max_size)
        else:
            raise NotAFile(cid.text(), root.kind.value)
        os.rename(partial, dest)
    except BaseException:
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        raise
    _log.debug("fetched %s into %s", cid.text(), dest)


def _unpack_directory(source: BlockSource, root: Node, base: Path, limit: int | None) -> None:
    os.mkdir(base)
    symlinks: list[tuple[str, str]] = []
    for entry in _walk(source, root, limit):
        path = os.path.join(base, entry.path)
        if entry.node.kind is NodeKind.FILE:
            _write_file(source, entry.node, path)
        elif entry.node.kind is NodeKind.DIRECTORY:
            os.mkdir(path)
        else:
            symlinks.append((path, entry.target))
    # Made last, once `_walk` has checked them against the whole tree, so no file
    # or directory is ever written through one.
    for path, target in symlinks:
        os.symlink(target, path)


def inspect_tree(source: BlockSource, cid: Cid, *, max_size: int | None) -> int:
    """Check a file or a tree as `fetch_tree` would, writing nothing; return its size in bytes.

    Reads the directory nodes and the root node of every file (whose declared
    size it adds up), never a file's chunks: a chunk missing from the store, or
    one whose size contradicts its parent, is found only by `fetch_tree`.

    Raises:
        UnsafePath, MalformedDag, ContentTooLarge, NotAFile: as `fetch_tree`.
        ContentNotFound: the root or a directory, file or symlink node is missing.
    """
    root = load_node(source, cid)
    if root.kind is NodeKind.FILE:
        _check_file_size(root, max_size)
        return root.filesize
    if root.kind is not NodeKind.DIRECTORY:
        raise NotAFile(cid.text(), root.kind.value)
    return sum(entry.node.filesize for entry in _walk(source, root, max_size) if entry.node.kind is NodeKind.FILE)
