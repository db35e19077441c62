"""Exceptions raised by the storage package.

Every error derives from :class:`StorageError`, so callers can catch one root::

    StorageError
    ├── InvalidCid              a CID string or binary CID that does not parse
    ├── InvalidStoreUrl         open_store() got a URL it cannot use
    ├── ContentNotFound         the store does not hold the content (or a block of it)
    ├── ContentTooLarge         content is bigger than the caller's size limit
    ├── NotAFile                get_bytes() on a directory (use fetch())
    ├── IntegrityError          content failed verification; never returned to the caller
    │   ├── CorruptBlock        a block's bytes do not hash to its CID
    │   ├── MalformedDag        a block parses badly or its sizes do not add up
    │   └── MalformedCar        a CAR stream is not valid CAR v1/v2
    ├── UnsupportedContent      valid IPFS content this store does not handle
    ├── FetchError              fetch() refused to write into the destination
    │   ├── UnsafePath          an entry named '..', an absolute path, an escaping symlink
    │   └── DestinationExists   the destination path is already there
    └── BackendError            the IPFS node failed or could not be reached
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ContentNotFound",
    "ContentTooLarge",
    "CorruptBlock",
    "DestinationExists",
    "FetchError",
    "IntegrityError",
    "InvalidCid",
    "InvalidStoreUrl",
    "MalformedCar",
    "MalformedDag",
    "NotAFile",
    "StorageError",
    "UnsafePath",
    "UnsupportedContent",
]


class StorageError(Exception):
    """Root of every error raised by :mod:`storage`."""


class InvalidCid(StorageError, ValueError):
    """A CID string (or binary CID) is malformed.

    Attributes:
        text: The offending input, as given.
        reason: What is wrong with it.
    """

    def __init__(self, text: object, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(
            f"{text!r} is not a valid CID: {reason}. Expected a CIDv1 such as 'bafy...'/'bafk...' or a CIDv0 'Qm...'."
        )


class InvalidStoreUrl(StorageError, ValueError):
    """`open_store()` was given a URL it does not understand."""


class ContentNotFound(StorageError, LookupError):
    """The store does not hold the requested content.

    Attributes:
        cid: The CID that could not be found (the root or a missing block).
    """

    def __init__(self, cid: str, message: str | None = None) -> None:
        self.cid = cid
        super().__init__(
            message or f"Content {cid} is not in this store. Put it first, or import a CAR that contains it."
        )


class ContentTooLarge(StorageError):
    """Content exceeds the size limit the caller set.

    Attributes:
        cid: The content's root CID.
        size: Its size in bytes, as declared by the DAG or as counted so far.
        limit: The caller's limit in bytes.
    """

    def __init__(self, cid: str, size: int, limit: int) -> None:
        self.cid = cid
        self.size = size
        self.limit = limit
        super().__init__(
            f"Content {cid} is {size} bytes, over the limit of {limit} bytes. "
            "Raise max_size, or use fetch() to stream it to a file."
        )


class NotAFile(StorageError):
    """`get_bytes()` was asked for a directory or a symlink."""

    def __init__(self, cid: str, kind: str) -> None:
        self.cid = cid
        self.kind = kind
        super().__init__(f"Content {cid} is a {kind}, not a file. Use fetch() to write it to disk.")


class IntegrityError(StorageError):
    """Content failed verification. Its bytes are never handed to the caller."""


class CorruptBlock(IntegrityError):
    """A block's bytes do not hash to its CID.

    Attributes:
        cid: The block's CID.
        where: Where the bytes came from (a file path, a CAR, an IPFS node).
    """

    def __init__(self, cid: str, where: str) -> None:
        self.cid = cid
        self.where = where
        super().__init__(
            f"Block {cid} from {where} does not match its hash: the copy is corrupt. "
            "Delete it and fetch or import the content again."
        )


class MalformedDag(IntegrityError):
    """A block hashes correctly but is not valid dag-pb/UnixFS, or its sizes lie."""


class MalformedCar(IntegrityError):
    """A CAR stream is truncated or not CAR v1/v2."""


class UnsupportedContent(StorageError):
    """Valid content-addressed data that this implementation does not handle
    (HAMT-sharded directories, dag-cbor blocks, unknown hash functions, symlinks on put)."""


class FetchError(StorageError):
    """`fetch()` refused to write the content into the destination."""


class UnsafePath(FetchError):
    """A directory entry would write outside the destination.

    Attributes:
        name: The offending entry name or symlink target.
    """

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(
            f"Refusing directory entry {name!r}: {reason}. The content is unsafe to unpack; do not trust its publisher."
        )


class DestinationExists(FetchError):
    """The destination of `fetch()` already exists."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} already exists. fetch() never overwrites: remove it or choose another path.")


class BackendError(StorageError):
    """The IPFS node returned an error or could not be reached."""
