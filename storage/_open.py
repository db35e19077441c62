"""`open_store()`: choose and connect a backend from a URL, and copy content between stores."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from storage._cid import CID, parse_cid
from storage._errors import InvalidStoreUrl, StorageError
from storage._ipfs import DEFAULT_IPFS_API, IpfsStore
from storage._local import LocalStore
from storage._protocol import ContentStore

__all__ = ["DEFAULT_STORE_URL", "STORE_URL_ENV", "open_store", "transfer"]

_log = logging.getLogger(__name__)

STORE_URL_ENV = "CHAINSCHED_STORE"
"""Environment variable `open_store()` reads when given no URL."""

DEFAULT_STORE_URL = "local:~/.local/share/chain-scheduler/store"
"""The store used when neither a URL nor ``$CHAINSCHED_STORE`` is given."""


def make_store(url: str, *, fetch_timeout: float = 30.0) -> ContentStore:
    """Build (without connecting) the backend named by ``url``."""
    scheme, sep, rest = url.partition(":")
    if not sep or (len(scheme) == 1 and rest.startswith(("\\", "/"))):
        scheme, rest = "local", url  # a bare path (or a Windows drive letter)
    if scheme == "local":
        if not rest:
            raise InvalidStoreUrl("local: needs a directory, e.g. local:/var/lib/chain-scheduler/store")
        return LocalStore(root=Path(os.path.expanduser(rest.removeprefix("//") if rest.startswith("///") else rest)))
    if scheme == "ipfs":
        return IpfsStore(api=rest or DEFAULT_IPFS_API, fetch_timeout=fetch_timeout)
    raise InvalidStoreUrl(
        f"Unknown store URL {url!r}. Use local:PATH (the embedded store) or "
        f"ipfs:/ip4/HOST/tcp/PORT (an IPFS node's RPC API, e.g. ipfs:{DEFAULT_IPFS_API})."
    )


def open_store(url: str | None = None, *, fetch_timeout: float = 30.0) -> ContentStore:
    """Open the content store named by ``url`` and connect it.

    Args:
        url: ``local:PATH`` for the embedded store (the default; a bare path
            means the same), or ``ipfs:MULTIADDR`` for an IPFS node's RPC API,
            e.g. ``ipfs:/ip4/127.0.0.1/tcp/5001``. ``None`` reads
            ``$CHAINSCHED_STORE``, then falls back to `DEFAULT_STORE_URL`.
        fetch_timeout: For IPFS, seconds the node may search for a block
            before a read fails with ContentNotFound.

    Raises:
        InvalidStoreUrl: the URL names no known backend.
        BackendError: the IPFS node cannot be reached.

    Example:
        >>> with open_store("local:/tmp/demo") as store:
        ...     store.put_bytes(b"hello world")
        'bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e'
    """
    chosen = url or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    return make_store(chosen, fetch_timeout=fetch_timeout).connect()


def transfer(cid: str, *, source: ContentStore, target: ContentStore, pin: bool = True) -> CID:
    """Copy the DAG under ``cid`` from one store to another as a streamed CAR.

    The target verifies every block, so fetching from an untrusted IPFS node
    into the local store (or publishing local content to a node) keeps the CID
    and cannot smuggle in wrong bytes.

    Raises:
        ContentNotFound: the source lacks part of the DAG.
        CorruptBlock: the source sent a block that does not match its CID.
    """
    root = parse_cid(cid)
    reader_fd, writer_fd = os.pipe()
    failure: list[BaseException] = []
    with os.fdopen(reader_fd, "rb") as reader:

        def produce() -> None:
            with os.fdopen(writer_fd, "wb") as writer:
                try:
                    source.export_car(root, writer)
                except Exception as exc:  # noqa: BLE001 - re-raised in the calling thread
                    failure.append(exc)

        thread = threading.Thread(target=produce, name=f"export-{root[:16]}", daemon=True)
        thread.start()
        try:
            roots = target.import_car(reader, pin=pin)
        except BaseException:
            reader.close()  # unblocks the exporter if it is waiting on a full pipe
            thread.join()
            if failure and not isinstance(failure[0], BrokenPipeError):
                raise failure[0] from None
            raise
        thread.join()
    if failure:
        raise failure[0]
    if root not in roots:
        raise StorageError(f"Exported CAR of {root} came back with roots {roots}.")
    _log.debug("transferred %s from %r to %r", root, source, target)
    return root
