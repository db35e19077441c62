"""Gas per transaction and per job lifecycle, on a real anvil node and on eth-tester.

Run: ``python bench/gas.py`` (prints a table, writes bench/results/gas.json).

Each scenario runs twice on the same chain and the second run is reported: the
first pays one-off costs (the first job id, an account's first credit) that a
market in steady state does not. Both runs are in the JSON.
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

from chain_scheduler import Capability, Executor, JobTerms, Market, commitment  # noqa: E402
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
        self.salt = 0

    def terms(self, **kw: int) -> JobTerms:
        base: dict[str, int] = dict(max_price=1_000, max_units=1_000_000, collateral=COLLATERAL, challenge_window=30)
        base.update(kw)
        return JobTerms.create(client=self.client.account, spec_cid=SPEC, executor=Executor.WASM, **base)

    def run(self, p: Market, job_id: int, slot: int, cid: str, usage: int, ledger: Ledger) -> bytes:
        self.salt += 1
        salt = self.salt.to_bytes(32, "big")
        ledger.add("commit", p.commit(job_id, slot, commitment(job_id, p.account, cid, usage, salt)).gas_used)
        return salt


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
    c, p, auditor = chain.client, chain.providers[0], chain.providers[1]
    terms = chain.terms(verifiers=1, audit_bps=10_000)
    r = c.post_job_tx(SPEC, terms)
    job = int(r.event("JobPosted").args["jobId"])
    led.add("postJob", r.gas_used)
    led.add("bid", p.bid(job, 500).gas_used)
    salt = chain.run(p, job, 0, GOOD, 40_000, led)
    led.add("bid (auditor)", auditor.bid(job, 500).gas_used)
    salt_a = chain.run(auditor, job, 1, GOOD, 40_000, led)
    led.add("reveal", p.reveal(job, 0, GOOD, 40_000, salt).gas_used)
    led.add("reveal (auditor)", auditor.reveal(job, 1, GOOD, 40_000, salt_a).gas_used)
    chain.advance(31)
    led.add("finalize", chain.market.finalize(job).gas_used)
    for q in (p, auditor):
        led.add("withdraw (provider)", q.withdraw().gas_used)
    return led


def challenged(chain: Chain) -> Ledger:
    led = Ledger()
    c, p = chain.client, chain.providers[0]
    verifiers = chain.providers[1:4]
    terms = chain.terms(verifiers=3)
    r = c.post_job_tx(SPEC, terms)
    job = int(r.event("JobPosted").args["jobId"])
    led.add("postJob", r.gas_used)
    led.add("bid", p.bid(job, 500).gas_used)
    salt = chain.run(p, job, 0, BAD, 40_000, led)
    led.add("reveal", p.reveal(job, 0, BAD, 40_000, salt).gas_used)
    led.add("challenge", c.challenge(job).gas_used)
    for v in verifiers:
        led.add("bid (verifier)", v.bid(job, 500).gas_used)
    salts = [chain.run(v, job, 2 + i, GOOD, 40_000, led) for i, v in enumerate(verifiers)]
    for i, v in enumerate(verifiers):
        led.add("reveal (verifier)", v.reveal(job, 2 + i, GOOD, 40_000, salts[i]).gas_used)
    led.add("finalize", chain.market.finalize(job).gas_used)
    for v in verifiers:
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


SCENARIOS: dict[str, Callable[[Chain], Ledger]] = {
    "k=1 m=1 unchallenged": k1,
    "k=1 m=1, no challenge window": k1_no_window,
    "k=3 m=2 one wrong provider": k3_one_wrong,
    "k=1 with an audit": audited,
    "k=1 challenged (3 verifiers)": challenged,
    "k=1 commit timeout, reassigned": reassigned,
}


def measure(chain: Chain) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, scenario in SCENARIOS.items():
        first = scenario(chain)
        steady = scenario(chain)
        out[name] = {"first_run_total": first.total, "total": steady.total, "steps": steady.steps}
    return out


def on_anvil() -> dict[str, dict[str, object]]:
    with Anvil() as node:
        w3 = node.web3()
        return measure(Chain(w3, lambda s: advance_time(w3, s)))


def on_eth_tester() -> dict[str, dict[str, object]]:
    from eth_tester import EthereumTester, PyEVMBackend

    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(Web3.EthereumTesterProvider(tester))

    def advance(seconds: int) -> None:
        tester.time_travel(int(w3.eth.get_block("latest")["timestamp"]) + seconds)
        tester.mine_blocks()

    return measure(Chain(w3, advance))


def main() -> None:
    started = time.time()
    results = {"anvil": on_anvil(), "eth-tester": on_eth_tester()}
    print(f"{'scenario':34} {'anvil':>10} {'eth-tester':>11} {'first run':>10} {'txs':>4}")
    for name in SCENARIOS:
        a, e = results["anvil"][name], results["eth-tester"][name]
        print(f"{name:34} {a['total']:>10,} {e['total']:>11,} {a['first_run_total']:>10,} {len(a['steps']):>4}")  # type: ignore[arg-type]
    print("\nper transaction (anvil, steady state):")
    for name in SCENARIOS:
        print(f"  {name}")
        for step, gas in results["anvil"][name]["steps"]:  # type: ignore[attr-defined]
            print(f"    {step:28} {gas:>9,}")
    out = ROOT / "bench" / "results" / "gas.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seconds": round(time.time() - started, 1), **results}, indent=1) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
