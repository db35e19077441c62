"""Gas per transaction and per job lifecycle, on a real anvil node and on eth-tester.

Run: ``python bench/gas.py`` (prints a table, writes bench/results/gas.json).

Each scenario runs twice on the same chain and the second run is reported: the
first pays one-off costs (the first job id, an account's first credit) that a
market in steady state does not. Both runs are in the JSON.

Audit and verifier seats are drawn from the verifier pool (`draw`); the gas of a
draw grows with log n in the pool's size, measured at 10, 100 and 1,000 members
on anvil ("pool" in the JSON). A lottery job's entries and draw are measured at
3, 8 and 32 entrants ("lottery"). A job with verifiers reveals sealed
(`revealSealed`: the hash and the client's envelope) and its winner publishes
the CID once final (`publish`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from web3 import Web3  # noqa: E402

from chain_scheduler import (  # noqa: E402
    Capability,
    Executor,
    JobTerms,
    Market,
    TxResult,
    commitment,
    delivery_key,
    public_key_hex,
    seal,
)
from chain_scheduler._anvil import Anvil, advance_time  # noqa: E402

SPEC = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
GOOD = "bafybeih67h34zrfcauctl6uinrc3kztikxl2ucyueoxsajj73lqz4ano34"
BAD = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
COLLATERAL = 10**16


@dataclass
class Ledger:
    """Gas of every transaction of one lifecycle, in order."""

    steps: list[tuple[str, int]] = field(default_factory=list)

    def add(self, name: str, gas: int) -> None:
        self.steps.append((name, gas))

    @property
    def total(self) -> int:
        return sum(g for _, g in self.steps)


class Chain:
    """A market on some chain, with a clock we can move."""

    def __init__(self, w3: Web3, advance: Callable[[int], None]) -> None:
        self.w3 = w3
        self.advance = advance
        accounts = w3.eth.accounts
        self.market = Market.deploy(w3=w3, account=accounts[0])
        self.client = self.market.with_account(accounts[1])
        self.providers = [self.market.with_account(a) for a in accounts[2:9]]
        for p in self.providers:
            p.register(Capability.WASM | Capability.DOCKER, 10**18)
        # The verifier pool: three members with the free stake for one collateral each. A
        # member drawn for a second seat of a round would gain a vote instead of a slot (fewer
        # transactions); with one collateral each, three seats are always three verifiers.
        self.verifiers = [self.market.with_account(a) for a in accounts[9:12]]
        for v in self.verifiers:
            v.register(Capability.WASM | Capability.VERIFIER, COLLATERAL * 3 // 2)
        self.by_address = {p.account: p for p in [*self.providers, *self.verifiers]}
        self.salt = 0

    def to_epoch_start(self) -> None:
        """Mine so that the next transaction lands in a pool epoch's first block."""
        to_epoch_start(self.w3, self.market)

    def drawn(self, result: TxResult) -> list[tuple[int, Market]]:
        """The (slot, provider) pairs a draw seated."""
        return [(int(e.args["slot"]), self.by_address[e.args["provider"]]) for e in result.named("SlotAssigned")]

    def terms(self, **kw: int) -> JobTerms:
        base: dict[str, int] = dict(max_price=1_000, max_units=1_000_000, collateral=COLLATERAL, challenge_window=30)
        base.update(kw)
        return JobTerms.create(client=self.client.account, spec_cid=SPEC, executor=Executor.WASM, **base)

    def run(self, p: Market, job_id: int, slot: int, cid: str, usage: int, ledger: Ledger) -> bytes:
        self.salt += 1
        salt = self.salt.to_bytes(32, "big")
        ledger.add("commit", p.commit(job_id, slot, commitment(job_id, p.account, cid, usage, salt)).gas_used)
        return salt


def to_epoch_start(w3: Web3, market: Market) -> None:
    """Mine empty blocks so that the next transaction lands in a pool epoch's first block.
    A seat draw armed there and carried out in the next block reads the same epoch's pool,
    as a keeper's usually does; one armed in an epoch's last block re-arms first (a second
    draw), which would make the figures depend on where the block count stands."""
    for _ in range(-(w3.eth.block_number + 1) % market.pool_epoch):
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def k1(chain: Chain) -> Ledger:
    led = Ledger()
    c, p = chain.client, chain.providers[0]
    terms = chain.terms()
    r = c.post_job_tx(SPEC, terms)
    job = int(r.event("JobPosted").args["jobId"])
    led.add("postJob", r.gas_used)
    led.add("bid", p.bid(job, 500).gas_used)
    salt = chain.run(p, job, 0, GOOD, 40_000, led)
    led.add("reveal", p.reveal(job, 0, GOOD, 40_000, salt).gas_used)
    chain.advance(31)
    led.add("finalize", chain.market.finalize(job).gas_used)
    led.add("withdraw (provider)", p.withdraw().gas_used)
    return led


def k1_no_window(chain: Chain) -> Ledger:
    """A client that wants no challenge window: the reveal settles the job, no finalize."""
    led = Ledger()
    c, p = chain.client, chain.providers[0]
    terms = chain.terms(challenge_window=0)
    r = c.post_job_tx(SPEC, terms)
    job = int(r.event("JobPosted").args["jobId"])
    led.add("postJob", r.gas_used)
    led.add("bid", p.bid(job, 500).gas_used)
    salt = chain.run(p, job, 0, GOOD, 40_000, led)
    led.add("reveal (settles)", p.reveal(job, 0, GOOD, 40_000, salt).gas_used)
    led.add("withdraw (provider)", p.withdraw().gas_used)
    return led


def k3_one_wrong(chain: Chain) -> Ledger:
    led = Ledger()
    c = chain.client
    ps = chain.providers[:3]
    terms = chain.terms(k=3, m=2)
    r = c.post_job_tx(SPEC, terms)
    job = int(r.event("JobPosted").args["jobId"])
    led.add("postJob", r.gas_used)
    for p in ps:
        led.add("bid", p.bid(job, 500).gas_used)
    results = [GOOD, GOOD, BAD]
    salts = [chain.run(p, job, i, results[i], 40_000, led) for i, p in enumerate(ps)]
    for i, p in enumerate(ps):
        led.add("reveal", p.reveal(job, i, results[i], 40_000, salts[i]).gas_used)
    chain.advance(31)
    led.add("finalize", chain.market.finalize(job).gas_used)
    for p in ps[:2]:
        led.add("withdraw (provider)", p.withdraw().gas_used)
    return led


def audited(chain: Chain) -> Ledger:
    led = Ledger()
    c, p = chain.client, chain.providers[0]
    terms = chain.terms(verifiers=1, audit_bps=10_000)
    r = c.post_job_tx(SPEC, terms)
    job = int(r.event("JobPosted").args["jobId"])
    led.add("postJob", r.gas_used)
    led.add("bid", p.bid(job, 500).gas_used)
    chain.to_epoch_start()
    salt = chain.run(p, job, 0, GOOD, 40_000, led)
    drawn = chain.market.draw(job)
    led.add("draw (audit decision + auditor)", drawn.gas_used)
    ((slot, auditor),) = chain.drawn(drawn)
    salt_a = chain.run(auditor, job, slot, GOOD, 40_000, led)
    led.add("reveal", p.reveal(job, 0, GOOD, 40_000, salt).gas_used)
    led.add("reveal (auditor)", auditor.reveal(job, slot, GOOD, 40_000, salt_a).gas_used)
    chain.advance(31)
    led.add("publish (settles)", p.publish(job, GOOD).gas_used)
    for q in (p, auditor):
        led.add("withdraw (provider)", q.withdraw().gas_used)
    return led


def challenged(chain: Chain) -> Ledger:
    led = Ledger()
    c, p = chain.client, chain.providers[0]
    terms = chain.terms(verifiers=3)
    r = c.post_job_tx(SPEC, terms)
    job = int(r.event("JobPosted").args["jobId"])
    led.add("postJob", r.gas_used)
    led.add("bid", p.bid(job, 500).gas_used)
    salt = chain.run(p, job, 0, BAD, 40_000, led)
    led.add("reveal", p.reveal(job, 0, BAD, 40_000, salt).gas_used)
    chain.to_epoch_start()
    led.add("challenge", c.challenge(job).gas_used)
    drawn = chain.market.draw(job)
    led.add("draw (3 verifiers)", drawn.gas_used)
    seats = chain.drawn(drawn)
    salts = [chain.run(v, job, slot, GOOD, 40_000, led) for slot, v in seats]
    for (slot, v), s in zip(seats, salts, strict=True):
        led.add("reveal (verifier)", v.reveal(job, slot, GOOD, 40_000, s).gas_used)
    led.add("finalize", chain.market.finalize(job).gas_used)
    for _, v in seats:
        led.add("withdraw (provider)", v.withdraw().gas_used)
    led.add("withdraw (client)", c.withdraw().gas_used)
    return led


def reassigned(chain: Chain) -> Ledger:
    led = Ledger()
    c, lazy, p = chain.client, chain.providers[0], chain.providers[1]
    terms = chain.terms(exec_timeout=60)
    r = c.post_job_tx(SPEC, terms)
    job = int(r.event("JobPosted").args["jobId"])
    led.add("postJob", r.gas_used)
    led.add("bid", lazy.bid(job, 500).gas_used)
    chain.advance(61)
    led.add("timeout (slash + reopen)", chain.market.timeout(job).gas_used)
    led.add("bid", p.bid(job, 500).gas_used)
    salt = chain.run(p, job, 0, GOOD, 40_000, led)
    led.add("reveal", p.reveal(job, 0, GOOD, 40_000, salt).gas_used)
    chain.advance(31)
    led.add("finalize", chain.market.finalize(job).gas_used)
    led.add("withdraw (provider)", p.withdraw().gas_used)
    return led


def sealed(chain: Chain) -> Ledger:
    """k=1 with verifiers, unchallenged: the result is revealed sealed (hash and envelope), then
    published after the challenge window, which settles the job."""
    led = Ledger()
    c, p = chain.client, chain.providers[0]
    terms = chain.terms(verifiers=3)
    r = c.post_job_tx(SPEC, terms)
    job = int(r.event("JobPosted").args["jobId"])
    led.add("postJob", r.gas_used)
    led.add("bid", p.bid(job, 500).gas_used)
    salt = chain.run(p, job, 0, GOOD, 40_000, led)
    envelope = seal(GOOD, public_key_hex(delivery_key(b"\x01" * 32)), job_id=job)
    led.add("revealSealed", p.reveal(job, 0, GOOD, 40_000, salt, envelope=envelope).gas_used)
    chain.advance(31)
    led.add("publish (settles)", p.publish(job, GOOD).gas_used)
    led.add("withdraw (provider)", p.withdraw().gas_used)
    return led


def lottery(chain: Chain) -> Ledger:
    """A k=3 m=2 lottery job: all seven providers enter, three are drawn and run it."""
    led = Ledger()
    c = chain.client
    terms = chain.terms(k=3, m=2, bid_window=10, lottery=True)
    r = c.post_job_tx(SPEC, terms)
    job = int(r.event("JobPosted").args["jobId"])
    led.add("postJob", r.gas_used)
    for p in chain.providers:
        led.add("bid (enters)", p.bid(job, 500).gas_used)
    chain.advance(11)
    led.add("closeBidding (arms the draw)", chain.market.close_bidding(job).gas_used)
    drawn = chain.market.draw(job)
    led.add("draw (3 of 7 entrants)", drawn.gas_used)
    seats = chain.drawn(drawn)
    salts = [chain.run(p, job, slot, GOOD, 40_000, led) for slot, p in seats]
    for (slot, p), salt in zip(seats, salts, strict=True):
        led.add("reveal", p.reveal(job, slot, GOOD, 40_000, salt).gas_used)
    chain.advance(31)
    led.add("finalize", chain.market.finalize(job).gas_used)
    for _, p in seats:
        led.add("withdraw (provider)", p.withdraw().gas_used)
    return led


SCENARIOS: dict[str, Callable[[Chain], Ledger]] = {
    "k=1 m=1 unchallenged": k1,
    "k=1 m=1, no challenge window": k1_no_window,
    "k=3 m=2 one wrong provider": k3_one_wrong,
    "k=1 with an audit": audited,
    "k=1 challenged (3 verifiers)": challenged,
    "k=1 commit timeout, reassigned": reassigned,
    "k=1 sealed (3 verifiers), published": sealed,
    "k=3 m=2 lottery (7 entrants)": lottery,
}


def measure(chain: Chain) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, scenario in SCENARIOS.items():
        first = scenario(chain)
        steady = scenario(chain)
        out[name] = {"first_run_total": first.total, "total": steady.total, "steps": steady.steps}
    return out


POOL_SIZES = (10, 100, 1000)
LOTTERY_SIZES = (3, 8, 32)


def pool_scaling() -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Gas of joining the pool and of drawing three verifier seats as the pool grows, and of a
    lottery's entries and draw as its entrants grow (anvil)."""
    out: dict[str, dict[str, int]] = {}
    lotteries: dict[str, dict[str, int]] = {}
    with Anvil(accounts=POOL_SIZES[-1] + 3) as node:
        w3 = node.web3()
        accounts = w3.eth.accounts
        market = Market.deploy(w3=w3, account=accounts[0])
        client = market.with_account(accounts[1])
        main = market.with_account(accounts[2])
        main.register(Capability.WASM, 10**18)
        terms = JobTerms.create(
            client=client.account, spec_cid=SPEC, executor=Executor.WASM, max_price=1_000, max_units=1_000_000,
            collateral=COLLATERAL, challenge_window=30, verifiers=3,
        )  # fmt: skip
        members = 0
        for size in POOL_SIZES:
            join = 0
            while members < size:
                join = (
                    market.with_account(accounts[3 + members])
                    .register(Capability.WASM | Capability.VERIFIER, 10**18 + members)
                    .gas_used
                )
                members += 1
            job = client.post_job(SPEC, terms)
            main.bid(job, 500, terms)
            salt = (size).to_bytes(32, "big")
            main.commit(job, 0, commitment(job, main.account, BAD, 40_000, salt), terms)
            main.reveal(job, 0, BAD, 40_000, salt, terms)
            to_epoch_start(w3, market)
            client.challenge(job, terms)
            drawn = market.draw(job, terms)
            # Three seats: a slot per member drawn, a vote more for a member drawn again.
            assert len(drawn.named("SlotAssigned")) + len(drawn.named("VoteAdded")) == 3
            out[str(size)] = {"register (joins the pool)": join, "draw (3 verifier seats)": drawn.gas_used}
        lottery_terms = JobTerms.create(
            client=client.account, spec_cid=SPEC, executor=Executor.WASM, max_price=1_000, max_units=1_000_000,
            collateral=COLLATERAL, challenge_window=30, k=3, m=2, bid_window=30, lottery=True,
        )  # fmt: skip
        for n in LOTTERY_SIZES:
            job = client.post_job(SPEC, lottery_terms)
            enter = [market.with_account(accounts[3 + i]).bid(job, 500, lottery_terms).gas_used for i in range(n)]
            advance_time(w3, 31)
            close = market.close_bidding(job, lottery_terms).gas_used
            drawn = market.draw(job, lottery_terms)
            assert len(drawn.named("SlotAssigned")) == 3
            lotteries[str(n)] = {"enter (last entrant)": enter[-1], "closeBidding (arms)": close,
                                 "draw (3 replicas)": drawn.gas_used}  # fmt: skip
    return out, lotteries


def on_anvil() -> dict[str, dict[str, object]]:
    with Anvil(accounts=12) as node:
        w3 = node.web3()
        return measure(Chain(w3, lambda s: advance_time(w3, s)))


def on_eth_tester() -> dict[str, dict[str, object]]:
    from eth_tester import EthereumTester, PyEVMBackend

    tester = EthereumTester(PyEVMBackend(genesis_state=PyEVMBackend.generate_genesis_state(num_accounts=12)))
    w3 = Web3(Web3.EthereumTesterProvider(tester))

    def advance(seconds: int) -> None:
        tester.time_travel(int(w3.eth.get_block("latest")["timestamp"]) + seconds)
        tester.mine_blocks()

    return measure(Chain(w3, advance))


def main() -> None:
    started = time.time()
    results = {"anvil": on_anvil(), "eth-tester": on_eth_tester()}
    pool, lotteries = pool_scaling()
    print(f"{'scenario':34} {'anvil':>10} {'eth-tester':>11} {'first run':>10} {'txs':>4}")
    for name in SCENARIOS:
        a, e = results["anvil"][name], results["eth-tester"][name]
        print(f"{name:34} {a['total']:>10,} {e['total']:>11,} {a['first_run_total']:>10,} {len(a['steps']):>4}")  # type: ignore[arg-type]
    print("\nper transaction (anvil, steady state):")
    for name in SCENARIOS:
        print(f"  {name}")
        for step, gas in results["anvil"][name]["steps"]:  # type: ignore[attr-defined]
            print(f"    {step:28} {gas:>9,}")
    print("\nverifier pool (anvil): gas by pool size")
    print(f"  {'members':>8} {'register (joins the pool)':>26} {'draw (3 verifier seats)':>24}")
    for size, row in pool.items():
        print(f"  {size:>8} {row['register (joins the pool)']:>26,} {row['draw (3 verifier seats)']:>24,}")
    print("\nlottery (anvil, k=3): gas by number of entrants")
    print(f"  {'entrants':>8} {'enter (last entrant)':>21} {'closeBidding (arms)':>20} {'draw (3 replicas)':>18}")
    for n, row in lotteries.items():
        print(f"  {n:>8} {row['enter (last entrant)']:>21,} {row['closeBidding (arms)']:>20,} "
              f"{row['draw (3 replicas)']:>18,}")  # fmt: skip
    out = ROOT / "bench" / "results" / "gas.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"seconds": round(time.time() - started, 1), **results, "pool": pool, "lottery": lotteries}
    out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
