"""The `ContentStore` interface every backend implements."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable

from storage._cid import CID

__all__ = ["DEFAULT_MAX_SIZE", "ContentStore"]

DEFAULT_MAX_SIZE = 64 * 1024 * 1024
"""Default limit of `ContentStore.get_bytes` (64 MiB); use `fetch` for larger content."""


@runtime_checkable
class ContentStore(Protocol):
    """Content-addressed storage of files and directory trees, addressed by CID.

    CIDs are those an IPFS node gives for ``ipfs add --cid-version=1`` (raw
    leaves, 256 KiB chunks, balanced layout), as lower-case base32 CIDv1.
    Every read is verified against the CID; a corrupt or malformed block is
    raised as :class:`~storage.IntegrityError` and never returned.

    Example:
        >>> with open_store("local:/tmp/demo-store") as store:
        ...     cid = store.put_bytes(b"hello world")
        ...     store.get_bytes(cid)
        b'hello world'
    """

    def connect(self) -> Self:
        """Open the store (create directories, reach the node); return ``self``."""
        ...

    def close(self) -> None:
        """Release connections and handles. The store may be connected again."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def put_bytes(self, data: bytes, *, pin: bool = True) -> CID:
        """Store ``data`` as a file; return its CID."""
        ...

    def put_stream(self, stream: BinaryIO, *, pin: bool = True) -> CID:
        """Store everything readable from a binary stream as a file; return its CID."""
        ...

    def put_file(self, path: Path, *, pin: bool = True) -> CID:
        """Store a file's content (not its name); return its CID."""
        ...

    def put_directory(self, path: Path, *, include_hidden: bool = False, pin: bool = True) -> CID:
        """Store a directory tree; return the root directory's CID.

        Entries whose name starts with ``.`` are skipped (as ``ipfs add -r``
        does) unless ``include_hidden``. Empty sub-directories are kept.

        Raises:
            UnsupportedContent: the tree holds a symlink, socket, pipe or device,
                a name that is not UTF-8, or a directory too large for a basic node.
        """
        ...

    def get_bytes(self, cid: str, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
        """Return a file's content.

        Raises:
            ContentNotFound: the store does not hold it (an IPFS node gives up
                after its fetch timeout).
            ContentTooLarge: the file is over ``max_size``; refused from the
                root's declared size, before the content is read.
            NotAFile: ``cid`` is a directory.
            InvalidCid: ``cid`` is not a CID.
        """
        ...

    def fetch(self, cid: str, dest: Path, *, max_size: int | None = None) -> None:
        """Write a file, or a whole directory tree, to ``dest`` (which must not exist).

        All or nothing: the content is unpacked beside ``dest`` and renamed into
        place when complete.

        Raises:
            DestinationExists: ``dest`` already exists.
            UnsafePath: an entry named ``..``, ``.``, empty, absolute or holding a
                ``/``, or a symlink leading out of the tree (judged against the tree
                itself, wherever it is unpacked).
            MalformedDag: a directory lists a name twice, or sizes do not add up.
            ContentTooLarge: the files add up to more than ``max_size``.
            ContentNotFound: a block of the content is missing.
        """
        ...

    def inspect(self, cid: str, *, max_size: int | None = None) -> int:
        """Check that ``fetch`` would unpack ``cid`` safely, writing nothing; return its size in bytes.

        The same checks as ``fetch``, on the directory nodes and the root node of
        every file (their declared sizes), without reading file chunks: cheap
        enough to run before accepting work that will fetch the content.

        Raises:
            UnsafePath, MalformedDag, ContentTooLarge: as ``fetch`` would.
            NotAFile: ``cid`` is a symlink.
            ContentNotFound: the store does not hold a directory or file node of it.
            InvalidCid: ``cid`` is not a CID.

        Example:
            >>> store.inspect(tree_cid, max_size=4 << 30)
            1830
        """
        ...

    def has(self, cid: str) -> bool:
        """True when the store holds the root block of ``cid`` locally (no network search)."""
        ...

    def pin(self, cid: str) -> None:
        """Keep ``cid`` and everything below it.

        Raises:
            ContentNotFound: part of the DAG is missing.
        """
        ...

    def unpin(self, cid: str) -> None:
        """Drop the pin on ``cid``; no error when it was not pinned."""
        ...

    def pins(self) -> frozenset[CID]:
        """The CIDs pinned recursively."""
        ...

    def export_car(self, cid: str, out: BinaryIO) -> None:
        """Write the whole DAG under ``cid`` to ``out`` as a CAR v1 stream."""
        ...

    def import_car(self, source: BinaryIO, *, pin: bool = True) -> list[CID]:
        """Load every block of a CAR stream; return its roots (pinned unless ``pin`` is false).

        Raises:
            MalformedCar: the stream is not a CAR.
            CorruptBlock: a block does not match its CID.
        """
        ...
