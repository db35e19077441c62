"""The chain-scheduler demo: a real local market, one job, three replicas, one cheat.

What it does, every part real:
  1. starts an anvil chain node on 127.0.0.1 and deploys the market contract;
  2. registers three staked providers;
  3. stores a Wasm word-count module, its input text and a job spec in the
     embedded content store (CIDs identical to IPFS);
  4. posts a k=3 m=2 job; each provider bids, receives the shared seed, runs the
     module in the wasmtime sandbox (fuel metered), stores outputs + receipt and
     commits, then reveals; provider 3 cheats by altering one output byte;
  5. after the challenge window anyone finalizes: the two honest providers are
     paid price × fuel, the cheat is slashed, the client is refunded the rest;
  6. prints the verified result, the receipts, the money and the gas.

Run: ``make demo`` (or ``.venv/bin/python scripts/demo.py``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chain_scheduler import Capability, Executor, InputRef, JobSpec, JobTerms, Market, commitment, load_spec  # noqa: E402
from chain_scheduler._anvil import Anvil, advance_time  # noqa: E402
from compute_node.executors import ExecutionRequest, WasmExecutor  # noqa: E402
from storage import open_store  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog\nthe dog sleeps\n" * 50
PRICE = 2  # wei per fuel unit asked by the providers
ETH = 10**18


def build_examples() -> Path:
    import subprocess

    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_examples.py"), "--quiet", "--wasm-only"], check=True)
    return ROOT / "examples" / "wasm" / "build" / "wordcount.wasm"


def main() -> None:
    module = build_examples()
    work = Path(tempfile.mkdtemp(prefix="chainsched-demo-"))
    gas: dict[str, int] = {}

    def spend(name: str, used: int) -> None:
        gas[name] = gas.get(name, 0) + used

    with (
        Anvil(log_file=work / "anvil.log") as node,
        open_store(f"local:{work / 'store'}") as store,
        WasmExecutor() as wasm,
    ):
        w3 = node.web3()
        accounts = w3.eth.accounts
        print(f"anvil on {node.url}, chain id {w3.eth.chain_id}")
        market = Market.deploy(w3=w3, account=accounts[0], unbonding_delay=60)
        print(f"market deployed at {market.address}")
        client = market.with_account(accounts[1])
        providers = [market.with_account(a) for a in accounts[2:5]]
        for p in providers:
            spend("register", p.register(Capability.WASM, 1 * ETH).gas_used)

        # The client's side: content to storage, the job to the chain.
        inputs = work / "inputs"
        inputs.mkdir()
        (inputs / "text.txt").write_text(TEXT)
        module_cid = store.put_file(module)
        inputs_cid = store.put_directory(inputs)
        spec = JobSpec(
            version=1,
            executor="wasm",
            artifact=str(module_cid),
            inputs=[InputRef(cid=str(inputs_cid), path="text")],
            description="word count of a short text",
        )
        spec_cid = str(store.put_bytes(spec.to_bytes()))
        if load_spec(store, spec_cid) != spec:  # what a provider will read back
            raise SystemExit(f"the stored spec {spec_cid} does not read back as written")
        terms = JobTerms.create(
            client=client.account,
            spec_cid=spec_cid,
            executor=Executor.WASM,
            k=3,
            m=2,
            max_price=5,
            max_units=50_000_000,
            collateral=ETH // 100,
            challenge_window=30,
        )
        posted = client.post_job_tx(spec_cid, terms)
        job_id = int(posted.event("JobPosted").args["jobId"])
        spend("postJob", posted.gas_used)
        client_before = w3.eth.get_balance(client.account)
        print(f"\njob {job_id} posted: spec {spec_cid}\n  escrow {terms.escrow:,} wei (k=3 m=2, worst case)")

        # The providers' side: bid, run, store, commit.
        seed = b""
        for p in providers:
            r = p.bid(job_id, PRICE)
            spend("bid", r.gas_used)
            for e in r.named("BiddingClosed"):
                seed = bytes(e.args["seed"])
        print(f"  bidding closed, shared seed {seed.hex()[:16]}…")
        sealed = []
        for i, p in enumerate(providers):
            out = work / f"provider{i}"
            (out / "outputs").mkdir(parents=True)
            (out / "inputs").mkdir()
            for ref in load_spec(store, spec_cid).inputs:  # each input at /inputs/<path>
                store.fetch(str(ref.cid), out / "inputs" / ref.path)
            result = wasm.run(
                ExecutionRequest(
                    job_id=job_id,
                    artifact=module,
                    artifact_cid=str(module_cid),
                    args=(),
                    inputs_dir=out / "inputs",
                    outputs_dir=out / "outputs",
                    seed=seed,
                    max_units=terms.max_units,
                    memory_limit=64 << 20,
                    timeout=30,
                )
            )
            if i == 2:  # the cheat: alter one byte of the output and claim it
                stdout = out / "outputs" / "stdout"
                data = bytearray(stdout.read_bytes())
                data[0] ^= 1
                stdout.write_bytes(bytes(data))
            # The metering record inside the result holds only what replicas must agree
            # on; each provider's price and the amount paid are on chain (ProviderPaid).
            receipt = {
                "executor": result.executor,
                "module": str(module_cid),
                "digest": result.artifact_digest,
                "exit_code": result.exit_code,
                "fuel": result.fuel,
            }
            (out / "outputs" / "receipt.json").write_text(json.dumps(receipt, sort_keys=True))
            result_cid = str(store.put_directory(out / "outputs"))
            salt = (i + 1).to_bytes(32, "big")
            spend("commit", p.commit(job_id, i, commitment(job_id, p.account, result_cid, result.usage, salt)).gas_used)
            sealed.append((result_cid, result.usage, salt))
            label = "CHEAT " if i == 2 else ""
            print(f"  {label}provider {i} ran the job: fuel {result.usage:,}, result {result_cid}")
        for i, p in enumerate(providers):
            spend("reveal", p.reveal(job_id, i, *sealed[i]).gas_used)
        job = market.job(job_id)
        print(f"  all revealed: job is {job.status.name}, accepted result held by slot {job.winner}")

        advance_time(w3, 31)
        fin = market.finalize(job_id)
        spend("finalize", fin.gas_used)
        accepted = sealed[job.winner][0]
        print(f"\nverified result {accepted}:")
        store.fetch(accepted, work / "result")
        print("  " + (work / "result" / "stdout").read_text().strip().replace("\n", "\n  "))
        for e in fin.events:
            if e.name == "ProviderPaid":
                print(
                    f"  paid slot {e.args['slot']}: {e.args['amount']:,} wei = {PRICE} wei × {e.args['units']:,} fuel"
                )
            if e.name == "SlotSlashed":
                slashed = e.args["amount"] / ETH
                print(f"  SLASHED slot {e.args['slot']} ({e.args['provider']}): {slashed:.4f} ETH collateral")
        done = fin.event("JobFinalized").args
        print(f"  client refund {done['refund']:,} wei of the escrow")
        for i, p in enumerate(providers):
            info = market.provider(p.account)
            credit = market.credit_of(p.account)
            print(f"  provider {i}: succeeded {info.succeeded}, slashed {info.slashed}, credit {credit:,} wei")
        for p in [*providers[:2], client]:
            spend("withdraw", p.withdraw().gas_used)
        paid_back = w3.eth.get_balance(client.account) - client_before
        print(f"  client withdrew its refund and its share of the slashed collateral (+{paid_back / ETH:.6f} ETH net)")
        print("\ngas by transaction kind:")
        for name, used in gas.items():
            print(f"  {name:10} {used:>10,}")
        print(f"  {'total':10} {sum(gas.values()):>10,}")
    print(f"\nwork files in {work}; anvil stopped.")


if __name__ == "__main__":
    main()
