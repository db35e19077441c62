"""dag-pb nodes and UnixFS data, encoded byte for byte as an IPFS node does.

dag-pb (https://ipld.io/specs/codecs/dag-pb/spec/)::

    message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }

Links are written before Data, and a node's links are sorted by name bytes.

UnixFS (https://github.com/ipfs/specs/blob/main/UNIXFS.md), proto2, so the
repeated ``blocksizes`` are not packed::

    message Data { required DataType Type = 1; optional bytes Data = 2;
                   optional uint64 filesize = 3; repeated uint64 blocksizes = 4;
                   optional uint64 hashType = 5; optional uint64 fanout = 6;
                   optional uint32 mode = 7; optional UnixTime mtime = 8; }
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from storage._cid import DAG_PB, RAW, Cid, decode_varint, encode_varint
from storage._errors import InvalidCid, MalformedDag, UnsupportedContent

__all__ = [
    "Node",
    "NodeKind",
    "PBLink",
    "decode_node",
    "encode_directory",
    "encode_file_node",
    "pbnode_links",
]

_VARINT = 0
_LEN = 2


class NodeKind(enum.Enum):
    """What a block is, seen as UnixFS."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"


class _UnixfsType(enum.IntEnum):
    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True, slots=True)
class PBLink:
    """A dag-pb link.

    Attributes:
        cid: Target block.
        name: Entry name (bytes); empty for the chunks of a file.
        tsize: Cumulative size of the target DAG (blocks plus their children).
    """

    cid: Cid
    name: bytes
    tsize: int


@dataclass(frozen=True, slots=True)
class Node:
    """A decoded block, seen as UnixFS.

    Attributes:
        cid: The block's CID.
        kind: File, directory or symlink.
        links: The dag-pb links (empty for raw blocks).
        data: Inline file bytes (the whole file for a raw block), or a symlink's target.
        filesize: Declared total file size (files only).
        blocksizes: Declared size of each linked chunk (files only).
    """

    cid: Cid
    kind: NodeKind
    links: tuple[PBLink, ...]
    data: bytes
    filesize: int
    blocksizes: tuple[int, ...]


def _tag(field: int, wire: int) -> bytes:
    return encode_varint(field << 3 | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _tag(field, _LEN) + encode_varint(len(payload)) + payload


def _encode_link(link: PBLink) -> bytes:
    # IPFS nodes always write Name, even when empty (file chunk links).
    body = _len_field(1, link.cid.to_bytes()) + _len_field(2, link.name) + _tag(3, _VARINT) + encode_varint(link.tsize)
    return _len_field(2, body)


def _encode_pbnode(links: Sequence[PBLink], data: bytes) -> bytes:
    return b"".join(_encode_link(link) for link in links) + _len_field(1, data)


def encode_file_node(links: Sequence[PBLink], blocksizes: Sequence[int]) -> bytes:
    """Encode an internal UnixFS file node over ``links`` (chunks or sub-trees)."""
    unixfs = bytearray(_tag(1, _VARINT) + encode_varint(_UnixfsType.FILE))
    unixfs += _tag(3, _VARINT) + encode_varint(sum(blocksizes))
    for size in blocksizes:
        unixfs += _tag(4, _VARINT) + encode_varint(size)
    return _encode_pbnode(links, bytes(unixfs))


def encode_directory(links: Sequence[PBLink]) -> bytes:
    """Encode a basic (unsharded) UnixFS directory; ``links`` are sorted here by name bytes."""
    ordered = sorted(links, key=lambda link: link.name)
    unixfs = _tag(1, _VARINT) + encode_varint(_UnixfsType.DIRECTORY)
    return _encode_pbnode(ordered, unixfs)


def directory_estimate(links: Sequence[PBLink]) -> int:
    """The size estimate IPFS nodes compare with 256 KiB to decide on HAMT sharding."""
    return sum(len(link.name) + len(link.cid.to_bytes()) for link in links)


def _fields(buf: bytes | memoryview, what: str) -> Iterator[tuple[int, int, int | memoryview]]:
    view = memoryview(buf)
    pos = 0
    try:
        while pos < len(view):
            key, pos = decode_varint(view, pos)
            field, wire = key >> 3, key & 7
            if wire == _VARINT:
                value, pos = decode_varint(view, pos)
                yield field, wire, value
            elif wire == _LEN:
                length, pos = decode_varint(view, pos)
                if pos + length > len(view):
                    raise ValueError("length-delimited field runs past the end")
                yield field, wire, view[pos : pos + length]
                pos += length
            else:
                raise ValueError(f"unexpected wire type {wire} for field {field}")
    except ValueError as exc:
        raise MalformedDag(f"Bad protobuf in {what}: {exc}.") from None


def _decode_link(buf: memoryview, where: str) -> PBLink:
    cid: Cid | None = None
    name = b""
    tsize = 0
    last = 0
    for field, _wire, value in _fields(buf, where):
        if field <= last or field > 3:
            raise MalformedDag(f"Link fields out of order or unknown in {where}.")
        last = field
        if field == 1 and isinstance(value, memoryview):
            try:
                cid, end = Cid.from_bytes(value)
            except InvalidCid:
                raise MalformedDag(f"Link with an invalid CID in {where}.") from None
            if end != len(value):
                raise MalformedDag(f"Link CID has trailing bytes in {where}.")
        elif field == 2 and isinstance(value, memoryview):
            name = bytes(value)
        elif field == 3 and isinstance(value, int):
            tsize = value
        else:
            raise MalformedDag(f"Link field {field} has the wrong wire type in {where}.")
    if cid is None:
        raise MalformedDag(f"Link without a Hash in {where}.")
    return PBLink(cid, name, tsize)


def _decode_pbnode(buf: bytes, where: str) -> tuple[list[PBLink], bytes | None]:
    links: list[PBLink] = []
    data: bytes | None = None
    for field, _wire, value in _fields(buf, where):
        if field == 2 and isinstance(value, memoryview) and data is None:
            links.append(_decode_link(value, where))
        elif field == 1 and isinstance(value, memoryview) and data is None:
            data = bytes(value)
        else:
            raise MalformedDag(f"Unexpected or out-of-order field {field} in dag-pb node {where}.")
    return links, data


def pbnode_links(cid: Cid, block: bytes) -> list[PBLink]:
    """The links of a dag-pb block, whatever its Data holds.

    Raises:
        MalformedDag: the block is not valid dag-pb.
    """
    links, _ = _decode_pbnode(block, cid.text())
    return links


def decode_node(cid: Cid, block: bytes) -> Node:
    """Interpret a verified block as UnixFS.

    Raises:
        MalformedDag: the block is not valid dag-pb/UnixFS.
        UnsupportedContent: HAMT-sharded directories, metadata nodes, other codecs.
    """
    where = cid.text()
    if cid.codec == RAW:
        return Node(cid, NodeKind.FILE, (), block, len(block), ())
    if cid.codec != DAG_PB:
        raise UnsupportedContent(
            f"Block {where} is {cid.codec_name}, not UnixFS (raw or dag-pb); this store only "
            "reads files and directories."
        )
    links, data = _decode_pbnode(block, where)
    if data is None:
        raise MalformedDag(f"dag-pb node {where} carries no UnixFS data.")
    kind: _UnixfsType | None = None
    inline = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    for field, _wire, value in _fields(data, f"UnixFS data of {where}"):
        if field == 1 and isinstance(value, int):
            try:
                kind = _UnixfsType(value)
            except ValueError:
                raise MalformedDag(f"Unknown UnixFS type {value} in {where}.") from None
        elif field == 2 and isinstance(value, memoryview):
            inline = bytes(value)
        elif field == 3 and isinstance(value, int):
            filesize = value
        elif field == 4 and isinstance(value, int):
            blocksizes.append(value)
        elif field == 4 and isinstance(value, memoryview):  # tolerate packed encoding
            pos = 0
            try:
                while pos < len(value):
                    size, pos = decode_varint(value, pos)
                    blocksizes.append(size)
            except ValueError:
                raise MalformedDag(f"Bad packed blocksizes in {where}.") from None
        elif field in (5, 6, 7, 8):
            continue  # hash type, fanout, mode, mtime: not needed to read content
        else:
            raise MalformedDag(f"Unexpected UnixFS field {field} in {where}.")
    if kind is None:
        raise MalformedDag(f"UnixFS data of {where} has no Type.")
    if kind in (_UnixfsType.FILE, _UnixfsType.RAW):
        if len(blocksizes) != len(links):
            raise MalformedDag(f"File node {where} has {len(links)} links but {len(blocksizes)} block sizes.")
        total = len(inline) + sum(blocksizes)
        if filesize is not None and filesize != total:
            raise MalformedDag(f"File node {where} declares {filesize} bytes but its parts add up to {total}.")
        return Node(cid, NodeKind.FILE, tuple(links), inline, total, tuple(blocksizes))
    if kind == _UnixfsType.DIRECTORY:
        return Node(cid, NodeKind.DIRECTORY, tuple(links), b"", 0, ())
    if kind == _UnixfsType.SYMLINK:
        if links:
            raise MalformedDag(f"Symlink node {where} has links.")
        return Node(cid, NodeKind.SYMLINK, (), inline, 0, ())
    raise UnsupportedContent(
        f"Block {where} is a UnixFS {kind.name.lower().replace('_', '-')} node, which this store "
        "does not read yet (HAMT-sharded directories have more than ~4000 entries). "
        "Split the directory, or fetch it with an IPFS node."
    )
