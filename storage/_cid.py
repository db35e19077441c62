"""CIDs: parsing, canonical text form, hashing and verification.

Every CID leaving this package is a CIDv1 in lower-case base32 (``b...``), the
form an IPFS node prints for ``add --cid-version=1``. CIDv0 (``Qm...``) and
other multibase spellings are accepted on input and normalised, since they name
the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import NewType

from storage._errors import CorruptBlock, InvalidCid, UnsupportedContent

__all__ = [
    "CID",
    "DAG_PB",
    "RAW",
    "Cid",
    "parse_cid",
]

CID = NewType("CID", str)
"""A CIDv1 in lower-case base32, e.g.
``bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e``."""

RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71

SHA2_256 = 0x12
SHA2_512 = 0x13
IDENTITY = 0x00
BLAKE2B_256 = 0xB220

_CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb", DAG_CBOR: "dag-cbor", 0x0129: "dag-json"}
_DIGEST_SIZES = {SHA2_256: 32, SHA2_512: 64, BLAKE2B_256: 32}
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_MAX_IDENTITY_DIGEST = 128


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, as used by multiformats and protobuf."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Read an unsigned varint at ``pos``; return (value, next position).

    Raises:
        ValueError: the varint is truncated or longer than 9 bytes.
    """
    value = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        try:
            number = number * 58 + _B58_INDEX[char]
        except KeyError:
            raise ValueError(f"character {char!r} is not base58btc") from None
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    leading = len(text) - len(text.lstrip("1"))
    return b"\x00" * leading + body


def _b32decode(text: str) -> bytes:
    text = text.upper()
    if "=" in text:
        raise ValueError("padding is not allowed in multibase base32")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError as exc:
        raise ValueError(f"not base32: {exc}") from None


@dataclass(frozen=True, slots=True)
class Cid:
    """A decoded CID. Version 0 CIDs are held as their CIDv1 equivalent.

    Attributes:
        codec: Multicodec of the block (``RAW`` or ``DAG_PB`` for UnixFS).
        hash_code: Multihash function code.
        digest: The hash digest.
    """

    codec: int
    hash_code: int
    digest: bytes

    @classmethod
    def of_block(cls, codec: int, data: bytes | memoryview) -> Cid:
        """The sha2-256 CIDv1 of a block's bytes."""
        return cls(codec, SHA2_256, hashlib.sha256(data).digest())

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview, pos: int = 0) -> tuple[Cid, int]:
        """Decode a binary CID at ``pos``; return it and the position after it.

        Raises:
            InvalidCid: the bytes are not a CID.
        """
        try:
            if len(buf) - pos >= 2 and buf[pos] == SHA2_256 and buf[pos + 1] == 32:
                digest = bytes(buf[pos + 2 : pos + 34])
                if len(digest) != 32:
                    raise ValueError("truncated CIDv0 digest")
                return cls(DAG_PB, SHA2_256, digest), pos + 34
            version, pos = decode_varint(buf, pos)
            if version != 1:
                raise ValueError(f"unsupported CID version {version}")
            codec, pos = decode_varint(buf, pos)
            hash_code, pos = decode_varint(buf, pos)
            length, pos = decode_varint(buf, pos)
            digest = bytes(buf[pos : pos + length])
            if len(digest) != length:
                raise ValueError("truncated multihash digest")
        except ValueError as exc:
            raise InvalidCid(bytes(buf[: pos + 8]).hex(), str(exc)) from None
        return cls(codec, hash_code, digest), pos + length

    @classmethod
    def parse(cls, text: str) -> Cid:
        """Parse a CID string (CIDv0 base58btc, or CIDv1 in base32/base58btc/base16).

        Raises:
            InvalidCid: the string is not a CID, or its multihash is inconsistent.
        """
        if not isinstance(text, str):
            raise InvalidCid(text, "expected a string")
        stripped = text.strip()
        stripped = stripped.removeprefix("/ipfs/")
        if not stripped:
            raise InvalidCid(text, "it is empty")
        try:
            if len(stripped) == 46 and stripped.startswith("Qm"):
                raw = _b58decode(stripped)
                if len(raw) != 34 or raw[0] != SHA2_256 or raw[1] != 32:
                    raise ValueError("CIDv0 must be a 34-byte sha2-256 multihash")
                return cls(DAG_PB, SHA2_256, raw[2:])
            prefix, body = stripped[0], stripped[1:]
            if prefix in "bB":
                raw = _b32decode(body)
            elif prefix == "z":
                raw = _b58decode(body)
            elif prefix in "fF":
                raw = bytes.fromhex(body)
            else:
                raise ValueError(f"unsupported multibase prefix {prefix!r}")
        except ValueError as exc:
            raise InvalidCid(text, str(exc)) from None
        if raw[:1] != b"\x01":
            raise InvalidCid(text, "only CIDv1 may use a multibase prefix")
        try:
            cid, end = cls.from_bytes(raw)
        except InvalidCid as exc:
            raise InvalidCid(text, exc.reason) from None
        if end != len(raw):
            raise InvalidCid(text, "trailing bytes after the multihash")
        expected = _DIGEST_SIZES.get(cid.hash_code)
        if expected is not None and len(cid.digest) != expected:
            raise InvalidCid(text, f"digest is {len(cid.digest)} bytes, expected {expected}")
        return cid

    def to_bytes(self) -> bytes:
        """Binary CIDv1."""
        return (
            b"\x01"
            + encode_varint(self.codec)
            + encode_varint(self.hash_code)
            + encode_varint(len(self.digest))
            + self.digest
        )

    def text(self) -> CID:
        """Canonical text: CIDv1, multibase base32 lower case."""
        return CID("b" + base64.b32encode(self.to_bytes()).decode("ascii").lower().rstrip("="))

    def __str__(self) -> str:
        return self.text()

    @property
    def codec_name(self) -> str:
        """Human name of the codec, for messages."""
        return _CODEC_NAMES.get(self.codec, hex(self.codec))

    def matches(self, data: bytes | memoryview) -> bool:
        """True when ``data`` hashes to this CID's digest.

        Raises:
            UnsupportedContent: the hash function is not one this package knows.
        """
        if self.hash_code == SHA2_256:
            return hashlib.sha256(data).digest() == self.digest
        if self.hash_code == IDENTITY:
            return bytes(data) == self.digest
        if self.hash_code == SHA2_512:
            return hashlib.sha512(data).digest() == self.digest
        if self.hash_code == BLAKE2B_256:
            return hashlib.blake2b(data, digest_size=32).digest() == self.digest
        raise UnsupportedContent(
            f"Block {self.text()} uses multihash function {hex(self.hash_code)}, which this "
            "store cannot verify. Re-add the content with sha2-256 (the IPFS default)."
        )

    def verify(self, data: bytes | memoryview, where: str) -> None:
        """Raise :class:`CorruptBlock` unless ``data`` hashes to this CID."""
        if self.hash_code == IDENTITY and len(self.digest) > _MAX_IDENTITY_DIGEST:
            raise UnsupportedContent(f"Identity CID {self.text()} is too long to inline.")
        if not self.matches(data):
            raise CorruptBlock(self.text(), where)


def parse_cid(text: str) -> CID:
    """Validate a CID string and return its canonical CIDv1 base32 form.

    Args:
        text: A CIDv1 (``bafy...``, ``bafk...``, ``z...``, ``f01...``), a CIDv0
            (``Qm...``), optionally prefixed with ``/ipfs/``.

    Returns:
        The same CID as lower-case base32 CIDv1.

    Raises:
        InvalidCid: ``text`` is not a CID.

    Example:
        >>> parse_cid("QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR")
        'bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi'
    """
    return Cid.parse(text).text()
