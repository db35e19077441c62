"""Content-addressed storage for chain-scheduler: files and trees by CID.

Two backends behind one `ContentStore` protocol:

- `LocalStore` (``local:PATH``, the default): an embedded block store on disk,
  no daemon, producing exactly the CIDs ``ipfs add --cid-version=1`` gives.
- `IpfsStore` (``ipfs:/ip4/HOST/tcp/PORT``): a Kubo or js-ipfs node over its
  HTTP RPC API.

Content moves between them, with its CIDs, as CAR files (`transfer`).

Example:
    >>> from storage import open_store
    >>> with open_store("local:/tmp/demo-store") as store:
    ...     cid = store.put_bytes(b"hello world")
    ...     store.get_bytes(cid)
    b'hello world'

Errors derive from `StorageError`; the tree is drawn in `storage._errors`.
"""

from storage._cid import CID, parse_cid
from storage._errors import (
    BackendError,
    ContentNotFound,
    ContentTooLarge,
    CorruptBlock,
    DestinationExists,
    FetchError,
    IntegrityError,
    InvalidCid,
    InvalidStoreUrl,
    MalformedCar,
    MalformedDag,
    NotAFile,
    StorageError,
    UnsafePath,
    UnsupportedContent,
)
from storage._importer import CHUNK_SIZE, MAX_LINKS
from storage._ipfs import DEFAULT_IPFS_API, IpfsStore
from storage._local import LocalStore
from storage._open import DEFAULT_STORE_URL, STORE_URL_ENV, open_store, transfer
from storage._protocol import DEFAULT_MAX_SIZE, ContentStore

__all__ = [
    "CHUNK_SIZE",
    "CID",
    "DEFAULT_IPFS_API",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_STORE_URL",
    "MAX_LINKS",
    "STORE_URL_ENV",
    "BackendError",
    "ContentNotFound",
    "ContentStore",
    "ContentTooLarge",
    "CorruptBlock",
    "DestinationExists",
    "FetchError",
    "IntegrityError",
    "InvalidCid",
    "InvalidStoreUrl",
    "IpfsStore",
    "LocalStore",
    "MalformedCar",
    "MalformedDag",
    "NotAFile",
    "StorageError",
    "UnsafePath",
    "UnsupportedContent",
    "open_store",
    "parse_cid",
    "transfer",
]
