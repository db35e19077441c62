"""The provider daemon beyond the main round: Docker jobs, escalation and client challenges.

Like ``test_node.py`` (whose helpers this module reuses), every test runs real
``compute-node run`` processes against a real anvil chain, and checks the
outcome on chain. Here:

- a nondestructive Docker job (k=3, m=2) on a real engine: the replicas agree
  on the result and are each paid the lower median of their CPU times;
- an escalation: three main replicas that all disagree open a Verify round,
  which three fresh daemons decide;
- a client challenge of a wrong k=1 result, upheld by three fresh verifiers;
- a griefing challenge of a right result, sealed: a copycat verifier has only the
  result's hash to copy, reveals nothing, and loses its collateral;
- a lottery job, whose two replicas are drawn from the four daemons that entered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors
import pytest
import test_node
from test_node import (
    COLLATERAL,
    ETH,
    TEXT,
    Chain,
    devnet_account,
    expected_total_line,
    finalize_after_challenge_window,
    post_wordcount_job,
    read_result_file,
    wait_for,
    withdrawn,
)

from chain_scheduler import (
    Capability,
    Client,
    Executor,
    InputRef,
    JobHandle,
    JobId,
    JobSpec,
    JobStatus,
    JobTerms,
    Limits,
    Round,
    delivery_key,
    errors,
    lower_median,
    open_envelope,
    pool_shares,
    resolve_parent_result,
    result_hash,
)
from storage import LocalStore

if TYPE_CHECKING:
    from conftest_docker import BusyboxImage

pytest_plugins = ["conftest_docker"]
pytestmark = pytest.mark.timeout(120)

#: The repository a daemon's Docker executor tags its cached images in (its default).
NODE_IMAGE_REPOSITORY = "chainsched-artifact"
#: The parent cgroup it meters runs under (its default).
NODE_CGROUP_PARENT = "chainsched"


@dataclass
class Daemon(test_node.Daemon):
    """A ``compute-node run`` process that may also run Docker jobs."""

    docker: bool = False

    def extra_args(self) -> list[str]:
        return ["--docker"] if self.docker else []


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with test_node.market_on_anvil(tmp_path_factory.mktemp("node-rounds"), accounts=26) as c:
        yield c


daemons = test_node.daemons  # the same fixture: daemons a test starts, killed at teardown


@pytest.fixture
def node_docker_leftovers(docker_engine: docker.DockerClient) -> Iterator[None]:
    """Remove what the daemons' Docker executors add during the test: image cache tags, parent cgroups."""
    tags_before = {tag for image in docker_engine.images.list(name=NODE_IMAGE_REPOSITORY) for tag in image.tags}
    cgroups_before = set(_node_cgroup_parents())
    yield
    for image in docker_engine.images.list(name=NODE_IMAGE_REPOSITORY):
        for tag in image.tags:
            if tag.startswith(f"{NODE_IMAGE_REPOSITORY}:") and tag not in tags_before:
                with contextlib.suppress(docker.errors.APIError):
                    docker_engine.images.remove(tag)
    for parent in set(_node_cgroup_parents()) - cgroups_before:
        with contextlib.suppress(OSError):
            parent.rmdir()  # only succeeds when empty: per-run cgroups are the executor's to remove


def _node_cgroup_parents() -> list[Path]:
    """The daemons' default parent cgroup (``/chainsched``) under every v1 controller, or v2's root."""
    root = Path("/sys/fs/cgroup")
    return [p for p in (*root.glob(f"*/{NODE_CGROUP_PARENT}"), root / NODE_CGROUP_PARENT) if p.is_dir()]


#: Stake for one collateral and a half: a pool member drawn for a second seat of a round
#: would gain a vote in its slot, so with more stake a pool of three could fill three seats
#: with two members. These tests want three verifiers.
ONE_SEAT = COLLATERAL * 3 // 2


def register(chain: Chain, capabilities: Capability, *indexes: int, stake: int = ETH) -> None:
    for i in indexes:
        provider = chain.market.with_account(devnet_account(i))
        provider.register(capabilities, stake)


def events(chain: Chain, job_id: int, name: str) -> list[dict[str, object]]:
    return [e.args for e in chain.events(job_id, name)]


def has_withdrawn(chain: Chain, address: str, amount: int) -> Callable[[], bool]:
    return lambda: withdrawn(chain, address) == amount


def by_provider(chain: Chain, job_id: int, name: str) -> dict[str, dict[str, object]]:
    return {str(args["provider"]): args for args in events(chain, job_id, name)}


# --------------------------------------------------------------------- tests


def test_three_docker_daemons_agree_on_the_result_and_are_paid_the_median_cpu_time(
    chain: Chain, daemons: list[test_node.Daemon], busybox_image: BusyboxImage, node_docker_leftovers: None
) -> None:
    # Given three providers that run Docker jobs, each at its own price
    register(chain, Capability.WASM | Capability.DOCKER, 2, 3, 4)
    daemons += [Daemon(chain=chain, index=i, name=f"docker{i}", price=i, docker=True).start() for i in (2, 3, 4)]

    # When a client posts a nondestructive k=3 m=2 job whose artifact is the busybox image
    inputs = chain.work / "docker-inputs"
    inputs.mkdir()
    (inputs / "text.txt").write_text(TEXT)
    with LocalStore(root=chain.store_path) as store:
        image_cid = str(store.put_file(busybox_image.tarball))
        inputs_cid = str(store.put_directory(inputs))
        spec = JobSpec(version=1, executor="docker", artifact=image_cid, inputs=[InputRef(cid=inputs_cid, path="text")],
                       limits=Limits(memory_mb=64, timeout_s=30))  # fmt: skip
        spec_cid = str(store.put_bytes(spec.to_bytes()))
    client = chain.market.with_account(devnet_account(1))
    terms = JobTerms.create(client=client.account, spec_cid=spec_cid, executor=Executor.DOCKER, k=3, m=2,
                            max_price=5, max_units=60_000, collateral=COLLATERAL, fill_timeout=60, exec_timeout=60,
                            reveal_window=60, challenge_window=test_node.CHALLENGE_WINDOW)  # fmt: skip
    job_id = int(client.post_job(spec_cid, terms))

    # Then the three run it in containers, agree on the result CID, and the job finalizes
    finalize_after_challenge_window(chain, job_id, daemons)
    revealed = by_provider(chain, job_id, "ResultRevealed")
    assert set(revealed) == {d.address for d in daemons}
    assert len({args["resultCid"] for args in revealed.values()}) == 1
    usages = [int(str(args["usage"])) for args in revealed.values()]
    assert all(0 < u < terms.max_units for u in usages)
    result_cid = str(next(iter(revealed.values()))["resultCid"])
    lines = TEXT.count("\n")
    assert read_result_file(chain, result_cid, "counts.tsv").splitlines()[-1] == (
        f"total\t{lines}\t{len(TEXT.split())}\t{len(TEXT.encode())}"
    )

    # And each is paid the lower median CPU time at its own price, and withdraws it
    units = lower_median(usages)
    paid = by_provider(chain, job_id, "ProviderPaid")
    assert set(paid) == {d.address for d in daemons}
    for d in daemons:
        assert paid[d.address]["units"] == units
        assert paid[d.address]["amount"] == d.price * units
    assert not events(chain, job_id, "SlotSlashed")
    assert events(chain, job_id, "JobFinalized")[0]["paid"] == sum(d.price for d in daemons) * units
    for d in daemons:
        wait_for(f"{d.name} to withdraw", has_withdrawn(chain, d.address, d.price * units), daemons=daemons)
        assert "docker engine" in d.log()

    # And SIGTERM stops each cleanly, its Docker executor closed
    for d in daemons:
        assert d.terminate() == 0, d.log()
        assert "node stopped" in d.log()


def test_disagreeing_main_replicas_escalate_to_fresh_verifiers_who_decide(
    chain: Chain, daemons: list[test_node.Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given an honest, a wrong and a lazy daemon: no two of them agree; three more providers
    # are the verifier pool
    test_node.empty_pool(chain)
    register(chain, Capability.WASM, 5, 6, 7)
    register(chain, Capability.WASM | Capability.VERIFIER, 8, 9, 10, stake=ONE_SEAT)
    honest = Daemon(chain=chain, index=5, name="honest5").start()
    wrong = Daemon(chain=chain, index=6, name="wrong6", behaviour="wrong").start()
    lazy = Daemon(chain=chain, index=7, name="lazy7", behaviour="lazy").start()
    daemons += [honest, wrong, lazy]

    # When they take the main slots of a k=3 m=2 job with three verifiers
    job_id, terms = post_wordcount_job(chain, wasm_examples, verifiers=3)
    wait_for("the main slots to fill", lambda: chain.market.job(job_id).status != JobStatus.OPEN, daemons=daemons)
    # and the three pool members start their daemons once the main round is taken
    verifiers = [Daemon(chain=chain, index=i, name=f"verifier{i}", price=3).start() for i in (8, 9, 10)]
    daemons += verifiers

    # Then no quorum forms, a Verify round opens, a keeper draws the pool into its seats, and the
    # verifiers' majority decides
    finalize_after_challenge_window(chain, job_id, daemons)
    assert [args["round"] for args in events(chain, job_id, "RoundOpened")] == [Round.VERIFY]
    slots = chain.market.slots(job_id, terms)
    assert {s.provider for s in slots[: terms.k]} == {honest.address, wrong.address, lazy.address}
    assert {s.provider for s in slots[terms.k + 1 :]} == {d.address for d in verifiers}
    # The main results were revealed sealed (hashes only), the verifiers' in the open
    sealed = {p: bytes(args["resultHash"]) for p, args in by_provider(chain, job_id, "ResultSealed").items()}
    revealed = {p: str(args["resultCid"]) for p, args in by_provider(chain, job_id, "ResultRevealed").items()}
    assert set(sealed) == {honest.address, wrong.address, lazy.address}
    assert set(revealed) == {d.address for d in verifiers}
    assert len(set(sealed.values())) == 3
    assert {result_hash(revealed[d.address]) for d in verifiers} == {sealed[honest.address]}
    succeeded = events(chain, job_id, "JobSucceeded")
    assert len(succeeded) == 1 and int(str(succeeded[0]["winnerSlot"])) > terms.k
    winner = revealed[verifiers[0].address]
    assert read_result_file(chain, winner, "wc.txt").strip().splitlines()[-1] == expected_total_line()

    # And the honest main replica and the verifiers are paid, the wrong and the lazy slashed
    slashed = by_provider(chain, job_id, "SlotSlashed")
    assert set(slashed) == {wrong.address, lazy.address}
    assert all(args["amount"] == COLLATERAL for args in slashed.values())
    paid = by_provider(chain, job_id, "ProviderPaid")
    winners = [honest, *verifiers]
    assert set(paid) == {d.address for d in winners}
    fuel = int(str(paid[honest.address]["units"]))
    share, _client_share = pool_shares(2 * COLLATERAL, len(winners))
    for d in winners:
        price = d.price if d is honest else terms.max_price  # drawn seats are held at the job's max price
        assert paid[d.address]["amount"] == price * fuel
        wait_for(f"{d.name} to withdraw", has_withdrawn(chain, d.address, price * fuel + share), daemons=daemons)
    # The main replicas never bid for the verification: the daemon knows it is not fresh.
    assert not any("bid refused" in d.log() for d in (honest, wrong, lazy))
    for cheat in (wrong, lazy):
        assert chain.market.provider(cheat.address).slashed == 1
        assert chain.market.provider(cheat.address).free == ETH - COLLATERAL


def test_a_client_challenge_of_a_wrong_result_is_upheld_by_fresh_verifiers(
    chain: Chain, daemons: list[test_node.Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given a k=1 job with three verifiers whose only replica is wrong, and a pool of three
    test_node.empty_pool(chain)
    register(chain, Capability.WASM, 11)
    register(chain, Capability.WASM | Capability.VERIFIER, 12, 13, 14, stake=ONE_SEAT)
    cheat = Daemon(chain=chain, index=11, name="wrong11", behaviour="wrong").start()
    daemons.append(cheat)
    job_id, terms = post_wordcount_job(chain, wasm_examples, k=1, m=1, verifiers=3, challenge_window=30)
    wait_for("the cheat to take the slot", lambda: chain.market.job(job_id).status != JobStatus.OPEN, daemons=daemons)
    verifiers = [Daemon(chain=chain, index=i, name=f"verifier{i}").start() for i in (12, 13, 14)]
    daemons += verifiers
    wait_for(f"job {job_id} to succeed", lambda: chain.market.job(job_id).status == JobStatus.SUCCEEDED,
             timeout=60, daemons=daemons)  # fmt: skip
    # The only main result is revealed sealed: its hash on chain, its CID in the client's envelope
    wrong_hash = bytes(events(chain, job_id, "ResultSealed")[0]["resultHash"])

    # When the client challenges within the window, with the collateral as its bond
    client = chain.market.with_account(devnet_account(1))
    credit_before = chain.market.credit_of(client.account)
    client.challenge(job_id, terms)
    assert chain.market.challenge_bond_of(job_id) == COLLATERAL
    assert events(chain, job_id, "JobChallenged")[0]["bond"] == COLLATERAL

    # Then three fresh daemons verify, the right result wins and is final at once
    wait_for(f"job {job_id} to be finalized", lambda: chain.market.job(job_id).status == JobStatus.FINALIZED,
             timeout=60, daemons=daemons)  # fmt: skip
    assert [args["round"] for args in events(chain, job_id, "RoundOpened")] == [Round.VERIFY]
    slots = chain.market.slots(job_id, terms)
    assert slots[0].provider == cheat.address
    assert {s.provider for s in slots[terms.k + 1 :]} == {d.address for d in verifiers}
    finalized = events(chain, job_id, "JobFinalized")[0]
    assert finalized["challengeUpheld"] is True
    assert int(str(finalized["winnerSlot"])) > terms.k
    revealed = {p: str(args["resultCid"]) for p, args in by_provider(chain, job_id, "ResultRevealed").items()}
    verdict = {revealed[d.address] for d in verifiers}
    assert len(verdict) == 1 and result_hash(next(iter(verdict))) != wrong_hash
    assert read_result_file(chain, verdict.pop(), "wc.txt").strip().splitlines()[-1] == expected_total_line()

    # And the wrong provider is slashed, the verifiers paid, the bond back with the client
    assert [args["provider"] for args in events(chain, job_id, "SlotSlashed")] == [cheat.address]
    paid = by_provider(chain, job_id, "ProviderPaid")
    assert set(paid) == {d.address for d in verifiers}
    share, _ = pool_shares(COLLATERAL, len(verifiers))
    refund = int(str(finalized["refund"]))
    assert chain.market.credit_of(client.account) - credit_before == refund + COLLATERAL - share * 3 + COLLATERAL
    for d in verifiers:
        amount = int(str(paid[d.address]["amount"]))
        assert amount == terms.max_price * int(str(paid[d.address]["units"])) > 0
        wait_for(f"{d.name} to withdraw", has_withdrawn(chain, d.address, amount + share), daemons=daemons)
    assert chain.market.provider(cheat.address).slashed == 1
    assert "behaviour=wrong" in cheat.log()


def test_a_verifier_drawn_for_every_seat_runs_once_and_is_paid_per_vote(
    chain: Chain, daemons: list[test_node.Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given a k=1 job with three verifiers whose only replica is wrong, and a pool of one daemon
    test_node.empty_pool(chain)
    register(chain, Capability.WASM, 23)
    register(chain, Capability.WASM | Capability.VERIFIER, 24)
    cheat = Daemon(chain=chain, index=23, name="wrong23", behaviour="wrong").start()
    daemons.append(cheat)
    job_id, terms = post_wordcount_job(chain, wasm_examples, k=1, m=1, verifiers=3, challenge_window=30)
    wait_for("the cheat to take the slot", lambda: chain.market.job(job_id).status != JobStatus.OPEN, daemons=daemons)
    verifier = Daemon(chain=chain, index=24, name="verifier24").start()
    daemons.append(verifier)
    wait_for(f"job {job_id} to succeed", lambda: chain.market.job(job_id).status == JobStatus.SUCCEEDED,
             timeout=60, daemons=daemons)  # fmt: skip

    # When the client challenges
    chain.market.with_account(devnet_account(1)).challenge(job_id, terms)

    # Then the only pool member is drawn for all three seats: one slot with three votes, whose
    # single run, commit and reveal decide the round, and which is paid once per vote
    wait_for(f"job {job_id} to be finalized", lambda: chain.market.job(job_id).status == JobStatus.FINALIZED,
             timeout=90, daemons=daemons)  # fmt: skip
    held = [s for s in chain.market.slots(job_id, terms)[terms.k + 1 :] if s.provider == verifier.address]
    assert [s.votes for s in held] == [3]
    assert [args["votes"] for args in events(chain, job_id, "VoteAdded")] == [2, 3]
    assert [args["provider"] for args in events(chain, job_id, "ResultCommitted")] == [cheat.address, verifier.address]
    assert f"slot {held[0].index} holds 3 votes" in verifier.log()
    assert events(chain, job_id, "JobFinalized")[0]["challengeUpheld"] is True
    paid = by_provider(chain, job_id, "ProviderPaid")
    assert set(paid) == {verifier.address}
    units = int(str(paid[verifier.address]["units"]))
    assert paid[verifier.address]["amount"] == terms.max_price * units * 3
    assert [args["amount"] for args in events(chain, job_id, "SlotSlashed")] == [COLLATERAL]
    assert chain.market.provider(verifier.address).locked == 0

    # And the receipt says how it got its seats and why it was paid that much
    sdk = Client(w3=chain.w3, contract=chain.market.address, key=devnet_account(1), store=f"local:{chain.store_path}")
    with sdk.connect():
        receipt = JobHandle(client=sdk, job_id=JobId(job_id)).receipt()
    [p] = receipt.providers
    assert (p.provider, p.seat, p.votes, p.amount) == (verifier.address, "verify", 3, p.price * p.units * 3)
    [shown] = receipt.to_json()["providers"]
    assert (shown["votes"], shown["checks"], shown["formula"]) == (3, True, f"{p.price} x {p.units} x 3")


def test_a_copycat_verifier_has_nothing_to_copy_and_loses_its_collateral(
    chain: Chain, daemons: list[test_node.Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given a right k=1 result of a job with three verifiers, revealed sealed
    test_node.empty_pool(chain)
    register(chain, Capability.WASM, 15)
    register(chain, Capability.WASM | Capability.VERIFIER, 16, 17, 18, stake=ONE_SEAT)
    main = Daemon(chain=chain, index=15, name="main15").start()
    daemons.append(main)
    job_id, terms = post_wordcount_job(chain, wasm_examples, k=1, m=1, verifiers=3, challenge_window=30)
    quiet_id, _ = post_wordcount_job(chain, wasm_examples, k=1, m=1, verifiers=3, challenge_window=30)
    for j in (job_id, quiet_id):
        wait_for(f"job {j} to succeed", lambda j=j: chain.market.job(j).status == JobStatus.SUCCEEDED,
                 timeout=60, daemons=daemons)  # fmt: skip
    assert events(chain, job_id, "ResultRevealed") == []
    [sealed] = events(chain, job_id, "ResultSealed")
    # Only the client can read the CID before the job is final: from its envelope, with its key
    client_key = devnet_account(1)
    cid = open_envelope(bytes(sealed["envelope"]), delivery_key(client_key.key), job_id=job_id)
    assert result_hash(cid) == bytes(sealed["resultHash"])
    with pytest.raises(errors.SealError):
        open_envelope(bytes(sealed["envelope"]), delivery_key(devnet_account(16).key), job_id=job_id)
    sdk = Client(w3=chain.w3, contract=chain.market.address, key=client_key, store=f"local:{chain.store_path}")
    with sdk.connect():
        assert JobHandle(client=sdk, job_id=JobId(job_id)).result_cid() == cid
    assert read_result_file(chain, cid, "wc.txt").strip().splitlines()[-1] == expected_total_line()

    # When the client challenges it anyway, and the pool holds two honest verifiers and a copycat
    honest = [Daemon(chain=chain, index=i, name=f"verifier{i}").start() for i in (16, 17)]
    copycat = Daemon(chain=chain, index=18, name="copycat18", behaviour="copycat").start()
    daemons += [*honest, copycat]
    chain.market.with_account(devnet_account(1)).challenge(job_id, terms)

    # Then the copycat has only the hash to copy: it commits over it and can reveal no CID
    wait_for(f"job {job_id} to be finalized", lambda: chain.market.job(job_id).status == JobStatus.FINALIZED,
             timeout=90, daemons=daemons)  # fmt: skip
    assert "copycat: the sealed main result left nothing to reveal" in copycat.log()
    assert [args["provider"] for args in events(chain, job_id, "SlotSlashed")] == [copycat.address]
    assert chain.market.provider(copycat.address).free == ONE_SEAT - COLLATERAL
    assert copycat.address not in by_provider(chain, job_id, "ProviderPaid")
    # And the honest verifiers confirm the result: the challenge fails, everyone honest is paid
    finalized = events(chain, job_id, "JobFinalized")[0]
    assert finalized["challengeUpheld"] is False
    revealed = by_provider(chain, job_id, "ResultRevealed")
    assert {str(revealed[d.address]["resultCid"]) for d in honest} == {cid}
    assert set(by_provider(chain, job_id, "ProviderPaid")) == {main.address, *(d.address for d in honest)}
    assert chain.market.provider(main.address).free == ETH
    # The receipt says how each paid provider got its seat
    with sdk.connect():
        seats = {p.provider: p.seat for p in JobHandle(client=sdk, job_id=JobId(job_id)).receipt().providers}
    assert seats == {main.address: "bid", **{d.address: "verify" for d in honest}}
    # The verifiers' result won, revealed in the open: anyone reads it, nothing to publish
    assert int(str(finalized["winnerSlot"])) > terms.k
    assert resolve_parent_result(chain.market, job_id) == cid
    assert events(chain, job_id, "ResultPublished") == []

    # And the unchallenged twin job's sealed result is published by its winner once its
    # challenge window is over, which settles it
    wait_for("the twin to be published", lambda: bool(events(chain, quiet_id, "ResultPublished")),
             timeout=60, daemons=daemons)  # fmt: skip
    assert chain.market.job(quiet_id).status == JobStatus.FINALIZED
    [twin] = events(chain, quiet_id, "ResultSealed")
    twin_cid = open_envelope(bytes(twin["envelope"]), delivery_key(client_key.key), job_id=quiet_id)
    assert [str(args["resultCid"]) for args in events(chain, quiet_id, "ResultPublished")] == [twin_cid]
    assert resolve_parent_result(chain.market, quiet_id) == twin_cid
    assert f"job_id={quiet_id} published result {twin_cid}" in main.log()


def test_a_lottery_jobs_replicas_are_drawn_from_the_daemons_that_entered(
    chain: Chain, daemons: list[test_node.Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given four running daemons, and a k=2 lottery job whose entries close after 6 s
    register(chain, Capability.WASM, 19, 20, 21, 22)
    entrants = [Daemon(chain=chain, index=i, name=f"entrant{i}").start() for i in (19, 20, 21, 22)]
    daemons += entrants
    wait_for("the daemons to be ready", lambda: all(" ready on chain " in d.log() for d in entrants), daemons=daemons)
    job_id, terms = post_wordcount_job(chain, wasm_examples, k=2, m=2, bid_window=6, lottery=True,
                                       challenge_window=0)  # fmt: skip
    assert terms.lottery

    # When the daemons enter, a keeper closes the entries and another draws
    wait_for(f"job {job_id} to be finalized", lambda: chain.market.job(job_id).status == JobStatus.FINALIZED,
             timeout=60, daemons=daemons)  # fmt: skip

    # Then every daemon entered, two were drawn by the lottery and the others released
    addresses = {d.address for d in entrants}
    assert {str(args["provider"]) for args in events(chain, job_id, "Entered")} == addresses
    assert [args["round"] for args in events(chain, job_id, "DrawPending")] == [Round.MAIN]
    drawn = {str(args["provider"]) for args in events(chain, job_id, "SlotAssigned")}
    released = {str(args["provider"]) for args in events(chain, job_id, "EntryReleased")}
    assert len(drawn) == 2 and drawn | released == addresses and not drawn & released
    # And the drawn replicas ran the job and were paid at the max price; nobody lost stake
    paid = by_provider(chain, job_id, "ProviderPaid")
    assert set(paid) == drawn
    assert all(int(str(paid[a]["amount"])) == terms.max_price * int(str(paid[a]["units"])) for a in drawn)
    sdk = Client(w3=chain.w3, contract=chain.market.address, key=devnet_account(1), store=f"local:{chain.store_path}")
    with sdk.connect():
        receipt = JobHandle(client=sdk, job_id=JobId(job_id)).receipt()
    assert {p.provider: p.seat for p in receipt.providers} == dict.fromkeys(drawn, "lottery")
    for d in entrants:
        assert chain.market.provider(d.address).free + chain.market.provider(d.address).locked == ETH
        assert f"job_id={job_id} entered the draw of its 2 replicas" in d.log()
        if d.address in released:
            wait_for(f"{d.name} to see it was not drawn", lambda d=d: "not drawn among the entrants" in d.log(),
                     daemons=daemons)  # fmt: skip
