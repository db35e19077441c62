"""CAR (Content Addressable aRchive) v1 writing and v1/v2 reading, streamed.

CAR v1 (https://ipld.io/specs/transport/car/carv1/)::

    varint(len(header)) dag-cbor{"roots": [CID...], "version": 1}
    then per block: varint(len(cid) + len(data)) cid data

A CAR v2 file wraps a CAR v1 payload after an 11-byte pragma and a 40-byte
header; reading skips to the payload. Every block read is verified against its
CID before it is handed on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO, cast

from storage._cid import Cid, decode_varint, encode_varint
from storage._errors import InvalidCid, MalformedCar

__all__ = [
    "MAX_BLOCK_SIZE",
    "read_car",
    "write_car",
]

MAX_BLOCK_SIZE = 4 * 1024 * 1024
"""Largest block accepted from a CAR or a node (IPFS itself refuses blocks over 2 MiB)."""

_MAX_HEADER = 1024 * 1024
_CARV2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")
_CARV2_HEADER = 40
_CID_TAG = 42


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * width):
            return bytes([major << 5 | info]) + value.to_bytes(width, "big")
    raise ValueError("CBOR argument too large")


def _cbor_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _cbor_head(3, len(raw)) + raw


def encode_header(roots: Sequence[Cid]) -> bytes:
    """The dag-cbor CAR v1 header (map keys in dag-cbor canonical order)."""
    body = bytearray(_cbor_head(5, 2))
    body += _cbor_text("roots") + _cbor_head(4, len(roots))
    for root in roots:
        raw = b"\x00" + root.to_bytes()
        body += _cbor_head(6, _CID_TAG) + _cbor_head(2, len(raw)) + raw
    body += _cbor_text("version") + _cbor_head(0, 1)
    return encode_varint(len(body)) + bytes(body)


def write_car(out: BinaryIO, roots: Sequence[Cid], blocks: Iterable[tuple[Cid, bytes]]) -> int:
    """Write a CAR v1 stream; return the number of bytes written."""
    written = out.write(encode_header(roots)) or 0
    for cid, data in blocks:
        raw = cid.to_bytes()
        section = encode_varint(len(raw) + len(data)) + raw
        written += (out.write(section) or 0) + (out.write(data) or 0)
    return written


class _CborReader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def _byte(self) -> int:
        if self.pos >= len(self.buf):
            raise MalformedCar("CAR header is truncated.")
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def _arg(self, info: int) -> int:
        if info < 24:
            return info
        widths = {24: 1, 25: 2, 26: 4, 27: 8}
        if info not in widths:
            raise MalformedCar("CAR header uses indefinite-length or reserved CBOR.")
        width = widths[info]
        raw = self.buf[self.pos : self.pos + width]
        if len(raw) != width:
            raise MalformedCar("CAR header is truncated.")
        self.pos += width
        return int.from_bytes(raw, "big")

    def value(self, depth: int = 0) -> object:
        if depth > 8:
            raise MalformedCar("CAR header nests too deeply.")
        initial = self._byte()
        major, arg = initial >> 5, self._arg(initial & 31)
        if major == 0:
            return arg
        if major in (2, 3):
            raw = self.buf[self.pos : self.pos + arg]
            if len(raw) != arg:
                raise MalformedCar("CAR header is truncated.")
            self.pos += arg
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedCar("CAR header has a non-UTF-8 string.") from None
        if major == 4:
            return [self.value(depth + 1) for _ in range(arg)]
        if major == 5:
            items: dict[object, object] = {}
            for _ in range(arg):
                key = self.value(depth + 1)
                if not isinstance(key, str):
                    raise MalformedCar("CAR header map keys must be strings.")
                items[key] = self.value(depth + 1)
            return items
        if major == 6 and arg == _CID_TAG:
            link = self.value(depth + 1)
            if not isinstance(link, bytes) or link[:1] != b"\x00":
                raise MalformedCar("CAR header has a malformed CID link.")
            try:
                cid, end = Cid.from_bytes(link, 1)
            except InvalidCid as exc:
                raise MalformedCar(f"CAR header root is not a CID: {exc}") from None
            if end != len(link):
                raise MalformedCar("CAR header root CID has trailing bytes.")
            return cid
        raise MalformedCar(f"CAR header uses unsupported CBOR (major type {major}).")


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = stream.read(size - got)
        if not more:
            raise MalformedCar(f"CAR stream ended early: wanted {size} bytes, got {got}.")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _read_varint(stream: BinaryIO) -> int | None:
    """A varint, or None at a clean end of stream."""
    raw = bytearray()
    while True:
        byte = stream.read(1)
        if not byte:
            if raw:
                raise MalformedCar("CAR stream ended inside a length prefix.")
            return None
        raw += byte
        if byte[0] < 0x80:
            return decode_varint(bytes(raw), 0)[0]
        if len(raw) > 9:
            raise MalformedCar("CAR length prefix is too long.")


def _read_header(stream: BinaryIO) -> tuple[int, list[Cid]]:
    length = _read_varint(stream)
    if length is None:
        raise MalformedCar("CAR stream is empty.")
    if not 0 < length <= _MAX_HEADER:
        raise MalformedCar(f"CAR header length {length} is implausible.")
    header = _CborReader(_read_exact(stream, length)).value()
    if not isinstance(header, dict):
        raise MalformedCar("CAR header is not a map.")
    version = header.get("version")
    if version == 2:
        return 2, []
    if version != 1:
        raise MalformedCar(f"CAR version {version!r} is not supported (expected 1 or 2).")
    roots = header.get("roots")
    if not isinstance(roots, list) or not roots or not all(isinstance(r, Cid) for r in roots):
        raise MalformedCar("CAR v1 header needs a non-empty list of root CIDs.")
    return 1, [r for r in roots if isinstance(r, Cid)]


class _Limited:
    """A read-only view of the next ``remaining`` bytes of a stream."""

    def __init__(self, stream: BinaryIO, remaining: int) -> None:
        self._stream = stream
        self._remaining = remaining

    def read(self, size: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        size = self._remaining if size < 0 else min(size, self._remaining)
        data = self._stream.read(size)
        self._remaining -= len(data)
        return data


def _skip(stream: BinaryIO, count: int) -> None:
    while count > 0:
        data = stream.read(min(count, 1 << 20))
        if not data:
            raise MalformedCar("CAR v2 stream ended before its payload.")
        count -= len(data)


def read_car(stream: BinaryIO, *, where: str = "CAR") -> tuple[list[Cid], Iterator[tuple[Cid, bytes]]]:
    """Open a CAR stream: its roots, and an iterator over its verified blocks.

    Raises:
        MalformedCar: a bad header or a truncated section.
        CorruptBlock: a block does not hash to its CID (raised while iterating).
    """
    version, roots = _read_header(stream)
    source: BinaryIO = stream
    if version == 2:
        fixed = _read_exact(stream, _CARV2_HEADER)
        offset = int.from_bytes(fixed[16:24], "little")
        size = int.from_bytes(fixed[24:32], "little")
        consumed = len(_CARV2_PRAGMA) + _CARV2_HEADER
        if offset < consumed:
            raise MalformedCar("CAR v2 data offset points inside its header.")
        _skip(stream, offset - consumed)
        source = cast("BinaryIO", _Limited(stream, size))
        inner_version, roots = _read_header(source)
        if inner_version != 1:
            raise MalformedCar("CAR v2 payload is not CAR v1.")
    return roots, _blocks(source, where)


def _blocks(stream: BinaryIO, where: str) -> Iterator[tuple[Cid, bytes]]:
    while True:
        length = _read_varint(stream)
        if length is None:
            return
        if not 0 < length <= MAX_BLOCK_SIZE + 128:
            raise MalformedCar(f"CAR section of {length} bytes in {where} is empty or too large.")
        section = _read_exact(stream, length)
        try:
            cid, start = Cid.from_bytes(section)
        except InvalidCid as exc:
            raise MalformedCar(f"CAR section in {where} starts with a bad CID: {exc}") from None
        data = section[start:]
        cid.verify(data, where)
        yield cid, data
