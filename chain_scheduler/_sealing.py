"""Sealed results: the result CID of a job with verifiers travels encrypted to its client.

Main and audit slots of a job with verifiers reveal only ``keccak256(cid)`` on chain, so a
drawn verifier that did not run the job has no CID to copy (docs/security.md, "Sealed
results"). The client still needs the CID at once, to fetch the result and decide whether
to challenge it. Each sealed reveal therefore carries an *envelope*: the CID encrypted to
the client's delivery key, which the client names in the job spec (``delivery_key``).

The scheme is an ECIES over X25519: a fresh ephemeral key per envelope, HKDF-SHA256 of
the shared secret into a ChaCha20-Poly1305 key, the job id and the recipient's key as
associated data. An envelope is ``version (1) | ephemeral public key (32) | ciphertext``.
A client's delivery key is derived from its account key, so whoever can sign for the
client can open its envelopes and nobody else can. The envelope cannot lie about the
result: :func:`open_envelope`'s caller checks the CID against the hash on chain.

>>> from eth_account import Account
>>> account = Account.from_key(b"\\x01" * 32)
>>> key = delivery_key(account.key)
>>> envelope = seal("bafyresult", public_key_hex(key), job_id=7)
>>> open_envelope(envelope, key, job_id=7)
'bafyresult'
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_utils.crypto import keccak

from chain_scheduler import errors

VERSION = 1
#: Envelopes longer than this are refused unread (a CID is well under 100 bytes).
MAX_ENVELOPE = 512
_KEY_LABEL = b"chain-scheduler delivery key v1"
_INFO = b"chain-scheduler envelope v1"
_NONCE = bytes(12)  # each envelope has its own key, so one fixed nonce is safe


def delivery_key(account_key: bytes) -> X25519PrivateKey:
    """The client's X25519 delivery key, derived from its 32-byte account private key."""
    return X25519PrivateKey.from_private_bytes(keccak(_KEY_LABEL + bytes(account_key)))


def public_key_hex(key: X25519PrivateKey) -> str:
    """The public half of a delivery key, as the spec's ``delivery_key`` names it (64 hex digits)."""
    return _raw(key.public_key()).hex()


def seal(result_cid: str, recipient_hex: str, *, job_id: int) -> bytes:
    """Encrypt ``result_cid`` to the delivery key ``recipient_hex`` for job ``job_id``.

    Raises:
        ValueError: ``recipient_hex`` is not 32 bytes of hex.
    """
    recipient = X25519PublicKey.from_public_bytes(_key_bytes(recipient_hex))
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pub = _raw(ephemeral.public_key())
    cipher = ChaCha20Poly1305(_derive(ephemeral.exchange(recipient), ephemeral_pub, _raw(recipient)))
    sealed = cipher.encrypt(_NONCE, result_cid.encode(), _aad(job_id, _raw(recipient)))
    return bytes([VERSION]) + ephemeral_pub + sealed


def open_envelope(envelope: bytes, key: X25519PrivateKey, *, job_id: int) -> str:
    """The CID inside ``envelope``, for the holder of delivery key ``key``.

    Raises:
        SealError: the envelope is empty, malformed, for another key or job, or tampered with.
    """
    if not envelope:
        raise errors.SealError("the reveal carries no envelope: its spec named no delivery key")
    if len(envelope) > MAX_ENVELOPE or len(envelope) < 1 + 32 + 16 or envelope[0] != VERSION:
        raise errors.SealError(f"not a version-{VERSION} envelope ({len(envelope)} bytes)")
    ephemeral_pub, sealed = envelope[1:33], envelope[33:]
    own = _raw(key.public_key())
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(ephemeral_pub))
        plain = ChaCha20Poly1305(_derive(shared, ephemeral_pub, own)).decrypt(_NONCE, sealed, _aad(job_id, own))
        return plain.decode()
    except (InvalidTag, ValueError, UnicodeDecodeError) as exc:
        raise errors.SealError(f"the envelope does not open with this key for job {job_id}") from exc


def _derive(shared: bytes, ephemeral_pub: bytes, recipient_pub: bytes) -> bytes:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + ephemeral_pub + recipient_pub)
    return kdf.derive(shared)


def _aad(job_id: int, recipient_pub: bytes) -> bytes:
    return job_id.to_bytes(32, "big") + recipient_pub


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key_bytes(value: str) -> bytes:
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"a delivery key is 32 bytes of hex (64 digits), not {value!r}")
    return raw
