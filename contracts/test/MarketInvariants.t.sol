// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IChainScheduler, IChainSchedulerTypes} from "../IChainScheduler.sol";
import {VM, consoleLog} from "./Vm.sol";

/// @dev Hash of everything a finished job must never change again: its record, every slot
/// (provider, price, state, sealed value), its slash pool and its challenge bond.
function finishedState(IChainScheduler market, uint256 jobId, uint256 slots) view returns (bytes32 digest) {
    digest = keccak256(abi.encode(market.getJob(jobId), market.slashPoolOf(jobId), market.challengeBondOf(jobId)));
    for (uint256 i = 0; i < slots; ++i) {
        (IChainSchedulerTypes.Slot memory slot, bytes32 sealedValue) = market.getSlot(jobId, uint8(i));
        digest = keccak256(abi.encode(digest, slot, sealedValue));
    }
}

/// @dev `Finalized`, `Failed` and `Cancelled` never change again.
function isFinished(IChainSchedulerTypes.JobStatus status) pure returns (bool) {
    return status == IChainSchedulerTypes.JobStatus.Finalized || status == IChainSchedulerTypes.JobStatus.Failed
        || status == IChainSchedulerTypes.JobStatus.Cancelled;
}

/// @dev A slot that holds its provider's collateral.
function holdsCollateral(IChainSchedulerTypes.SlotState state) pure returns (bool) {
    return state == IChainSchedulerTypes.SlotState.Assigned || state == IChainSchedulerTypes.SlotState.Committed
        || state == IChainSchedulerTypes.SlotState.Revealed;
}

/// @title Drives market jobs through whole lifecycles for forge's invariant fuzzer.
/// @notice Three clients and eight providers (plain addresses the handler pranks as) post,
/// bid, withdraw bids, draw, commit (about one in five a wrong result), reveal, let deadlines
/// pass, challenge, finalize, cancel, withdraw, move stake and leave or join the verifier
/// pool. Six providers and two of the clients (which are providers too) are in the pool;
/// audit and verifier seats are drawn from it (the handler only tries to bid for them, and
/// must be refused). Every `drive` call takes one job up to eight steps along its lifecycle,
/// choosing each step from the job's current status: a handler that only makes single
/// random calls rarely gets a job past bidding, and misses the bugs that live in settlement
/// (DESIGN.md, forge notes).
/// @dev Every market call is wrapped in try/catch: a refused action is part of the game,
/// and a revert would roll back the steps before it. What the handler must check at the
/// moment it acts (what a withdrawal paid, whether a forged reveal was accepted) it
/// counts in a violation counter that the invariant reads.
contract MarketHandler {
    /// @notice Handler bookkeeping for one job.
    /// @param escrow What `postJob` took (held until the job finishes).
    /// @param collateral The job's collateral per slot.
    /// @param slots Slot indexes the job can use: main 0..k-1, audit k, verifiers k+1..k+verifiers.
    /// @param finished Digest of the job's state when it was first seen finished (0 while live).
    /// @param client The job's client (drawn seats must never go to it).
    /// @param k Main replicas: slots k.. are drawn (audit, then verifiers).
    struct Book {
        uint256 escrow;
        uint96 collateral;
        uint8 slots;
        bytes32 finished;
        address client;
        uint8 k;
    }

    /// @dev What a provider committed to, so it can reveal it later.
    struct Opening {
        uint8 result; // index into _resultCid
        uint64 usage;
        bytes32 salt;
    }

    /// @notice Actions the handler completed, for the coverage test.
    enum Action {
        Post,
        Bid,
        WithdrawBid,
        CloseBidding,
        Commit,
        Reveal,
        Timeout,
        Challenge,
        Finalize,
        Cancel,
        CancelOrphan,
        Withdraw,
        AddStake,
        Unstake,
        Draw,
        DrawRearmed,
        SetCapabilities,
        Publish
    }

    uint256 public constant CLIENTS = 3;
    /// @dev Eight plain providers, then the first two clients: they are providers too (a client
    /// bidding for its own job's main slots is allowed; being drawn for its own job is not).
    uint256 public constant PLAIN_PROVIDERS = 8;
    uint256 public constant DUAL_CLIENTS = 2;
    uint256 public constant PROVIDERS = PLAIN_PROVIDERS + DUAL_CLIENTS;
    /// @dev Plain providers from this index on never join the verifier pool.
    uint256 internal constant OUTSIDE_POOL_FROM = 6;
    /// @dev A pool member that often leaves its drawn seats unworked (slashed, seat redrawn).
    uint256 internal constant LAZY_VERIFIER = 5;
    /// @dev The market's `flags` bit of a pending audit decision.
    uint8 internal constant FLAG_DRAW_PENDING = 64;
    uint256 internal constant MAX_LIVE = 6;
    uint256 internal constant MAX_JOBS = 64;
    uint256 internal constant MAX_STEPS = 8;
    uint256 internal constant INITIAL_STAKE = 8 ether;
    uint256 internal constant MAX_WAIT = 20 minutes;
    uint32 internal constant WASM = 1;
    uint32 internal constant DOCKER = 2;
    uint32 internal constant GPU = 4;
    string internal constant SPEC_CID = "bafy-spec";

    IChainScheduler public immutable market;
    address[] internal _clients;
    address[] internal _providers;

    mapping(uint256 jobId => IChainSchedulerTypes.JobTerms) internal _terms;
    mapping(uint256 jobId => Book) public book;
    mapping(uint256 jobId => mapping(uint256 slot => Opening)) internal _openings;
    /// @dev Jobs not seen finished yet, the ones `drive` picks from.
    uint256[] internal _live;

    // Violations seen while acting (the invariant requires each to stay 0).
    uint256 public withdrawalsAboveCredit;
    uint256 public withdrawalsBelowCredit;
    uint256 public forgedRevealsAccepted;
    uint256 public finishedJobsChanged;
    /// @dev A bid for an audit or verifier seat was accepted (they are drawn, never bid for).
    uint256 public drawnRoundBids;
    /// @dev A draw ran in the block that armed it (its block hash did not exist yet).
    uint256 public earlyDraws;
    /// @dev A draw whose block hash had expired (> 256 blocks) decided or seated something.
    uint256 public staleDraws;

    // Coverage counters (the coverage test requires each to be reached).
    mapping(Action => uint256) public done;
    mapping(IChainSchedulerTypes.JobStatus => uint256) public ended;
    mapping(IChainSchedulerTypes.Round => uint256) public roundsSeen;
    uint256 public slashedSlots;
    uint256 public auditDecisions;
    uint256 public seatsDrawn;
    /// @dev Seats drawn for a verifier already seated in the round: a vote added to its slot.
    uint256 public votesAdded;
    /// @dev Sealed results nobody published, failed by finalize a reveal window later.
    uint256 public unpublishedFailures;
    uint256 public lotteriesDrawn;
    /// @dev Drawn (audit or verifier) seats slashed for a missed commit and reopened for a redraw.
    uint256 public drawnSeatsReopened;
    /// @dev Drawn seats that went to a provider seen earlier in ANOTHER slot of the same job (a
    /// record since overwritten, so the contract no longer sees it): reported, not enforced.
    uint256 public drawnSeatsToPastHolders;
    /// @dev Every (slot, provider) pair seen in a job, to spot the case above.
    mapping(uint256 jobId => mapping(address provider => uint256 slotsPlusOne)) internal _seenIn;

    constructor(IChainScheduler market_) {
        market = market_;
        for (uint256 i = 0; i < CLIENTS; ++i) {
            address client = address(uint160(0xC000 + i));
            VM.label(client, string.concat("client", _digit(i)));
            _clients.push(client);
        }
        uint32 verifier = market.VERIFIER();
        for (uint256 i = 0; i < PROVIDERS; ++i) {
            address provider;
            uint32 capabilities;
            if (i < PLAIN_PROVIDERS) {
                provider = address(uint160(0xB000 + i));
                VM.label(provider, string.concat("provider", _digit(i)));
                // Three providers have a GPU: just enough for a k=3 GPU job, none to spare. All
                // but the last two opt in to be drawn as auditors and verifiers.
                capabilities = WASM | DOCKER | (i < 3 ? GPU : 0) | (i < OUTSIDE_POOL_FROM ? verifier : 0);
            } else {
                // A client that is also a provider in the pool: never drawn for its own jobs.
                provider = _clients[i - PLAIN_PROVIDERS];
                capabilities = WASM | DOCKER | verifier;
            }
            _providers.push(provider);
            VM.deal(provider, INITIAL_STAKE);
            VM.prank(provider);
            market.register{value: INITIAL_STAKE}(capabilities);
        }
    }

    // ============================================================ fuzzed calls

    /// @notice Post a job with terms drawn from `seed`, and take it a few steps.
    function post(uint256 seed) external {
        if (_live.length >= MAX_LIVE || market.jobCount() >= MAX_JOBS) {
            // Enough jobs in flight: move one of them instead.
            _drive(seed, seed >> 128);
        } else {
            uint256 jobId = _post(seed);
            for (uint256 i = 0; jobId != 0 && i < seed % 4; ++i) {
                seed = _next(seed);
                if (!_step(jobId, seed)) break;
            }
        }
        _observeLive();
    }

    /// @notice Take one live job (or, once in 16 calls, any job, finished ones too) up to
    /// eight steps along its lifecycle.
    function drive(uint256 pick, uint256 seed) external {
        if (pick % 16 == 0 && market.jobCount() != 0) {
            _poke(1 + (pick >> 8) % market.jobCount(), seed);
        } else {
            _drive(pick, seed);
        }
        _observeLive();
    }

    /// @notice An actor withdraws its credit; the handler checks it was paid exactly that.
    function withdraw(uint256 pick) external {
        address account = pick % 2 == 0 ? _clients[(pick >> 1) % CLIENTS] : _providers[(pick >> 1) % PROVIDERS];
        uint256 credit = market.creditOf(account);
        uint256 before = account.balance;
        VM.prank(account);
        try market.withdraw() {
            done[Action.Withdraw] += 1;
            uint256 paid = account.balance - before;
            if (paid > credit) withdrawalsAboveCredit += 1;
            if (paid < credit || market.creditOf(account) != 0) withdrawalsBelowCredit += 1;
        } catch {
            if (credit != 0) withdrawalsBelowCredit += 1;
        }
    }

    /// @notice A provider adds stake, starts unbonding, or unstakes once unbonded.
    function stake(uint256 pick, uint256 seed) external {
        address provider = _providers[pick % PROVIDERS];
        IChainSchedulerTypes.Provider memory info = market.getProvider(provider);
        if (info.unbondingAt != 0) {
            if (_time() < info.unbondingAt) VM.warp(info.unbondingAt);
            uint96 amount = uint96(seed % (uint256(info.free) + 1));
            VM.prank(provider);
            try market.unstake(amount) {
                done[Action.Unstake] += 1;
            } catch {}
            // Usually come back to work (addStake ends the unbonding).
            if (seed % 4 != 0) _addStake(provider, INITIAL_STAKE);
        } else if (seed % 8 == 0) {
            VM.prank(provider);
            market.beginUnbonding();
        } else if (seed % 8 == 1 && !_outsidePool(pick % PROVIDERS)) {
            // Leave the verifier pool, or join it again (its weight must follow).
            uint32 toggled = info.capabilities ^ market.VERIFIER();
            VM.prank(provider);
            market.setCapabilities(toggled);
            done[Action.SetCapabilities] += 1;
        } else {
            _addStake(provider, 1 ether + seed % (4 ether));
        }
        _observeLive();
    }

    /// @notice Up to 15 minutes pass (every deadline moves closer), with a new prevrandao. One
    /// time in eight, 300 blocks go by in that time: every pending draw's block hash expires.
    function warp(uint256 seconds_) external {
        VM.warp(_time() + seconds_ % 15 minutes);
        VM.roll(_height() + ((seconds_ >> 128) % 8 == 0 ? 300 : 1));
        VM.prevrandao(keccak256(abi.encode(seconds_)));
        _observeLive();
    }

    // =================================================================== views

    /// @notice Everyone who can hold credit: the clients, then the providers.
    function actors() external view returns (address[] memory all) {
        // The dual clients are listed once, as clients.
        all = new address[](CLIENTS + PLAIN_PROVIDERS);
        for (uint256 i = 0; i < CLIENTS; ++i) all[i] = _clients[i];
        for (uint256 i = 0; i < PLAIN_PROVIDERS; ++i) all[CLIENTS + i] = _providers[i];
    }

    /// @notice The provider actors.
    function providers() external view returns (address[] memory) {
        return _providers;
    }

    // ================================================================= driving

    function _drive(uint256 pick, uint256 seed) internal {
        if (_live.length == 0) {
            if (market.jobCount() < MAX_JOBS) _post(seed);
            return;
        }
        uint256 jobId = _live[pick % _live.length];
        uint256 steps = 1 + seed % MAX_STEPS;
        for (uint256 i = 0; i < steps; ++i) {
            seed = _next(seed);
            if (!_step(jobId, seed)) break;
        }
    }

    /// @dev One step chosen from the job's status. Returns false once the job is finished.
    function _step(uint256 jobId, uint256 seed) internal returns (bool) {
        IChainSchedulerTypes.Job memory job = market.getJob(jobId);
        IChainSchedulerTypes.JobTerms memory t = _terms[jobId];
        uint256 choice = seed % 16;
        seed >>= 8;
        IChainSchedulerTypes.JobStatus status = job.status;
        bool moving = status == IChainSchedulerTypes.JobStatus.Open || status == IChainSchedulerTypes.JobStatus.Running
            || status == IChainSchedulerTypes.JobStatus.Revealing;
        if (moving && _time() >= job.deadline && choice >= 4) {
            // The phase is over: usually a keeper moves the job on; sometimes a late
            // provider still tries (and must be refused).
            _timeout(jobId, t, job.deadline);
        } else if (status == IChainSchedulerTypes.JobStatus.Open && job.round != IChainSchedulerTypes.Round.Main) {
            // An audit or verification round: its seats are drawn. A bid must be refused.
            if (choice == 0) _bid(jobId, t, seed);
            else if (choice < 14) _draw(jobId, t, seed);
            else _timeout(jobId, t, job.deadline);
        } else if (status == IChainSchedulerTypes.JobStatus.Open && t.lottery && _undrawn(jobId)) {
            // A lottery: providers enter (a bid enters), bidding closes, a keeper draws the replicas.
            if (choice < 8) _bid(jobId, t, seed);
            else if (choice < 10) _closeBidding(jobId, t, job);
            else if (choice < 13) _draw(jobId, t, seed);
            else if (choice == 13) _cancel(jobId, t, seed);
            else _timeout(jobId, t, job.deadline);
        } else if (status == IChainSchedulerTypes.JobStatus.Open) {
            (, uint256 count) = _range(job.round, t);
            if (job.filled == count) {
                // Every slot held inside a bid window: a cheaper bid may displace one.
                if (choice < 4) _bid(jobId, t, seed);
                else if (choice == 4) _withdrawBid(jobId, t, job.round, seed);
                else if (choice == 5) _cancel(jobId, t, seed);
                else _closeBidding(jobId, t, job);
            } else {
                if (choice < 11) _bid(jobId, t, seed);
                else if (choice < 14) _withdrawBid(jobId, t, job.round, seed);
                else if (choice == 14) _cancel(jobId, t, seed);
                else _timeout(jobId, t, job.deadline);
            }
        } else if (status == IChainSchedulerTypes.JobStatus.Running && job.flags & FLAG_DRAW_PENDING != 0) {
            // Every main commitment is in: the audit decision waits for a later block's hash.
            if (choice < 14) _draw(jobId, t, seed);
            else _timeout(jobId, t, job.deadline);
        } else if (status == IChainSchedulerTypes.JobStatus.Running) {
            if (choice < 14) _commit(jobId, t, job.round, seed);
            else _timeout(jobId, t, job.deadline);
        } else if (status == IChainSchedulerTypes.JobStatus.Revealing) {
            if (choice == 0) _forgeReveal(jobId, t, seed);
            else if (choice < 14) _reveal(jobId, t, seed);
            else _timeout(jobId, t, job.deadline);
        } else if (status == IChainSchedulerTypes.JobStatus.Succeeded) {
            if (choice < 8 && t.verifiers != 0) _challenge(jobId, t);
            else _finalize(jobId, t, job.deadline);
        }
        return _observe(jobId, true);
    }

    /// @dev Any action on any job, whatever its status: finished jobs must refuse them all.
    function _poke(uint256 jobId, uint256 seed) internal {
        IChainSchedulerTypes.Job memory job = market.getJob(jobId);
        IChainSchedulerTypes.JobTerms memory t = _terms[jobId];
        uint256 choice = seed % 10;
        seed >>= 8;
        if (choice == 9) _draw(jobId, t, seed);
        else if (choice == 0) _bid(jobId, t, seed);
        else if (choice == 1) _withdrawBid(jobId, t, job.round, seed);
        else if (choice == 2) _cancel(jobId, t, seed);
        else if (choice == 3) _closeBidding(jobId, t, job);
        else if (choice == 4) _commit(jobId, t, job.round, seed);
        else if (choice == 5) _reveal(jobId, t, seed);
        else if (choice == 6) _challenge(jobId, t);
        else if (choice == 7) _finalize(jobId, t, job.deadline);
        else _timeout(jobId, t, job.deadline);
        _observe(jobId, true);
    }

    function _post(uint256 seed) internal returns (uint256 jobId) {
        IChainSchedulerTypes.JobTerms memory t;
        t.client = _clients[seed % CLIENTS];
        t.specDigest = keccak256(bytes(SPEC_CID));
        bool replicated = (seed >> 8) % 2 == 0;
        t.k = replicated ? 3 : 1;
        t.m = replicated ? 2 : 1;
        uint256 kind = (seed >> 16) % 4;
        if (kind < 2) {
            (t.executor, t.safety) = (IChainSchedulerTypes.Executor.Wasm, IChainSchedulerTypes.SafetyClass.Deterministic);
        } else if (kind == 2 || replicated) {
            (t.executor, t.safety) = (IChainSchedulerTypes.Executor.Docker, IChainSchedulerTypes.SafetyClass.Nondestructive);
        } else {
            (t.executor, t.safety) = (IChainSchedulerTypes.Executor.Docker, IChainSchedulerTypes.SafetyClass.Destructive);
        }
        if (t.safety != IChainSchedulerTypes.SafetyClass.Destructive) {
            uint256 verify = (seed >> 24) % 3;
            t.verifiers = verify == 0 ? 0 : (verify == 1 ? 1 : 3);
            if (t.verifiers != 0) t.auditBps = [uint16(0), 5000, 10_000][(seed >> 32) % 3];
        }
        t.capabilities = (seed >> 40) % 8 == 0 ? GPU : 0;
        t.maxPrice = 1 gwei;
        t.maxUnits = 1000;
        t.minUnits = (seed >> 48) % 2 == 0 ? 0 : 100;
        // Collateral 0 only where nobody is checked (k = 1, no audit, no verifiers): the market
        // refuses it otherwise (ChainSchedulerBadTerm(10), see Attacks.t.sol).
        t.collateral = (seed >> 56) % 8 == 0 && t.k == 1 && t.verifiers == 0 ? 0 : 1 ether;
        // Phases outlast most waits (see MAX_WAIT), so a job usually lives to its next step
        // even when other jobs move the clock; the bid and challenge windows are short
        // enough to wait out.
        t.bidWindow = (seed >> 64) % 2 == 0 ? 0 : 5 minutes;
        // Half the jobs with a bid window draw their replicas from the entrants.
        t.lottery = t.bidWindow != 0 && (seed >> 96) % 2 == 0;
        t.fillTimeout = 1 hours;
        t.execTimeout = 1 hours;
        t.revealWindow = 30 minutes;
        t.challengeWindow = (seed >> 72) % 2 == 0 ? 0 : 15 minutes;
        uint256 count = market.jobCount();
        if ((seed >> 80) % 8 == 0 && count != 0) {
            t.parents = new uint64[](1);
            t.parents[0] = uint64(1 + (seed >> 88) % count);
        }

        uint256 escrow = market.escrowFor(t);
        VM.deal(t.client, t.client.balance + escrow);
        VM.prank(t.client);
        try market.postJob{value: escrow}(SPEC_CID, t) returns (uint256 id) {
            jobId = id;
        } catch {
            return 0;
        }
        done[Action.Post] += 1;
        _terms[jobId] = t;
        book[jobId] = Book({
            escrow: escrow,
            collateral: t.collateral,
            slots: t.k + 1 + t.verifiers,
            finished: 0,
            client: t.client,
            k: t.k
        });
        _live.push(jobId);
    }

    // ================================================================= actions

    function _bid(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, uint256 seed) internal {
        // One bid in nine asks more than the maximum price and is refused.
        uint64 price = uint64(1 + seed % (uint256(t.maxPrice) + t.maxPrice / 8));
        uint256 start = seed >> 64;
        bool drawn = market.getJob(jobId).round != IChainSchedulerTypes.Round.Main;
        // The first provider, from a random one on, that the contract accepts.
        for (uint256 i = 0; i < PROVIDERS; ++i) {
            VM.prank(_providers[(start + i) % PROVIDERS]);
            try market.bid(jobId, t, price) {
                done[Action.Bid] += 1;
                if (drawn) drawnRoundBids += 1;
                return;
            } catch {}
        }
    }

    /// @dev A keeper carries out the job's pending draw, usually one block after it was armed.
    /// One time in sixteen it tries in the arming block (must be refused); one time in eight
    /// nobody drew for 300 blocks. A draw whose block hash expired (older than 256 blocks, also
    /// after a quiet stretch of `warp`) must only re-arm.
    function _draw(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, uint256 seed) internal {
        IChainSchedulerTypes.Job memory before = market.getJob(jobId);
        uint256 armed = market.drawBlockOf(jobId);
        uint256 choice = seed % 16;
        if (choice == 0 && armed == _height()) {
            try market.draw(jobId, t) {
                earlyDraws += 1;
            } catch {}
            return;
        }
        VM.roll(_height() + (choice == 1 || choice == 2 ? 300 : 1));
        bool stale = armed != 0 && _height() - armed > 256;
        bytes32 digest = stale ? finishedState(market, jobId, book[jobId].slots) : bytes32(0);
        (uint256 heldBefore, uint256 extraBefore) = _seatsAndExtraVotes(jobId, t);
        try market.draw(jobId, t) {
            if (stale && before.flags & FLAG_DRAW_PENDING != 0) {
                // An expired audit decision audits (a fresh toss would reward waiting): the
                // audit round is open and its seat waits for a draw from this block.
                IChainSchedulerTypes.Job memory after_ = market.getJob(jobId);
                bool audited = after_.round == IChainSchedulerTypes.Round.Audit
                    && after_.status == IChainSchedulerTypes.JobStatus.Open && after_.flags & FLAG_DRAW_PENDING == 0;
                if (!audited || market.drawBlockOf(jobId) != _height()) staleDraws += 1;
                done[Action.DrawRearmed] += 1;
                return;
            }
            if (stale) {
                // Nothing seated; only the draw block moved to this one.
                bool moved = finishedState(market, jobId, book[jobId].slots) != digest;
                if (moved || market.drawBlockOf(jobId) != _height()) staleDraws += 1;
                done[Action.DrawRearmed] += 1;
                return;
            }
            done[Action.Draw] += 1;
            if (before.flags & FLAG_DRAW_PENDING != 0) auditDecisions += 1;
            if (before.round == IChainSchedulerTypes.Round.Main && market.getJob(jobId).filled != 0) lotteriesDrawn += 1;
            (uint256 held, uint256 extra) = _seatsAndExtraVotes(jobId, t);
            seatsDrawn += held - heldBefore;
            votesAdded += extra - extraBefore;
        } catch {}
    }

    /// @dev A lottery job whose replicas are not drawn yet (slot 0 was never filled).
    function _undrawn(uint256 jobId) internal view returns (bool) {
        (IChainSchedulerTypes.Slot memory first,) = market.getSlot(jobId, 0);
        return first.state == IChainSchedulerTypes.SlotState.Empty;
    }

    /// @dev Slots held (Assigned) in the job's current audit or verification round, and the
    /// votes beyond the first of its live (Assigned or Committed) slots.
    function _seatsAndExtraVotes(uint256 jobId, IChainSchedulerTypes.JobTerms memory t)
        internal
        view
        returns (uint256 held, uint256 extra)
    {
        IChainSchedulerTypes.Job memory job = market.getJob(jobId);
        if (job.round == IChainSchedulerTypes.Round.Main) return (0, 0);
        (uint256 first, uint256 count) = _range(job.round, t);
        for (uint256 i = first; i < first + count; ++i) {
            (IChainSchedulerTypes.Slot memory s,) = market.getSlot(jobId, uint8(i));
            if (s.state == IChainSchedulerTypes.SlotState.Assigned) ++held;
            if (s.state == IChainSchedulerTypes.SlotState.Assigned || s.state == IChainSchedulerTypes.SlotState.Committed) {
                extra += s.extraVotes;
            }
        }
    }

    function _withdrawBid(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, IChainSchedulerTypes.Round round, uint256 seed)
        internal
    {
        (uint256 first, uint256 count) = _range(round, t);
        for (uint256 i = 0; i < count; ++i) {
            uint8 slot = uint8(first + (seed + i) % count);
            (IChainSchedulerTypes.Slot memory s,) = market.getSlot(jobId, slot);
            if (s.state != IChainSchedulerTypes.SlotState.Assigned) continue;
            VM.prank(s.provider);
            try market.withdrawBid(jobId, t, slot) {
                done[Action.WithdrawBid] += 1;
            } catch {}
            return;
        }
    }

    function _cancel(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, uint256 seed) internal {
        if (t.parents.length != 0 && seed % 2 == 0) {
            // Anyone may cancel an orphan: the keeper here is the handler itself.
            try market.cancelOrphan(jobId, t, 0) {
                done[Action.CancelOrphan] += 1;
            } catch {}
            return;
        }
        VM.prank(t.client);
        try market.cancel(jobId, t) {
            done[Action.Cancel] += 1;
        } catch {}
    }

    function _closeBidding(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, IChainSchedulerTypes.Job memory job)
        internal
    {
        // While Open, the deadline is the fill deadline, `fillTimeout` after the round opened.
        uint256 windowEnd = uint256(job.deadline) + t.bidWindow - t.fillTimeout;
        if (_time() < windowEnd) VM.warp(windowEnd);
        try market.closeBidding(jobId, t) {
            done[Action.CloseBidding] += 1;
        } catch {}
    }

    function _commit(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, IChainSchedulerTypes.Round round, uint256 seed)
        internal
    {
        (uint256 first, uint256 count) = _range(round, t);
        for (uint256 i = 0; i < count; ++i) {
            uint8 slot = uint8(first + (seed + i) % count);
            (IChainSchedulerTypes.Slot memory s,) = market.getSlot(jobId, slot);
            if (s.state != IChainSchedulerTypes.SlotState.Assigned) continue;
            // The lazy verifier: in the pool, but half the time it never works a drawn seat.
            if (slot >= t.k && s.provider == _providers[LAZY_VERIFIER] && (seed >> 40) % 2 == 0) return;
            Opening memory opening = _plan(jobId, t, seed);
            bytes32 commitment =
                keccak256(
                abi.encode(jobId, s.provider, keccak256(bytes(_resultCid(opening.result))), opening.usage, opening.salt)
            );
            VM.prank(s.provider);
            try market.commit(jobId, t, slot, commitment) {
                done[Action.Commit] += 1;
                _openings[jobId][slot] = opening;
            } catch {}
            return;
        }
    }

    function _reveal(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, uint256 seed) internal {
        uint256 slots = book[jobId].slots;
        for (uint256 i = 0; i < slots; ++i) {
            uint8 slot = uint8((seed + i) % slots);
            (IChainSchedulerTypes.Slot memory s,) = market.getSlot(jobId, slot);
            if (s.state != IChainSchedulerTypes.SlotState.Committed) continue;
            Opening memory o = _openings[jobId][slot];
            if (_revealAs(s.provider, jobId, t, slot, o, o.salt)) done[Action.Reveal] += 1;
            return;
        }
    }

    /// @dev A reveal that does not open the commitment (another salt) must be refused.
    function _forgeReveal(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, uint256 seed) internal {
        uint256 slots = book[jobId].slots;
        for (uint256 i = 0; i < slots; ++i) {
            uint8 slot = uint8((seed + i) % slots);
            (IChainSchedulerTypes.Slot memory s,) = market.getSlot(jobId, slot);
            if (s.state != IChainSchedulerTypes.SlotState.Committed) continue;
            Opening memory o = _openings[jobId][slot];
            if (_revealAs(s.provider, jobId, t, slot, o, o.salt ^ bytes32(uint256(1)))) forgedRevealsAccepted += 1;
            return;
        }
    }

    /// @dev Reveal the way the slot must: sealed (the CID's hash) for main and audit slots of a
    /// job with verifiers, in the open otherwise. True when the market accepted it.
    function _revealAs(
        address provider,
        uint256 jobId,
        IChainSchedulerTypes.JobTerms memory t,
        uint8 slot,
        Opening memory o,
        bytes32 salt
    ) internal returns (bool) {
        string memory cid = _resultCid(o.result);
        VM.prank(provider);
        if (t.verifiers != 0 && slot <= t.k) {
            try market.revealSealed(jobId, t, slot, keccak256(bytes(cid)), o.usage, salt, "") {
                return true;
            } catch {
                return false;
            }
        }
        try market.reveal(jobId, t, slot, cid, o.usage, salt) {
            return true;
        } catch {
            return false;
        }
    }

    function _challenge(uint256 jobId, IChainSchedulerTypes.JobTerms memory t) internal {
        VM.deal(t.client, t.client.balance + t.collateral);
        VM.prank(t.client);
        // Every other job's client says it could not open the envelope (its bond comes back).
        if (jobId % 2 == 0) {
            try market.challengeUnread{value: t.collateral}(jobId, t) {
                done[Action.Challenge] += 1;
            } catch {}
        } else {
            try market.challenge{value: t.collateral}(jobId, t) {
                done[Action.Challenge] += 1;
            } catch {}
        }
    }

    function _finalize(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, uint40 deadline) internal {
        if (_time() < deadline) VM.warp(deadline);
        IChainSchedulerTypes.Job memory job = market.getJob(jobId);
        if (job.status == IChainSchedulerTypes.JobStatus.Succeeded && t.verifiers != 0 && job.winner <= t.k) {
            // A sealed result settles by its publication. In one job of four nobody publishes,
            // and finalize fails the job once a reveal window has passed.
            if (uint256(keccak256(abi.encode(jobId, "unpublished"))) % 4 != 0) {
                try market.publish(jobId, t, _resultCid(_openings[jobId][job.winner].result)) {
                    done[Action.Publish] += 1;
                    return;
                } catch {}
            }
            uint40 publishBy = deadline + t.revealWindow;
            if (_time() < publishBy && publishBy - _time() <= MAX_WAIT) VM.warp(publishBy);
        }
        try market.finalize(jobId, t) {
            done[Action.Finalize] += 1;
            if (market.getJob(jobId).status == IChainSchedulerTypes.JobStatus.Failed) unpublishedFailures += 1;
        } catch {}
    }

    function _timeout(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, uint40 deadline) internal {
        // A keeper waits out a phase only when it is nearly over: jumping a whole phase
        // would expire every other job's phase too, and few jobs would ever succeed.
        if (_time() < deadline && deadline - _time() <= MAX_WAIT) VM.warp(deadline);
        // A pending draw (which a timeout carries out) needs the hash of the block that armed it.
        if (market.drawBlockOf(jobId) == _height()) VM.roll(_height() + 1);
        IChainSchedulerTypes.Job memory before = market.getJob(jobId);
        uint256 slashedBefore = _slashedSeats(before, jobId, t);
        try market.timeout(jobId, t) {
            done[Action.Timeout] += 1;
            IChainSchedulerTypes.Job memory job = market.getJob(jobId);
            if (
                before.status == IChainSchedulerTypes.JobStatus.Running && before.round != IChainSchedulerTypes.Round.Main
                    && job.status == IChainSchedulerTypes.JobStatus.Open && job.round == before.round
            ) {
                drawnSeatsReopened += _slashedSeats(job, jobId, t) - slashedBefore;
            }
        } catch {}
    }

    /// @dev Slashed seats in the job's current audit or verification round.
    function _slashedSeats(IChainSchedulerTypes.Job memory job, uint256 jobId, IChainSchedulerTypes.JobTerms memory t)
        internal
        view
        returns (uint256 slashed)
    {
        if (job.round == IChainSchedulerTypes.Round.Main) return 0;
        (uint256 first, uint256 count) = _range(job.round, t);
        for (uint256 i = first; i < first + count; ++i) {
            (IChainSchedulerTypes.Slot memory s,) = market.getSlot(jobId, uint8(i));
            if (s.state == IChainSchedulerTypes.SlotState.Slashed) ++slashed;
        }
    }

    function _addStake(address provider, uint256 amount) internal {
        VM.deal(provider, provider.balance + amount);
        VM.prank(provider);
        market.addStake{value: amount}();
        done[Action.AddStake] += 1;
    }

    // ============================================================= bookkeeping

    /// @dev Snapshot a job the first time it is seen finished; afterwards compare. Returns
    /// whether the job is still live.
    /// `acted`: a step just acted on the job (only then can its slots have changed).
    function _observe(uint256 jobId, bool acted) internal returns (bool live) {
        IChainSchedulerTypes.Job memory job = market.getJob(jobId);
        roundsSeen[job.round] += 1;
        Book storage b = book[jobId];
        if (acted && b.finished == 0) _recordHolders(jobId, b);
        if (!isFinished(job.status)) return true;
        bytes32 digest = finishedState(market, jobId, b.slots);
        if (b.finished == 0) {
            b.finished = digest;
            ended[job.status] += 1;
            for (uint256 i = 0; i < b.slots; ++i) {
                (IChainSchedulerTypes.Slot memory s,) = market.getSlot(jobId, uint8(i));
                if (s.state == IChainSchedulerTypes.SlotState.Slashed) slashedSlots += 1;
            }
            _forget(jobId);
        } else if (b.finished != digest) {
            finishedJobsChanged += 1;
        }
        return false;
    }

    /// @dev Note the slot of each provider that took part in the job (committed, revealed, was
    /// slashed or settled; a bid withdrawn or displaced is not taking part). A drawn seat held by
    /// a provider noted in another slot counts in `drawnSeatsToPastHolders`.
    function _recordHolders(uint256 jobId, Book storage b) internal {
        for (uint256 i = 0; i < b.slots; ++i) {
            (IChainSchedulerTypes.Slot memory s,) = market.getSlot(jobId, uint8(i));
            if (s.provider == address(0)) continue;
            uint256 seen = _seenIn[jobId][s.provider];
            if (i >= b.k && seen != 0 && seen != i + 1) {
                drawnSeatsToPastHolders += 1;
                // Counted once: from now on it is noted in this seat.
                _seenIn[jobId][s.provider] = i + 1;
            } else if (seen == 0 && s.state != IChainSchedulerTypes.SlotState.Assigned) {
                _seenIn[jobId][s.provider] = i + 1;
            }
        }
    }

    function _outsidePool(uint256 index) internal pure returns (bool) {
        return index >= OUTSIDE_POOL_FROM && index < PLAIN_PROVIDERS;
    }

    function _observeLive() internal {
        // Backwards: _observe may swap-remove the current entry.
        for (uint256 i = _live.length; i > 0; --i) {
            _observe(_live[i - 1], false);
        }
    }

    function _forget(uint256 jobId) internal {
        for (uint256 i = 0; i < _live.length; ++i) {
            if (_live[i] == jobId) {
                _live[i] = _live[_live.length - 1];
                _live.pop();
                return;
            }
        }
    }

    /// @dev Five results in six are the job's true one, the rest another result; a
    /// deterministic job's replica also lies about its usage only, one time in twelve.
    function _plan(uint256 jobId, IChainSchedulerTypes.JobTerms memory t, uint256 seed)
        internal
        pure
        returns (Opening memory o)
    {
        bool deterministic = t.safety == IChainSchedulerTypes.SafetyClass.Deterministic;
        // Up to 1199 units against maxUnits 1000: the cap is exercised too.
        uint64 trueUsage = uint64(uint256(keccak256(abi.encode(jobId))) % 1200);
        o.salt = keccak256(abi.encode(seed, "salt"));
        o.usage = deterministic ? trueUsage : uint64((seed >> 16) % 1200);
        uint256 lie = (seed >> 32) % 12;
        if (lie == 0) o.result = 1;
        else if (lie == 1) o.result = 2;
        else if (lie == 2 && deterministic) o.usage = trueUsage + 1;
    }

    function _resultCid(uint8 result) internal pure returns (string memory) {
        if (result == 0) return "bafy-result-true";
        if (result == 1) return "bafy-result-wrong";
        return "bafy-result-other";
    }

    function _range(IChainSchedulerTypes.Round round, IChainSchedulerTypes.JobTerms memory t)
        internal
        pure
        returns (uint256 first, uint256 count)
    {
        if (round == IChainSchedulerTypes.Round.Main) return (0, t.k);
        if (round == IChainSchedulerTypes.Round.Audit) return (t.k, 1);
        return (uint256(t.k) + 1, t.verifiers);
    }

    /// @dev `block.timestamp` and `block.number` as they are now: via-IR may reuse a read made
    /// before a `warp` or `roll` earlier in the same handler call.
    function _time() internal view returns (uint256) {
        return VM.getBlockTimestamp();
    }

    function _height() internal view returns (uint256) {
        return VM.getBlockNumber();
    }

    function _next(uint256 seed) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed)));
    }

    function _digit(uint256 i) internal pure returns (string memory) {
        return string(abi.encodePacked(bytes1(uint8(48 + i))));
    }
}

/// @title Market invariants, checked by forge after every handler call.
/// @notice `invariant_marketLedger` holds after every call of `MarketHandler`:
///  1. The contract's ether equals what it owes: Σ credit of every actor + Σ providers'
///     free and locked stake + Σ escrow of live jobs + Σ slash pools + Σ challenge bonds.
///  2. Each provider's locked stake equals the collateral of the slots it holds live
///     (Assigned, Committed or Revealed), and a finished job holds no live slot.
///  3. A finished job (Finalized, Failed, Cancelled) never changes again, and keeps
///     neither a slash pool nor a bond.
///  4. No withdrawal ever paid more (or less) than the credit; no forged reveal was accepted.
///  5. The verifier pool's total weight is the sum of the providers' pool weights, and each
///     provider's pool weight is its whole stake (free + locked) while it has the VERIFIER bit
///     and is not unbonding, else 0.
///  6. No drawn seat (audit or verifier slot) is held by the job's client or by a provider
///     that holds (or held, while its record is kept) another slot of the same job; no bid
///     was accepted for a drawn seat, no draw ran in the block that armed it, and a draw whose
///     block hash had expired only re-armed.
/// @dev Run by `make forge` (bounded) and `make fuzz` (>= 100,000 calls). forge finds
/// `invariant_*`, `test*`, `targetContracts()` and `targetSelectors()` by name, so no
/// forge-std is needed.
contract MarketInvariantsTest {
    /// @dev forge-std's `StdInvariant.FuzzSelector`: forge decodes `targetSelectors()` by shape.
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    /// @notice The contract's ether differs from what it owes.
    error MarketInvariantsBalanceMismatch(uint256 held, uint256 owed);
    /// @notice A provider's locked stake differs from the collateral of its live slots.
    error MarketInvariantsLockedStakeMismatch(address provider, uint256 locked, uint256 liveCollateral);
    /// @notice A finished job still holds a slot's collateral.
    error MarketInvariantsCollateralInFinishedJob(uint256 jobId, uint8 slot);
    /// @notice A finished job still holds a slash pool or a challenge bond.
    error MarketInvariantsMoneyInFinishedJob(uint256 jobId, uint256 slashPool, uint256 bond);
    /// @notice A finished job changed.
    error MarketInvariantsFinishedJobChanged(uint256 jobId);
    /// @notice The handler saw a violation while acting (see the counter named).
    error MarketInvariantsViolation(string counter, uint256 count);
    /// @notice The pool's total weight differs from the sum of its members' weights.
    error MarketInvariantsPoolWeightMismatch(uint256 total, uint256 sumOfMembers);
    /// @notice A provider's pool weight is not its whole stake (VERIFIER, not unbonding) or 0.
    error MarketInvariantsProviderWeightMismatch(address provider, uint256 poolWeight, uint256 expected);
    /// @notice A drawn seat went to the job's client or to a provider holding another slot.
    error MarketInvariantsBadDrawnSeat(uint256 jobId, uint8 seat, address provider);
    /// @notice The coverage test did not reach an outcome.
    error MarketInvariantsNotReached(string outcome);

    uint40 internal constant UNBONDING_DELAY = 1 hours;

    IChainScheduler internal market;
    MarketHandler internal handler;

    function setUp() public {
        VM.warp(1_700_000_000);
        // Not `new IChainScheduler`: see `Vm.deployCode`.
        market = IChainScheduler(VM.deployCode("ChainScheduler.sol:ChainScheduler", abi.encode(UNBONDING_DELAY)));
        handler = new MarketHandler(market);
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function targetSelectors() public view returns (FuzzSelector[] memory targets) {
        bytes4[] memory selectors = new bytes4[](5);
        selectors[0] = MarketHandler.post.selector;
        selectors[1] = MarketHandler.drive.selector;
        selectors[2] = MarketHandler.withdraw.selector;
        selectors[3] = MarketHandler.stake.selector;
        selectors[4] = MarketHandler.warp.selector;
        targets = new FuzzSelector[](1);
        targets[0] = FuzzSelector({addr: address(handler), selectors: selectors});
    }

    /// @notice All six market invariants (see the contract notice), in one campaign: forge
    /// runs a separate campaign per invariant function, so one function checks them all
    /// after every call at a quarter of the cost.
    function invariant_marketLedger() public view {
        _checkMarket();
    }

    /// @notice The handler is not vacuous: a fixed sequence of 600 calls reaches every
    /// outcome (finalized, failed, cancelled, challenged, audited, escalated, slashed,
    /// bids withdrawn, stake unstaked, audit decisions and seats drawn, a drawn seat slashed
    /// and reopened, an expired draw re-armed), with the invariants checked after every call.
    function test_handlerReachesEveryOutcome() public {
        for (uint256 i = 0; i < 600; ++i) {
            uint256 seed = uint256(keccak256(abi.encode("coverage", i)));
            uint256 which = seed % 5;
            uint256 arg = seed >> 8;
            if (which == 0) handler.post(arg);
            else if (which == 1) handler.drive(arg, _rehash(arg));
            else if (which == 2) handler.withdraw(arg);
            else if (which == 3) handler.stake(arg, _rehash(arg));
            else handler.warp(arg);
            // An external call, so each check starts with fresh memory.
            this.invariant_marketLedger();
        }
        // Printed by `forge test -vv` (make forge): how far the handler took the jobs.
        _reached("jobs posted", handler.done(MarketHandler.Action.Post));
        _reached("jobs finalized", handler.ended(IChainSchedulerTypes.JobStatus.Finalized));
        _reached("jobs failed", handler.ended(IChainSchedulerTypes.JobStatus.Failed));
        _reached("jobs cancelled", handler.ended(IChainSchedulerTypes.JobStatus.Cancelled));
        _reached("steps in an audit round", handler.roundsSeen(IChainSchedulerTypes.Round.Audit));
        _reached("steps in a verify round", handler.roundsSeen(IChainSchedulerTypes.Round.Verify));
        _reached("slots slashed", handler.slashedSlots());
        _reached("bids", handler.done(MarketHandler.Action.Bid));
        _reached("bids withdrawn", handler.done(MarketHandler.Action.WithdrawBid));
        _reached("biddings closed", handler.done(MarketHandler.Action.CloseBidding));
        _reached("commits", handler.done(MarketHandler.Action.Commit));
        _reached("reveals", handler.done(MarketHandler.Action.Reveal));
        _reached("timeouts", handler.done(MarketHandler.Action.Timeout));
        _reached("challenges", handler.done(MarketHandler.Action.Challenge));
        _reached("finalizes", handler.done(MarketHandler.Action.Finalize));
        _reached("sealed results published (settling their jobs)", handler.done(MarketHandler.Action.Publish));
        _reached("sealed results unpublished, failed by finalize", handler.unpublishedFailures());
        _reached("withdrawals", handler.done(MarketHandler.Action.Withdraw));
        _reached("unstakes", handler.done(MarketHandler.Action.Unstake));
        _reached("draws", handler.done(MarketHandler.Action.Draw));
        _reached("audit decisions drawn", handler.auditDecisions());
        _reached("seats drawn", handler.seatsDrawn());
        _reached("votes added to a verifier drawn for another seat", handler.votesAdded());
        _reached("lotteries drawn", handler.lotteriesDrawn());
        _reached("drawn seats reopened after a missed commit", handler.drawnSeatsReopened());
        _reached("expired draws re-armed", handler.done(MarketHandler.Action.DrawRearmed));
        _reached("pool memberships toggled", handler.done(MarketHandler.Action.SetCapabilities));
        // Not enforced (see Attacks.t.sol, OpenBugsTest): the market forgets a slot's earlier
        // holder once its record is overwritten, so such a provider can be drawn for the job.
        consoleLog("drawn seats given to an earlier holder of another slot", handler.drawnSeatsToPastHolders());
    }

    /// @notice withdraw() pays nothing to an account without credit (expectRevert demo).
    function test_withdrawRefusesAnAccountWithoutCredit() public {
        VM.expectRevert(
            abi.encodeWithSelector(IChainSchedulerTypes.ChainSchedulerNothingToWithdraw.selector, address(this))
        );
        market.withdraw();
    }

    function _checkMarket() internal view {
        _noViolation("withdrawalsAboveCredit", handler.withdrawalsAboveCredit());
        _noViolation("withdrawalsBelowCredit", handler.withdrawalsBelowCredit());
        _noViolation("forgedRevealsAccepted", handler.forgedRevealsAccepted());
        _noViolation("finishedJobsChanged", handler.finishedJobsChanged());
        _noViolation("drawnRoundBids", handler.drawnRoundBids());
        _noViolation("earlyDraws", handler.earlyDraws());
        _noViolation("staleDraws", handler.staleDraws());
        address[] memory providers = handler.providers();
        uint256[] memory liveCollateral = new uint256[](providers.length);
        uint256 owed = _credits() + _jobsHold(providers, liveCollateral) + _stakes(providers, liveCollateral);
        if (address(market).balance != owed) revert MarketInvariantsBalanceMismatch(address(market).balance, owed);
    }

    /// @dev Σ credit of every actor.
    function _credits() internal view returns (uint256 total) {
        address[] memory actors = handler.actors();
        for (uint256 i = 0; i < actors.length; ++i) {
            total += market.creditOf(actors[i]);
        }
    }

    /// @dev Σ free + locked stake; each provider's locked stake must be its live collateral.
    /// The verifier pool (one pass over the providers): its total is the sum of its members'
    /// weights (every member is a handler provider), and each weight is the provider's whole
    /// stake while it has the VERIFIER bit and is not unbonding, else 0.
    function _stakes(address[] memory providers, uint256[] memory liveCollateral)
        internal
        view
        returns (uint256 total)
    {
        uint32 verifier = market.VERIFIER();
        uint256 weights = 0;
        for (uint256 i = 0; i < providers.length; ++i) {
            IChainSchedulerTypes.Provider memory p = market.getProvider(providers[i]);
            uint256 stake = uint256(p.free) + p.locked;
            total += stake;
            if (p.locked != liveCollateral[i]) {
                revert MarketInvariantsLockedStakeMismatch(providers[i], p.locked, liveCollateral[i]);
            }
            uint256 expected = p.capabilities & verifier != 0 && p.unbondingAt == 0 ? stake : 0;
            if (p.poolWeight != expected) {
                revert MarketInvariantsProviderWeightMismatch(providers[i], p.poolWeight, expected);
            }
            weights += p.poolWeight;
        }
        (, uint256 poolTotal) = market.poolOf();
        if (poolTotal != weights) revert MarketInvariantsPoolWeightMismatch(poolTotal, weights);
    }

    /// @dev Σ what the jobs hold (escrow of live jobs, slash pools, bonds), checking each job
    /// and adding its live slots' collateral per provider.
    function _jobsHold(address[] memory providers, uint256[] memory liveCollateral)
        internal
        view
        returns (uint256 total)
    {
        uint256 jobs = market.jobCount();
        for (uint256 jobId = 1; jobId <= jobs; ++jobId) {
            total += _checkJob(jobId, providers, liveCollateral);
        }
    }

    function _checkJob(uint256 jobId, address[] memory providers, uint256[] memory liveCollateral)
        internal
        view
        returns (uint256 held)
    {
        (uint256 escrow, uint96 collateral, uint8 slots, bytes32 finishedDigest, address client, uint8 k) =
            handler.book(jobId);
        IChainSchedulerTypes.Job memory job = market.getJob(jobId);
        uint256 pool = market.slashPoolOf(jobId);
        uint256 bond = market.challengeBondOf(jobId);
        bool finished = isFinished(job.status);
        if (finished) {
            if (pool != 0 || bond != 0) revert MarketInvariantsMoneyInFinishedJob(jobId, pool, bond);
        } else {
            held = escrow + pool + bond;
        }
        // One read of each slot serves every check, and `finishedState`'s digest (the check
        // runs after each of thousands of calls, over every job).
        bytes32 digest = keccak256(abi.encode(job, pool, bond));
        address[] memory holders = new address[](slots);
        for (uint256 s = 0; s < slots; ++s) {
            (IChainSchedulerTypes.Slot memory slot, bytes32 sealedValue) = market.getSlot(jobId, uint8(s));
            digest = keccak256(abi.encode(digest, slot, sealedValue));
            holders[s] = slot.provider;
            if (!holdsCollateral(slot.state)) continue;
            if (finished) revert MarketInvariantsCollateralInFinishedJob(jobId, uint8(s));
            // A verifier drawn for several seats of the round locks a collateral per vote.
            for (uint256 i = 0; i < providers.length; ++i) {
                if (providers[i] == slot.provider) liveCollateral[i] += collateral * (1 + uint256(slot.extraVotes));
            }
        }
        // A lottery's entrants hold their collateral until the draw (or the job ends before it).
        (address[] memory entrants,) = market.entrantsOf(jobId);
        if (!finished && entrants.length != 0 && holders[0] == address(0)) {
            for (uint256 e = 0; e < entrants.length; ++e) {
                for (uint256 i = 0; i < providers.length; ++i) {
                    if (providers[i] == entrants[e]) liveCollateral[i] += collateral;
                }
            }
        }
        // A finished job has not changed since it finished.
        if (finished && finishedDigest != 0 && finishedDigest != digest) revert MarketInvariantsFinishedJobChanged(jobId);
        _checkDrawnSeats(jobId, holders, client, k);
    }

    /// @dev Each drawn seat (slots k..) with a provider: not the client, and no other slot record
    /// of the job (whatever its state) names the same provider.
    function _checkDrawnSeats(uint256 jobId, address[] memory holders, address client, uint8 k) internal pure {
        for (uint256 i = k; i < holders.length; ++i) {
            address provider = holders[i];
            if (provider == address(0)) continue;
            if (provider == client) revert MarketInvariantsBadDrawnSeat(jobId, uint8(i), provider);
            for (uint256 j = 0; j < holders.length; ++j) {
                if (j != i && holders[j] == provider) revert MarketInvariantsBadDrawnSeat(jobId, uint8(i), provider);
            }
        }
    }

    function _noViolation(string memory counter, uint256 count) internal pure {
        if (count != 0) revert MarketInvariantsViolation(counter, count);
    }

    function _reached(string memory outcome, uint256 count) internal view {
        consoleLog(outcome, count);
        if (count == 0) revert MarketInvariantsNotReached(outcome);
    }

    function _rehash(uint256 value) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(value)));
    }
}
