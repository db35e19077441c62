"""The client SDK: submit a job from Python, wait for it, fetch its result, read its receipt.

:class:`Client` uploads a job's program and inputs to the content store, stores
the job spec, and posts the job with its escrow; the :class:`JobHandle` it
returns follows the job on chain. Results are taken from the chain, never from a
provider's word: the accepted result CID is the one whose digest the contract
sealed in the winning slot.

Before any wei is locked, :meth:`Client.submit` checks what would make every
provider end the job in a failure result (its spec against its terms, limits
included; the program: a valid WASI command module, or a ``docker save``
tarball whose config matches its digest; every stored input tree safe to
unpack) and refuses it with :class:`~chain_scheduler.errors.SpecError`.
``force=True`` posts it anyway: the providers then agree on a failure result
and are paid the job's ``min_units``.

Example:
    >>> from pathlib import Path
    >>> from chain_scheduler import Client
    >>> with Client(rpc_url="http://127.0.0.1:8545", contract=address, key=account,
    ...             store="local:.devnet/store") as client:
    ...     job = client.submit(module=Path("wordcount.wasm"), inputs={"text": Path("corpus/")},
    ...                         k=3, m=2, max_price=5, max_units=50_000_000, collateral=10**16)
    ...     job.wait(timeout=120)
    ...     outputs = job.fetch(Path("result"))
    ...     print((outputs / "wc.txt").read_text())
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import wasmtime
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3

from chain_scheduler import errors
from chain_scheduler._keys import devnet_key
from chain_scheduler._market import DEFAULT_GAS, Market
from chain_scheduler._model import Executor, FailReason, Job, JobId, JobStatus, JobTerms, Round, SafetyClass, Wei
from chain_scheduler._rpc import http_web3, rpc_call
from chain_scheduler._sealing import delivery_key, open_envelope, public_key_hex
from chain_scheduler._spec import InputRef, JobSpec, Limits, open_result_cid
from storage import BackendError, ContentNotFound, ContentStore, StorageError, open_store

logger = logging.getLogger(__name__)

#: The devnet account a client signs with by default (0 deploys, 2 and up are providers).
CLIENT_ACCOUNT = 1

#: ``min_units`` of a job unless the client sets it: the units each paid replica is billed at
#: least, failure results included. 0 keeps every job paid exactly ``price × metered units``:
#: a floor would raise the price of every small job, and one figure cannot suit both units
#: (Wasm fuel and Docker CPU ms differ by about a million); the checks ``submit`` makes keep an
#: honest client's job from ending in a failure result of no work, and a provider that wants
#: to be paid for such results bids only on jobs whose floor covers its costs.
DEFAULT_MIN_UNITS = 0
# How a refusal by the pre-post checks ends (the CLI says --force).
_NOT_POSTED = "(nothing was posted; force=True posts it anyway)"
#: Largest Wasm module ``submit`` reads back from the store to check it (the executor's default limit).
MAX_MODULE_BYTES = 64 * 1024 * 1024

#: What :meth:`JobHandle.wait` waits for by default: a result the chain accepted.
DONE = frozenset({JobStatus.SUCCEEDED, JobStatus.FINALIZED})
_ENDED_BADLY = (JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class ProviderReceipt:
    """What one provider was paid for a job, and why.

    Attributes:
        provider: The provider's address.
        slot: Its slot in the job.
        price: Its bid, in wei per unit.
        units: Units it was paid for (the revealed usage, or the median for Docker jobs).
        amount: Wei paid; ``price × units`` for an honest replica.
        reported: The usage this provider revealed (Docker jobs are paid the lower
            median of the agreeing replicas' reports, so it may differ from ``units``).
        seat: How it got its slot: ``"bid"`` (a main replica that bid for it),
            ``"lottery"`` (a main replica drawn by stake from a lottery's entrants),
            ``"audit"`` or ``"verify"`` (drawn by stake from the verifier pool).
        votes: Seats of its round the slot holds: a verifier drawn for several seats
            holds one slot with a vote per seat, and is paid ``price × units`` per vote.
    """

    provider: str
    slot: int
    price: int
    units: int
    amount: Wei
    reported: int | None = None
    seat: str = "bid"
    votes: int = 1


@dataclass(frozen=True, slots=True)
class SlashRecord:
    """A provider whose collateral a job took.

    Attributes:
        provider: The provider's address.
        slot: Its slot.
        amount: Collateral taken, in wei (to the slash pool, shared by the agreeing majority and the client).
        reopened: Whether the slot was opened again for another provider.
    """

    provider: str
    slot: int
    amount: Wei
    reopened: bool


@dataclass(frozen=True, slots=True)
class JobReceipt:
    """The metering and payments of a finalized job, all read from the chain and the result.

    Attributes:
        job_id: The job.
        result_cid: The accepted result.
        consensus: The result's ``receipt.json`` (what every honest replica reported:
            executor, artifact digest, exit code, error, units, usage).
        providers: One entry per paid provider, in payment order.
        slashed: Providers whose collateral was taken (a wrong, late or missing result).
        paid: Wei paid to providers in total.
        refund: Wei returned to the client's credit.
        escrow: Wei the client locked when posting.
    """

    job_id: JobId
    result_cid: str
    consensus: dict[str, Any]
    providers: tuple[ProviderReceipt, ...]
    paid: Wei
    refund: Wei
    escrow: Wei
    slashed: tuple[SlashRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, each provider with its ``price × units × votes = amount`` check."""
        return {
            "job_id": self.job_id,
            "result_cid": self.result_cid,
            "escrow": self.escrow,
            "paid": self.paid,
            "refund": self.refund,
            "consensus": self.consensus,
            "providers": [
                {
                    "provider": p.provider, "slot": p.slot, "price": p.price, "units": p.units,
                    "reported_usage": p.reported, "amount": p.amount,
                    "formula": f"{p.price} x {p.units}" + (f" x {p.votes}" if p.votes > 1 else ""),
                    "seat": p.seat, "votes": p.votes,
                    "checks": p.amount == p.price * p.units * p.votes,
                }
                for p in self.providers
            ],
            "slashed": [
                {"provider": x.provider, "slot": x.slot, "amount": x.amount, "reopened": x.reopened}
                for x in self.slashed
            ],
        }  # fmt: skip


class Client:
    """A market client: one account, one contract, one content store.

    The constructor does no I/O; :meth:`connect` (or ``with``) connects to the node
    and opens the store.

    Args:
        rpc_url: The Ethereum node's HTTP RPC URL (or pass ``w3``).
        w3: A connected Web3 instance (wins over ``rpc_url``).
        contract: The ChainScheduler contract address.
        key: The client's account: a ``LocalAccount`` (signs locally) or an address
            the node signs for (devnet).
        store: A content store, or a store URL for :func:`storage.open_store`
            (``local:PATH``, ``ipfs:/ip4/127.0.0.1/tcp/5001``). A store passed as an
            object is used as is and not closed by :meth:`close`.
        gas: Gas limit per transaction; None estimates each one.
        receipt_timeout: Seconds to wait for a transaction's receipt.

    Example:
        >>> client = Client(rpc_url=anvil_url, contract=market_address,
        ...                 key=devnet_account(1), store="local:/tmp/store").connect()
        >>> job = client.submit(module=Path("noop.wasm"), max_price=2, max_units=10**6,
        ...                     collateral=10**16)
        >>> job.wait(timeout=60).status
        <JobStatus.SUCCEEDED: 4>
        >>> client.close()
    """

    def __init__(
        self,
        *,
        rpc_url: str | None = None,
        w3: Web3 | None = None,
        contract: str,
        key: LocalAccount | str,
        store: ContentStore | str,
        gas: int | None = DEFAULT_GAS,
        receipt_timeout: float = 120.0,
    ) -> None:
        if rpc_url is None and w3 is None:
            raise ValueError("Client needs rpc_url= (e.g. http://127.0.0.1:8545) or a connected w3=.")
        self.rpc_url = rpc_url
        self.contract = contract
        self.key = key
        self.gas = gas
        self.receipt_timeout = receipt_timeout
        self._w3 = w3
        self._store_arg = store
        self._store: ContentStore | None = None
        self._owns_store = False
        self._market: Market | None = None

    @classmethod
    def from_devnet(
        cls,
        root: Path = Path(".devnet"),
        *,
        account: int = CLIENT_ACCOUNT,
        gas: int | None = DEFAULT_GAS,
        receipt_timeout: float = 120.0,
    ) -> Client:
        """A client of the local market that ``chainsched devnet up`` started under ``root``.

        It reads ``root/devnet.json`` (RPC URL, contract, store) and signs with
        devnet account ``account`` (1 by default: 0 deploys, 2 and up are the
        providers). Call :meth:`connect` or use it in a ``with`` block.

        Raises:
            DevnetError: there is no devnet record under ``root``.

        Example:
            >>> with Client.from_devnet() as client:
            ...     job = client.submit(module=Path("examples/wasm/build/noop.wasm"), max_price=2,
            ...                         max_units=10**6, collateral=10**15, challenge_window=0)
            ...     job.wait(timeout=30)
        """
        from chain_scheduler._devnet import Devnet

        record = Devnet(root=root).record()
        if not record.get("contract") or not record.get("rpc_url"):
            raise errors.DevnetError(f"no devnet under {root}: start one with `chainsched devnet up`")
        return cls(
            rpc_url=str(record["rpc_url"]),
            contract=str(record["contract"]),
            key=devnet_key(account),
            store=str(record["store_url"]),
            gas=gas,
            receipt_timeout=receipt_timeout,
        )

    @property
    def delivery_key(self) -> X25519PrivateKey | None:
        """The key that opens the sealed results of this client's jobs (derived from its account
        key), or None when the node signs for the account and no key is at hand."""
        if isinstance(self.key, LocalAccount):
            return delivery_key(bytes(self.key.key))
        return None

    # ------------------------------------------------------------- lifecycle

    def connect(self) -> Self:
        """Connect to the node (checking it answers) and open the content store.

        Raises:
            ChainUnavailable: the node does not answer.
            storage.StorageError: the store cannot be opened.
        """
        if self._market is not None:
            return self
        w3 = self._w3 or http_web3(str(self.rpc_url))
        rpc_call(lambda: w3.eth.chain_id)
        if isinstance(self._store_arg, str):
            self._store = open_store(self._store_arg)
            self._owns_store = True
        else:
            self._store = self._store_arg
        self._w3 = w3
        self._market = Market(
            w3=w3, address=self.contract, account=self.key, gas=self.gas, receipt_timeout=self.receipt_timeout
        )
        logger.debug("client %s connected to contract %s", self._market.account, self._market.address)
        return self

    def close(self) -> None:
        """Close the store if this client opened it. Safe to call twice."""
        if self._store is not None and self._owns_store:
            self._store.close()
        self._store = None
        self._owns_store = False
        self._market = None

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def market(self) -> Market:
        """The contract binding, sending as this client's account."""
        if self._market is None:
            raise RuntimeError("The client is not connected: call connect() or use it in a with block.")
        return self._market

    @property
    def store(self) -> ContentStore:
        """The connected content store."""
        if self._store is None:
            raise RuntimeError("The client is not connected: call connect() or use it in a with block.")
        return self._store

    @property
    def address(self) -> str:
        """The client's account address."""
        return self.market.account

    # --------------------------------------------------------------- submit

    def submit(
        self,
        spec: JobSpec | None = None,
        *,
        module: Path | None = None,
        image: Path | None = None,
        inputs: Mapping[str, Path | JobHandle] | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        k: int = 1,
        m: int = 1,
        max_price: int,
        max_units: int,
        collateral: int,
        min_units: int = DEFAULT_MIN_UNITS,
        verifiers: int = 0,
        audit_bps: int = 0,
        challenge_window: int = 60,
        fill_timeout: int = 300,
        exec_timeout: int = 300,
        reveal_window: int = 120,
        bid_window: int = 0,
        lottery: bool = False,
        capabilities: int = 0,
        parents: Sequence[int | JobHandle] = (),
        safety: SafetyClass | None = None,
        limits: Limits | None = None,
        network: bool = False,
        description: str = "",
        force: bool = False,
    ) -> JobHandle:
        """Upload a job's program and inputs, store its spec, and post it with its escrow.

        Nothing is posted (no wei locked) when the job could only end in a failure
        result: the spec does not fit the terms (limits included: the run must fit in
        half of ``exec_timeout``), the program is not a WASI command module or a
        ``docker save`` tarball whose config matches its digest, or a stored input
        tree cannot be unpacked safely. ``force=True`` posts it anyway.

        Args:
            spec: A ready job spec whose artifact and inputs are already in the store
                (by CID); then ``module``, ``image``, ``inputs``, ``args``, ``env``,
                ``limits``, ``network`` and ``description`` must not be given.
            module: A WASI command module (a Wasm job). Exactly one of ``spec``, ``module`` and ``image``.
            image: A ``docker save`` tarball (a Docker job).
            inputs: Name under ``/inputs`` to a file or directory (uploaded), or to a
                :class:`JobHandle` whose accepted result becomes the input (the job is
                then also a parent).
            args: Command-line arguments.
            env: Environment variables.
            k: Replicas. m: How many must agree.
            max_price: Highest price per unit the client pays (wei).
            max_units: Most units (fuel, CPU-ms) paid per replica.
            collateral: Stake each provider locks per slot.
            min_units: Units each paid replica is billed at least, failure results included
                (at most ``max_units``; default ``DEFAULT_MIN_UNITS``, 0).
            verifiers: Extra verifier slots a challenge may open.
            audit_bps: Probability of a random audit, in basis points.
            challenge_window: Seconds after success during which the result may be challenged.
            fill_timeout: Seconds for providers to take the slots.
            exec_timeout: Seconds for the providers to commit.
            reveal_window: Seconds to reveal after the last commit.
            bid_window: Seconds of bidding before slots go to the cheapest bids (0: first come).
            lottery: Draw the k replicas by stake from the providers that enter during the bid
                window (needs ``bid_window``; they are paid ``max_price``), so that nobody gets
                them by coming first or cheapest: independent replicas.
            capabilities: Extra capability bits the providers need (e.g. ``Capability.GPU``).
            parents: Jobs that must be Finalized before this one runs.
            safety: The safety class; None picks deterministic (Wasm) or nondestructive (Docker).
            limits: Executor limits (memory, time, CPUs).
            network: Ask for network access (destructive Docker jobs only).
            description: Free text for people.
            force: Post even a job every provider would end in a failure result.

        Returns:
            A handle on the posted job.

        Raises:
            ValueError: neither or both of ``module`` and ``image``, a missing input path, or
                ``min_units`` over ``max_units``.
            SpecError: the spec does not validate, names content the store does not hold, or
                (unless ``force``) the job could only end in a failure result; nothing was posted.
            TermsError: the contract refused the terms (e.g. BadReplication).
            OutOfFunds: the account cannot pay the escrow and gas.

        Example:
            >>> job = client.submit(module=Path("wordcount.wasm"), inputs={"text": Path("a.txt")},
            ...                     args=["--top", "10"], k=3, m=2, max_price=5,
            ...                     max_units=50_000_000, collateral=10**16)
            >>> job.job_id
            7
        """
        if not 0 <= min_units <= max_units:
            raise ValueError(f"min_units={min_units} must be between 0 and max_units={max_units}.")
        parent_ids: list[int] = [p.job_id if isinstance(p, JobHandle) else int(p) for p in parents]
        if spec is not None:
            if module is not None or image is not None or inputs or args or env or limits or network or description:
                raise ValueError("submit(spec) takes the program, inputs and limits from the spec: pass only terms.")
            parent_ids += [ref.parent for ref in spec.inputs if ref.parent is not None and ref.parent not in parent_ids]
            named = (spec.artifact, *(r.cid for r in spec.inputs if r.cid))
            missing = [cid for cid in named if not self.store.has(cid)]
            if missing:
                # No provider could run it: refuse before any wei is locked.
                raise errors.SpecError(
                    f"The spec names content the store does not hold: {', '.join(missing)}. "
                    "Upload it first (or point at the store that holds it)."
                )
        else:
            spec = self._build_spec(
                module=module,
                image=image,
                inputs=inputs or {},
                args=args,
                env=env or {},
                limits=limits,
                network=network,
                description=description,
                parent_ids=parent_ids,
                force=force,
            )
        executor = Executor.WASM if spec.executor == "wasm" else Executor.DOCKER
        if verifiers and spec.delivery_key is None and self.delivery_key is not None:
            # Its main results are revealed sealed: they reach this client encrypted to this key.
            spec = spec.model_copy(update={"delivery_key": public_key_hex(self.delivery_key)})
        spec_cid = str(self.store.put_bytes(spec.to_bytes()))
        terms = JobTerms.create(
            client=self.address,
            spec_cid=spec_cid,
            executor=executor,
            safety=safety,
            k=k,
            m=m,
            verifiers=verifiers,
            audit_bps=audit_bps,
            # int(): a Capability flag is iterable, and web3's ABI encoder would take it for a list.
            capabilities=int(capabilities),
            max_price=max_price,
            max_units=max_units,
            min_units=min_units,
            collateral=collateral,
            bid_window=bid_window,
            lottery=lottery,
            fill_timeout=fill_timeout,
            exec_timeout=exec_timeout,
            reveal_window=reveal_window,
            challenge_window=challenge_window,
            parents=tuple(parent_ids),
        )
        if not force:
            self._preflight(spec, terms, artifact_checked=module is not None or image is not None)
        posted = self.market.post_job_tx(spec_cid, terms)
        job_id = JobId(int(posted.event("JobPosted").args["jobId"]))
        logger.info(
            "posted job_id=%d spec=%s k=%d m=%d escrow=%d block=%d",
            job_id, spec_cid, k, m, terms.escrow, posted.block_number,
        )  # fmt: skip
        return JobHandle(client=self, job_id=job_id, from_block=posted.block_number, spec_cid=spec_cid)

    def _build_spec(
        self,
        *,
        module: Path | None,
        image: Path | None,
        inputs: Mapping[str, Path | JobHandle],
        args: Sequence[str],
        env: Mapping[str, str],
        limits: Limits | None,
        network: bool,
        description: str,
        parent_ids: list[int],
        force: bool,
    ) -> JobSpec:
        """Upload the program and the inputs, and build the spec naming them (adds input parents)."""
        if (module is None) == (image is None):
            raise ValueError(
                "submit needs exactly one of spec=, module= (a .wasm file) or image= (a docker save tarball)."
            )
        program = module if module is not None else image
        assert program is not None
        if not program.is_file():
            raise ValueError(f"{program} is not a file.")
        problem = None if force else _artifact_problem("wasm" if module is not None else "docker", program)
        if problem is not None:  # before anything is uploaded
            raise errors.SpecError(f"{program}: {problem}; no provider can run it {_NOT_POSTED}.")
        store = self.store
        artifact = str(store.put_file(program))
        refs: list[InputRef] = []
        for name, source in inputs.items():
            if isinstance(source, JobHandle):
                refs.append(InputRef(parent=source.job_id, path=name))
                if source.job_id not in parent_ids:
                    parent_ids.append(source.job_id)
                continue
            if source.is_dir():
                cid = str(store.put_directory(source))
            elif source.is_file():
                cid = str(store.put_file(source))
            else:
                raise ValueError(f"Input {name!r}: {source} is neither a file nor a directory.")
            refs.append(InputRef(cid=cid, path=name))
        try:
            return JobSpec(
                version=1,
                executor="wasm" if module is not None else "docker",
                artifact=artifact,
                inputs=refs,
                args=list(args),
                env=dict(env),
                limits=limits or Limits(),
                network=network,
                description=description,
            )
        except ValueError as exc:  # pydantic's ValidationError
            raise errors.SpecError(f"The job spec is invalid: {exc}") from exc

    def _preflight(self, spec: JobSpec, terms: JobTerms, *, artifact_checked: bool) -> None:
        """Refuse a job every provider would end in a failure result: what :meth:`submit` checks.

        The spec against the terms (limits included), the artifact (read back from the
        store unless ``artifact_checked``), and every stored input inspected as a
        provider's unpacker would (nothing is fetched). Parents' results are not known
        yet and are not checked.

        Raises:
            SpecError: the one-line reason, saying that nothing was posted.
        """
        try:
            spec.check_terms(terms)
        except errors.SpecError as exc:
            raise errors.SpecError(f"{exc} {_NOT_POSTED}") from None
        if not artifact_checked:
            problem = self._stored_artifact_problem(spec)
            if problem is not None:
                raise errors.SpecError(
                    f"The artifact {spec.artifact}: {problem}; no provider can run it {_NOT_POSTED}."
                )
        for ref in spec.inputs:
            if ref.cid is None:
                continue
            try:
                self.store.inspect(ref.cid)
            except BackendError:
                raise
            except ContentNotFound:
                raise errors.SpecError(
                    f"Input {ref.path!r} ({ref.cid}) is not in the store; upload it first (nothing was posted)."
                ) from None
            except StorageError as exc:
                raise errors.SpecError(
                    f"Input {ref.path!r} ({ref.cid}) cannot be unpacked safely, so every provider would refuse "
                    f"it: {' '.join(str(exc).split())} {_NOT_POSTED}"
                ) from None

    def _stored_artifact_problem(self, spec: JobSpec) -> str | None:
        with tempfile.TemporaryDirectory(prefix="chainsched-artifact-") as tmp:
            path = Path(tmp) / "artifact"
            try:
                self.store.fetch(spec.artifact, path, max_size=MAX_MODULE_BYTES if spec.executor == "wasm" else None)
            except BackendError:
                raise
            except StorageError as exc:
                return f"it cannot be read from the store ({' '.join(str(exc).split())})"
            if not path.is_file() or path.is_symlink():
                return "it is a directory, not a file (a Wasm module or a docker save tarball)"
            return _artifact_problem(spec.executor, path)

    def jobs(self, *, owner: str | None = None, statuses: frozenset[JobStatus] | None = None) -> list[JobHandle]:
        """Jobs on this contract, oldest first, optionally by owner (the posting client) and status.

        Example:
            >>> [j.job_id for j in client.jobs(owner=client.address, statuses=frozenset({JobStatus.OPEN}))]
        """
        posted = self.market.events(names=("JobPosted",))
        wanted_owner = owner.lower() if owner else None
        found = []
        for event in posted:
            if wanted_owner is not None and str(event.args["client"]).lower() != wanted_owner:
                continue
            handle = JobHandle(
                client=self, job_id=JobId(int(event.args["jobId"])), from_block=event.block_number,
                spec_cid=str(event.args["specCid"]),
            )  # fmt: skip
            if statuses is not None and handle.status().status not in statuses:
                continue
            found.append(handle)
        return found

    def job(self, job_id: int, *, from_block: int = 0) -> JobHandle:
        """A handle on an existing job (e.g. one posted earlier or by someone else)."""
        return JobHandle(client=self, job_id=JobId(job_id), from_block=from_block)


def _seat(round_: Round, lottery: bool) -> str:
    """How a slot of ``round_`` was filled: by a bid, a lottery, or a draw from the verifier pool."""
    if round_ != Round.MAIN:
        return round_.name.lower()
    return "lottery" if lottery else "bid"


class JobHandle:
    """A posted job, followed on chain.

    Args:
        client: The connected client that reads the chain and the store.
        job_id: The job.
        from_block: The job's posting block (narrows event searches).
        spec_cid: The job's spec CID, when known.

    Example:
        >>> job = client.submit(module=Path("wordcount.wasm"), inputs={"text": Path("a.txt")},
        ...                     k=3, m=2, max_price=5, max_units=50_000_000, collateral=10**16)
        >>> job.wait(timeout=120, until=JobStatus.FINALIZED)
        >>> outputs = job.fetch(Path("out"))
        >>> for p in job.receipt().providers:
        ...     assert p.amount == p.price * p.units * p.votes
    """

    def __init__(self, *, client: Client, job_id: JobId, from_block: int = 0, spec_cid: str | None = None) -> None:
        self.client = client
        self.job_id = job_id
        self.from_block = from_block
        self.spec_cid = spec_cid

    def __repr__(self) -> str:
        return f"JobHandle(job_id={self.job_id})"

    # ------------------------------------------------------------- status

    def status(self) -> Job:
        """The job's on-chain state (status, round, slots filled, winner, deadline).

        Raises:
            UnknownJob: the contract has no such job.
        """
        job = self.client.market.job(self.job_id)
        if job.status == JobStatus.NONE:
            raise errors.UnknownJob(jobId=self.job_id)
        return job

    def wait(
        self,
        timeout: float,
        *,
        poll: float = 0.5,
        until: JobStatus | frozenset[JobStatus] = DONE,
    ) -> Job:
        """Block until the job reaches one of ``until``'s statuses.

        Args:
            timeout: Seconds to wait at most.
            poll: Seconds between two reads of the chain.
            until: A status or a set of them; by default Succeeded or Finalized.

        Returns:
            The job's state once it got there.

        Raises:
            JobFailed: the job ended Failed or Cancelled (with the reason and refund).
            WaitTimeout: ``timeout`` passed first.

        Example:
            >>> job.wait(timeout=60).status
            <JobStatus.SUCCEEDED: 4>
        """
        wanted = _wanted(until)
        deadline = time.monotonic() + timeout
        while True:
            job = self._check(wanted)
            if job is not None:
                return job
            if time.monotonic() >= deadline:
                raise self._timeout(wanted, timeout)
            time.sleep(poll)

    async def wait_async(
        self,
        timeout: float,
        *,
        poll: float = 0.5,
        until: JobStatus | frozenset[JobStatus] = DONE,
    ) -> Job:
        """:meth:`wait` for asyncio code: polls with ``asyncio.sleep``, each chain read in a thread.

        Example:
            >>> jobs = [client.submit(...) for _ in range(4)]
            >>> await asyncio.gather(*(j.wait_async(timeout=120) for j in jobs))
        """
        wanted = _wanted(until)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = await asyncio.to_thread(self._check, wanted)
            if job is not None:
                return job
            if loop.time() >= deadline:
                raise await asyncio.to_thread(self._timeout, wanted, timeout)
            await asyncio.sleep(poll)

    def _check(self, wanted: frozenset[JobStatus]) -> Job | None:
        job = self.status()
        if job.status in wanted:
            return job
        if job.status in _ENDED_BADLY:
            raise self._failure(job.status)
        return None

    def _timeout(self, wanted: frozenset[JobStatus], timeout: float) -> errors.WaitTimeout:
        names = " or ".join(s.name.title() for s in sorted(wanted))
        return errors.WaitTimeout(job_id=self.job_id, status=self.status().status, until=names, timeout=timeout)

    def _failure(self, status: JobStatus) -> errors.JobFailed:
        market = self.client.market
        name = "JobFailed" if status == JobStatus.FAILED else "JobCancelled"
        found = market.events(from_block=self.from_block, names=(name,), job_id=self.job_id)
        reason = FailReason(int(found[-1].args["reason"])) if found and status == JobStatus.FAILED else None
        refund = int(found[-1].args["refund"]) if found else None
        return errors.JobFailed(job_id=self.job_id, status=status, reason=reason, refund=refund)

    # ------------------------------------------------------------- result

    def result_cid(self) -> str:
        """The accepted result's CID, as the chain sealed it.

        The CID is the winning slot's ``ResultRevealed`` or the job's ``ResultPublished``
        event. A job with verifiers reveals its main results sealed (only the CID's hash
        on chain) until someone publishes the CID after finalization; until then the
        client opens the envelope of an agreeing slot with its delivery key. Either way
        the CID is checked against the digest the contract stored for the winner.

        Raises:
            ResultNotReady: the job is still Open, Running or Revealing.
            JobFailed: it ended Failed or Cancelled.
            SealError: the result is sealed and no envelope opens with this client's key
                (another account's job, or a spec without ``delivery_key``): wait for it
                to be published.
            ChainSchedulerError: no reveal matches the sealed digest (wrong contract, pruned logs).
        """
        return self._result_cid(self.status())

    def _result_cid(self, job: Job) -> str:
        """:meth:`result_cid`, for the job as ``job`` (its status, read once) has it."""
        if job.status in _ENDED_BADLY:
            raise self._failure(job.status)
        if job.status not in (JobStatus.SUCCEEDED, JobStatus.FINALIZED):
            raise errors.ResultNotReady(job_id=self.job_id, status=job.status)
        market = self.client.market
        digest = market.slot(self.job_id, job.winner).result_digest
        events = market.events(
            from_block=self.from_block, names=("ResultRevealed", "ResultPublished", "ResultSealed"), job_id=self.job_id
        )
        public = open_result_cid(events, job.winner, digest)
        if public is not None:
            return public
        if not market.terms_of(self.job_id).reveals_sealed(job.winner):
            raise errors.ChainSchedulerError(
                f"Job {self.job_id} has slot {job.winner} winning, but no ResultRevealed event from block "
                f"{self.from_block} on matches its sealed digest {digest.hex()}. Is this the right contract, "
                "and does the node keep old logs?"
            )
        key = self.client.delivery_key
        for event in reversed(events):
            if key is None or event.name != "ResultSealed" or bytes(event.args["resultHash"])[:24] != digest:
                continue
            try:
                cid = open_envelope(bytes(event.args["envelope"]), key, job_id=self.job_id)
            except errors.SealError as exc:
                logger.debug("job_id=%d slot %s: %s", self.job_id, event.args["slot"], exc)
                continue
            if keccak(cid.encode())[:24] == digest:
                return cid
        raise errors.SealError(
            f"Job {self.job_id}'s result was revealed sealed and no envelope opens with this client's delivery "
            f"key. It can be read once published (after finalization). See: chainsched job status {self.job_id}"
        )

    def fetch(self, dest: Path) -> Path:
        """Write the accepted result directory to ``dest`` and return its ``outputs`` directory.

        ``dest`` (which must not exist) receives ``outputs/`` (what the program wrote,
        plus its stdout and stderr) and ``receipt.json``.

        Raises:
            ResultNotReady, JobFailed: see :meth:`result_cid`.
            storage.DestinationExists: ``dest`` exists.

        Example:
            >>> outputs = job.fetch(Path("result"))
            >>> (outputs / "wc.txt").read_text()
        """
        self.client.store.fetch(self.result_cid(), dest)
        return dest / "outputs"

    def receipt(self) -> JobReceipt:
        """Who was paid what, at which price for how many units, and the result's consensus receipt.

        Everything comes from the chain (``SlotAssigned``, ``VoteAdded``, ``ProviderPaid``,
        ``JobFinalized``) and the accepted result's ``receipt.json``, so anyone can
        check what was paid and why.

        Raises:
            ResultNotReady: the job is not Finalized yet (payments happen at finalization).
            JobFailed: it ended Failed or Cancelled.

        Example:
            >>> r = job.receipt()
            >>> [(p.provider, p.price, p.units, p.amount) for p in r.providers]
        """
        job = self.status()
        if job.status in _ENDED_BADLY:
            raise self._failure(job.status)
        if job.status != JobStatus.FINALIZED:
            raise errors.ResultNotReady(job_id=self.job_id, status=job.status)
        cid = self.result_cid()
        market = self.client.market
        events = market.events(
            from_block=self.from_block,
            names=(
                "JobPosted",
                "SlotAssigned",
                "VoteAdded",
                "ResultRevealed",
                "ResultSealed",
                "SlotSlashed",
                "ProviderPaid",
                "JobFinalized",
            ),
            job_id=self.job_id,
        )
        prices: dict[tuple[int, str], int] = {}
        seats: dict[tuple[int, str], str] = {}
        votes: dict[tuple[int, str], int] = {}
        lottery = market.terms_of(self.job_id).lottery
        usage: dict[tuple[int, str], int] = {}
        providers: list[ProviderReceipt] = []
        slashed: list[SlashRecord] = []
        paid = refund = escrow = 0
        for event in events:
            a = event.args
            if event.name == "JobPosted":
                escrow = int(a["escrow"])
            elif event.name == "SlotAssigned":
                # A reopened slot is assigned again: the latest assignment is the one paid.
                prices[(int(a["slot"]), str(a["provider"]))] = int(a["price"])
                seats[(int(a["slot"]), str(a["provider"]))] = _seat(Round(int(a["round"])), lottery)
                votes[(int(a["slot"]), str(a["provider"]))] = 1
            elif event.name == "VoteAdded":
                votes[(int(a["slot"]), str(a["provider"]))] = int(a["votes"])
            elif event.name in ("ResultRevealed", "ResultSealed"):
                usage[(int(a["slot"]), str(a["provider"]))] = int(a["usage"])
            elif event.name == "SlotSlashed":
                slashed.append(
                    SlashRecord(
                        provider=str(a["provider"]),
                        slot=int(a["slot"]),
                        amount=Wei(int(a["amount"])),
                        reopened=bool(a["reopened"]),
                    )
                )
            elif event.name == "ProviderPaid":
                slot, provider = int(a["slot"]), str(a["provider"])
                providers.append(
                    ProviderReceipt(
                        provider=provider,
                        slot=slot,
                        price=prices.get((slot, provider), 0),
                        units=int(a["units"]),
                        amount=Wei(int(a["amount"])),
                        reported=usage.get((slot, provider)),
                        seat=seats.get((slot, provider), "bid"),
                        votes=votes.get((slot, provider), 1),
                    )
                )
            elif event.name == "JobFinalized":
                paid, refund = int(a["paid"]), int(a["refund"])
        with tempfile.TemporaryDirectory(prefix="chainsched-receipt-") as tmp:
            target = Path(tmp) / "result"
            self.client.store.fetch(cid, target)
            receipt_file = target / "receipt.json"
            consensus: dict[str, Any] = json.loads(receipt_file.read_text()) if receipt_file.is_file() else {}
        return JobReceipt(
            job_id=self.job_id,
            result_cid=cid,
            consensus=consensus,
            providers=tuple(providers),
            paid=Wei(paid),
            refund=Wei(refund),
            escrow=Wei(escrow),
            slashed=tuple(slashed),
        )

    def logs(self) -> tuple[str, str]:
        """The job's stdout and stderr, from its accepted result.

        Raises:
            ResultNotReady, JobFailed: see :meth:`result_cid`.

        Example:
            >>> out, err = job.logs()
        """
        with tempfile.TemporaryDirectory(prefix="chainsched-logs-") as tmp:
            outputs = self.fetch(Path(tmp) / "result")
            texts = []
            for name in ("stdout", "stderr"):
                path = outputs / name
                texts.append(path.read_text(errors="replace") if path.is_file() else "")
        return texts[0], texts[1]

    # ------------------------------------------------------------- actions

    def terms(self) -> JobTerms:
        """The job's terms, as posted."""
        return self.client.market.terms_of(self.job_id)

    def cancel(self) -> int:
        """Cancel the job while it is Open (only its client may); returns the refund credited.

        Raises:
            NotCancellable: its slots are already filled.
            NotClient: this client did not post it.
        """
        tx = self.client.market.cancel(self.job_id)
        return int(tx.event("JobCancelled").args["refund"])

    def challenge(self, *, unread: bool | None = None) -> int:
        """Dispute a Succeeded job's result in its challenge window, paying the job's collateral as bond.

        Verifier providers re-run the job; the bond comes back with a share of the
        slashed collateral if the result was wrong, and goes to the accused otherwise.
        A challenge ``unread`` (the sealed result's envelope did not open for this client;
        by default: whether :meth:`result_cid` fails to open it) gets its bond back even
        when the result stands. Returns the bond paid.

        Raises:
            NotChallengeable: the job is not Succeeded, or its window closed.
        """
        if unread is None:
            unread = self.envelope_unreadable()
        bond = self.terms().collateral
        self.client.market.challenge(self.job_id, bond=bond, unread=unread)
        return bond

    def envelope_unreadable(self) -> bool:
        """Whether this Succeeded job's accepted result is sealed and no envelope of it opens
        for this client (then a challenge is "unread": see :meth:`challenge`)."""
        job = self.status()
        if job.status != JobStatus.SUCCEEDED or not self.terms().reveals_sealed(job.winner):
            return False
        try:
            self._result_cid(job)
        except errors.SealError:
            return True
        return False

    def publish(self) -> str:
        """Put this Succeeded job's sealed result CID on chain once its challenge window is
        over, for its child jobs and everyone else. That settles the job (a sealed result is
        paid for only once published).

        Its winning provider does this; the client can too, having read the CID from its
        envelope. Returns the CID published.

        Raises:
            WrongStatus: the job is not Succeeded.
            DeadlineNotReached: its challenge window is still open.
            SealError: the CID is not known to this client (see :meth:`result_cid`).
        """
        cid = self.result_cid()
        self.client.market.publish(self.job_id, cid)
        return cid

    def finalize(self) -> None:
        """Settle a Succeeded job whose challenge window has passed (anyone may; a keeper usually does).

        Raises:
            WrongStatus, DeadlineNotReached: it is not Succeeded, or its window is still open.
        """
        self.client.market.finalize(self.job_id)

    def timeout(self) -> Job:
        """Move the job past its current phase once that phase's deadline has passed (anyone may).

        Open past its fill timeout: filled slots close the bidding, otherwise the job
        fails with a refund. Running past its commit deadline: the slots that did not
        commit are slashed and reopened (or the job goes on to its reveals, or fails).
        Revealing past its reveal deadline: silent slots are slashed and the tally runs.
        Succeeded past its challenge window: finalized (payments and refund). Daemons do
        this as keepers; this is for when none does.

        Returns:
            The job's state after the move.

        Raises:
            DeadlineNotReached: the phase has not expired yet (nothing was sent).
            WrongStatus: the job has no phase to move (Finalized, Failed or Cancelled).
            UnknownJob: the contract has no such job.

        Example:
            >>> job.timeout().status
            <JobStatus.FAILED: 6>
        """
        job = self.status()
        market = self.client.market
        if job.status not in (JobStatus.OPEN, JobStatus.RUNNING, JobStatus.REVEALING, JobStatus.SUCCEEDED):
            raise errors.WrongStatus(jobId=self.job_id, expected=JobStatus.RUNNING, actual=job.status)
        now = int(market.w3.eth.get_block("latest")["timestamp"])
        if now < job.deadline:
            raise errors.DeadlineNotReached(jobId=self.job_id, deadline=job.deadline, now_=now)
        if job.status == JobStatus.SUCCEEDED:
            market.finalize(self.job_id)
        else:
            market.timeout(self.job_id)
        return self.status()


def _wanted(until: JobStatus | frozenset[JobStatus]) -> frozenset[JobStatus]:
    return frozenset({until}) if isinstance(until, JobStatus) else frozenset(until)


_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_JSON_MEMBER = 16 * 1024 * 1024


def _artifact_problem(executor: str, path: Path) -> str | None:
    """Why no provider could run this program file, or None: what :meth:`Client.submit` checks.

    Wasm: a module that compiles and links against WASI preview1 (with the features the
    providers' deterministic engine enables) and exports ``_start``. Docker: a
    ``docker save`` tarball with one image whose config hashes to the digest it is filed
    under and whose layers are all there (the providers also hash every layer).
    """
    if executor == "wasm":
        return _wasm_problem(path.read_bytes())
    return _tarball_problem(path)


def _wasm_problem(module: bytes) -> str | None:
    if not module.startswith(b"\0asm"):
        return "it is not a Wasm module (it does not start with the \\0asm magic bytes)"
    config = wasmtime.Config()
    # The features the providers' engine refuses, for determinism.
    config.wasm_threads = False
    config.shared_memory = False
    config.wasm_relaxed_simd = False
    config.wasm_memory64 = False
    engine = wasmtime.Engine(config)
    try:
        compiled = wasmtime.Module(engine, module)
    except wasmtime.WasmtimeError as exc:
        return f"it is not a valid Wasm module ({_first_line(exc)})"
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    try:
        linker.instantiate_pre(compiled)
    except wasmtime.WasmtimeError as exc:
        return f"its imports cannot be satisfied by WASI preview1 ({_first_line(exc)})"
    if not any(e.name == "_start" and isinstance(e.type, wasmtime.FuncType) for e in compiled.exports):
        return "it is not a WASI command: it exports no _start function"
    return None


def _tarball_problem(path: Path) -> str | None:
    try:
        with tarfile.open(path, mode="r:*") as archive:
            return _image_problem(archive)
    except tarfile.TarError:
        return "it is not a docker save tarball (not a tar archive, plain or compressed)"


def _image_problem(archive: tarfile.TarFile) -> str | None:
    try:
        manifest = json.loads(_small_member(archive, "manifest.json"))
        entry = manifest[0] if isinstance(manifest, list) and len(manifest) == 1 else None
        config_name = entry.get("Config") if isinstance(entry, dict) else None
        layers = entry.get("Layers") if isinstance(entry, dict) else None
        if not isinstance(config_name, str) or not isinstance(layers, list):
            return "its manifest.json does not describe exactly one image with a Config and Layers"
        claimed = Path(config_name).name.removesuffix(".json")
        if not _HEX64.fullmatch(claimed):
            return f"its image config {config_name!r} is not filed under a sha256 digest"
        config = _small_member(archive, config_name)
        if hashlib.sha256(config).hexdigest() != claimed:
            return f"its image config does not hash to sha256:{claimed}, the digest it is filed under"
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            return f"its manifest lists {len(layers)} layers and its config {len(diff_ids)}"
        for layer in layers:
            _member(archive, str(layer))
    except _NotThere as missing:
        return f"it is not a docker save tarball: {missing}"
    except (ValueError, KeyError, TypeError) as exc:
        return f"it is not a docker save tarball ({type(exc).__name__}: {exc})"
    return None


class _NotThere(Exception):
    """A member a docker save tarball must hold is missing or not a regular file."""


def _member(archive: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    try:
        info = archive.getmember(name)
    except KeyError:
        raise _NotThere(f"it has no {name!r}") from None
    if not info.isfile():
        raise _NotThere(f"{name!r} is not a regular file")
    return info


def _small_member(archive: tarfile.TarFile, name: str) -> bytes:
    info = _member(archive, name)
    if info.size > _MAX_JSON_MEMBER:
        raise _NotThere(f"{name!r} is {info.size} bytes, more than a manifest or config can be")
    stream = archive.extractfile(info)
    assert stream is not None  # a regular file always has content
    return stream.read()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
