"""The IPFS backend: a Kubo (or js-ipfs) node over its HTTP RPC API.

Adds go through the node's own importer with the options that give the same
CIDs as the embedded store (``cid-version=1``, ``raw-leaves=true``, 256 KiB
chunks, base32 output). Reads do not trust the node: blocks are fetched one by
one with ``block/get``, verified against their CIDs, and assembled by the same
reader the local store uses, so size limits and path checks are identical.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, TypeVar, cast

import ipfshttpclient
from ipfshttpclient import exceptions as ipfs_errors
from ipfshttpclient import multipart

from storage._car import MAX_BLOCK_SIZE, read_car, write_car
from storage._cid import CID, Cid, parse_cid
from storage._errors import BackendError, ContentNotFound, CorruptBlock, StorageError
from storage._importer import CHUNK_SIZE, scan_directory
from storage._protocol import DEFAULT_MAX_SIZE
from storage._reader import fetch_tree, inspect_tree, iter_dag, read_file

__all__ = ["DEFAULT_IPFS_API", "IpfsStore"]

_log = logging.getLogger(__name__)

DEFAULT_IPFS_API = "/ip4/127.0.0.1/tcp/5001"
"""Where Kubo serves its RPC API by default."""

_T = TypeVar("_T")
_UPLOAD_ROOT = "content"

# Messages the node sends when it could not find a block in time.
_NOT_FOUND_HINTS = ("timed out", "timeout", "deadline exceeded", "not found", "could not find")


def _looks_not_found(message: str) -> bool:
    lowered = message.lower()
    return any(hint in lowered for hint in _NOT_FOUND_HINTS)


class _Upload:
    """A stream as ipfshttpclient wants it: ``read()`` and a string ``name``.

    The client takes the multipart filename from ``name``, which is an int for
    pipes and descriptors; the node ignores it for single-file adds and CARs.
    """

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self._stream = stream
        self.name = name

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


class _Recording:
    """Reads through to a stream and keeps a copy of what was read."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.seen = bytearray()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.seen += data
        return data


class _Chain:
    """``prefix`` followed by the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0:
                data, self._prefix = self._prefix + self._stream.read(), b""
                return data
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._stream.read(size)


def _http_api(api: str) -> str:
    """A multiaddr ipfshttpclient accepts: ``/ip4/HOST/tcp/PORT/http``."""
    api = api.rstrip("/")
    if api.startswith(("http://", "https://")):
        scheme, rest = api.split("://", 1)
        host, _, port = rest.partition("/")[0].rpartition(":")
        if not host or not port.isdigit():
            raise BackendError(f"Cannot read host and port from {api!r}; use /ip4/HOST/tcp/PORT.")
        kind = "ip4" if host.replace(".", "").isdigit() else "dns"
        return f"/{kind}/{host}/tcp/{port}/{scheme}"
    if not api.endswith(("/http", "/https")):
        api += "/http"
    return api


class IpfsStore:
    """A content store backed by an IPFS node's RPC API (Kubo or js-ipfs).

    Args:
        api: The node's RPC API as a multiaddr (``/ip4/127.0.0.1/tcp/5001``)
            or an ``http://host:port`` URL.
        fetch_timeout: Seconds the node may spend finding a block it does not
            hold (asking its peers) before the read fails with
            :class:`~storage.ContentNotFound`.
        request_timeout: Seconds to wait on any single HTTP read from the node.
        has_timeout: Seconds `has` waits for the node (js-ipfs has no
            offline lookup, so a missing block costs this long there).

    Example:
        >>> store = IpfsStore(api="/ip4/127.0.0.1/tcp/5001").connect()
        >>> store.put_bytes(b"hello world")
        'bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e'
    """

    def __init__(
        self,
        *,
        api: str = DEFAULT_IPFS_API,
        fetch_timeout: float = 30.0,
        request_timeout: float = 300.0,
        has_timeout: float = 1.0,
    ) -> None:
        self.api = api
        self.fetch_timeout = fetch_timeout
        self.request_timeout = request_timeout
        self.has_timeout = has_timeout
        self._client: ipfshttpclient.Client | None = None
        self.node_version: str | None = None

    def __repr__(self) -> str:
        return f"IpfsStore(api={self.api!r})"

    # lifecycle

    def connect(self) -> Self:
        """Reach the node and read its version; return ``self``.

        The client is built directly rather than with ``ipfshttpclient.connect()``,
        whose version check rejects every current daemon.

        Raises:
            BackendError: the node cannot be reached or is not an IPFS node.
        """
        if self._client is not None:
            return self
        try:
            client = ipfshttpclient.Client(addr=_http_api(self.api), session=True, timeout=self.request_timeout)
        except ipfs_errors.AddressError as exc:
            raise BackendError(f"{self.api!r} is not a usable API address: {exc}") from None
        self._client = client
        try:
            info = self._call(lambda c: c.version())
        except BaseException:
            self.close()
            raise
        self.node_version = str(info.get("Version", "?"))
        _log.info("connected to IPFS node %s (version %s)", self.api, self.node_version)
        return self

    def close(self) -> None:
        """Close the HTTP session."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, action: Callable[[ipfshttpclient.Client], _T], *, cid: str | None = None) -> _T:
        if self._client is None:
            raise StorageError(f"{self!r} is not connected; call connect() first.")
        try:
            with warnings.catch_warnings():
                # ipfshttpclient passes urllib3 a parameter it deprecated.
                warnings.filterwarnings("ignore", message=".*'strict' parameter", category=FutureWarning)
                return action(self._client)
        except ipfs_errors.ErrorResponse as exc:
            if cid is not None and _looks_not_found(str(exc)):
                raise ContentNotFound(
                    cid,
                    f"The IPFS node at {self.api} could not find {cid} within "
                    f"{self.fetch_timeout:g}s (it does not hold it and no peer provided it). "
                    "Add it to the node or import a CAR.",
                ) from None
            raise BackendError(f"IPFS node at {self.api} refused the request: {exc}") from None
        except ipfs_errors.TimeoutError:
            if cid is not None:
                raise ContentNotFound(cid, f"The IPFS node at {self.api} did not deliver {cid} in time.") from None
            raise BackendError(f"IPFS node at {self.api} did not answer in time.") from None
        except ipfs_errors.ConnectionError as exc:
            raise BackendError(
                f"Cannot reach the IPFS node at {self.api} ({exc}). Is the daemon running? "
                "Start one with: python scripts/ipfs_node.py start --repo DIR"
            ) from None
        except ipfs_errors.Error as exc:
            raise BackendError(f"IPFS node at {self.api} failed: {exc}") from None

    def _add(self, body: Iterator[bytes], headers: dict[str, str], pin: bool) -> list[Any]:
        # Options as `ipfs add --cid-version=1 --raw-leaves` sends them. raw-leaves
        # must be explicit: ipfshttpclient's add() otherwise sends raw-leaves=false,
        # which the node honours even with cid-version=1.
        opts = {
            "cid-version": "1",
            "raw-leaves": "true",
            "chunker": f"size-{CHUNK_SIZE}",
            "hash": "sha2-256",
            "cid-base": "base32",
            "pin": "true" if pin else "false",
            "wrap-with-directory": "false",
        }
        answer = self._call(lambda c: c._client.request("/add", decoder="json", data=body, headers=headers, opts=opts))
        return list(answer)

    # content

    def put_bytes(self, data: bytes, *, pin: bool = True) -> CID:
        """Add ``data`` as a file; return its CID."""
        return self.put_stream(io.BytesIO(data), pin=pin)

    def put_stream(self, stream: BinaryIO, *, pin: bool = True) -> CID:
        """Add everything readable from ``stream`` as a file; return its CID."""
        body, headers = multipart.stream_files(_Upload(stream, "data"), chunk_size=CHUNK_SIZE)
        entries = self._add(body, headers, pin)
        if len(entries) != 1:
            raise BackendError(f"The IPFS node answered an add with {entries!r}.")
        return parse_cid(str(entries[0]["Hash"]))

    def put_file(self, path: Path, *, pin: bool = True) -> CID:
        """Add a file's content; return its CID."""
        with open(path, "rb") as stream:
            return self.put_stream(stream, pin=pin)

    def put_directory(self, path: Path, *, include_hidden: bool = False, pin: bool = True) -> CID:
        """Add a directory tree; return its CID (see `ContentStore.put_directory`)."""
        path = Path(path).resolve()
        scan_directory(path, include_hidden=include_hidden)
        # pattern="**" makes the client skip dotfiles like `ipfs add -r`; without a
        # pattern it uploads everything.
        upload = multipart.DirectoryStream(
            str(path),
            chunk_size=CHUNK_SIZE,
            patterns=None if include_hidden else "**",
            period_special=True,
            recursive=True,
        )
        # The client names the upload after the directory, but js-ipfs misparses
        # one-character names; the root's name is not part of its CID anyway.
        upload.name = _UPLOAD_ROOT
        for entry in self._add(upload.body(), upload.headers(), pin):
            if entry.get("Name") == _UPLOAD_ROOT:
                return parse_cid(str(entry["Hash"]))
        raise BackendError(f"The IPFS node did not report a root for {path}.")

    def get_block(self, cid: Cid) -> bytes:
        """Fetch one block from the node and verify it.

        Raises:
            ContentNotFound: the node could not find it within ``fetch_timeout``.
            CorruptBlock: the node sent bytes that do not match the CID.
        """
        text = cid.text()

        def fetch(client: ipfshttpclient.Client) -> bytes:
            parts: Iterator[bytes] = client.block.get(
                text,
                stream=True,
                opts={"timeout": f"{self.fetch_timeout:g}s"},
                timeout=self.fetch_timeout + 10,
            )
            data = bytearray()
            for part in parts:
                data += part
                if len(data) > MAX_BLOCK_SIZE:
                    raise CorruptBlock(text, f"IPFS node {self.api} (block over {MAX_BLOCK_SIZE} bytes)")
            return bytes(data)

        data = self._call(fetch, cid=text)
        cid.verify(data, f"IPFS node {self.api}")
        return data

    def get_bytes(self, cid: str, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
        """Return a file's content, verified block by block (see `ContentStore.get_bytes`)."""
        return read_file(self, Cid.parse(cid), max_size=max_size)

    def fetch(self, cid: str, dest: Path, *, max_size: int | None = None) -> None:
        """Write a file or a tree to ``dest``, verified (see `ContentStore.fetch`)."""
        fetch_tree(self, Cid.parse(cid), Path(dest), max_size=max_size)

    def inspect(self, cid: str, *, max_size: int | None = None) -> int:
        """Check a file or a tree as `fetch` would, block by block, writing nothing (see `ContentStore.inspect`)."""
        return inspect_tree(self, Cid.parse(cid), max_size=max_size)

    def has(self, cid: str) -> bool:
        """True when the node holds the root block itself (asks it not to search peers)."""
        text = Cid.parse(cid).text()
        try:
            self._call(
                lambda c: c.block.stat(
                    text,
                    offline=True,
                    opts={"timeout": f"{self.has_timeout:g}s"},
                    timeout=self.has_timeout + 10,
                ),
                cid=text,
            )
        except ContentNotFound:
            return False
        return True

    # pins

    def pin(self, cid: str) -> None:
        """Pin ``cid`` recursively on the node (it fetches missing blocks from peers)."""
        text = Cid.parse(cid).text()
        self._call(
            lambda c: c.pin.add(text, opts={"timeout": f"{self.fetch_timeout:g}s"}),
            cid=text,
        )

    def unpin(self, cid: str) -> None:
        """Drop the recursive pin on ``cid``; no error when it was not pinned."""
        text = Cid.parse(cid).text()
        try:
            self._call(lambda c: c.pin.rm(text))
        except BackendError as exc:
            if "not pinned" not in str(exc):
                raise

    def pins(self) -> frozenset[CID]:
        """The CIDs the node pins recursively."""
        listed = self._call(lambda c: c.pin.ls(type="recursive"))
        return frozenset(parse_cid(key) for key in listed["Keys"])

    # CAR

    def export_car(self, cid: str, out: BinaryIO) -> None:
        """Write the DAG under ``cid`` to ``out`` as CAR v1, every block verified.

        Blocks are read one by one rather than with ``dag/export``: js-ipfs ends
        an export early without an error when a block cannot be found, which
        would pass an incomplete CAR off as complete.

        Raises:
            ContentNotFound: a block of the DAG could not be found in time.
        """
        root = Cid.parse(cid)
        write_car(out, [root], iter_dag(self, root))

    def import_car(self, source: BinaryIO, *, pin: bool = True) -> list[CID]:
        """Load a CAR stream into the node with ``dag/import``; return its roots.

        The node keeps the blocks under their CIDs, whatever its own add settings.
        It may not verify them (js-ipfs does not), which is why every read from
        this backend re-verifies.

        Raises:
            MalformedCar: the stream does not start with a CAR header.
            BackendError: the node refused the CAR or could not pin a root.
        """
        # The node only reports roots it pinned, so read them from the header here
        # and send the header bytes on ahead of the rest of the stream.
        recording = _Recording(source)
        roots, _ = read_car(cast("BinaryIO", recording), where="CAR stream")
        upload = _Upload(cast("BinaryIO", _Chain(bytes(recording.seen), source)), "import.car")
        body, headers = multipart.stream_files(upload, chunk_size=CHUNK_SIZE)
        opts = {"pin-roots": "true" if pin else "false"}
        answer = self._call(
            lambda c: c._client.request("/dag/import", decoder="json", data=body, headers=headers, opts=opts)
        )
        for item in answer:
            error = (item.get("Root") or {}).get("PinErrorMsg")
            if error:
                raise BackendError(f"The IPFS node imported the CAR but could not pin a root: {error}")
        return [root.text() for root in roots]
