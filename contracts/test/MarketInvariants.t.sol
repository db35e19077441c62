// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ChainScheduler} from "../ChainScheduler.sol";
import {IChainScheduler} from "../IChainScheduler.sol";
import {VM, consoleLog} from "./Vm.sol";

/// @dev Hash of everything a finished job must never change again: its record, every slot
/// (provider, price, state, sealed value), its slash pool and its challenge bond.
function finishedState(ChainScheduler market, uint256 jobId, uint256 slots) view returns (bytes32 digest) {
    digest = keccak256(abi.encode(market.getJob(jobId), market.slashPoolOf(jobId), market.challengeBondOf(jobId)));
    for (uint256 i = 0; i < slots; ++i) {
        (IChainScheduler.Slot memory slot, bytes32 sealedValue) = market.getSlot(jobId, uint8(i));
        digest = keccak256(abi.encode(digest, slot, sealedValue));
    }
}

/// @dev `Finalized`, `Failed` and `Cancelled` never change again.
function isFinished(IChainScheduler.JobStatus status) pure returns (bool) {
    return status == IChainScheduler.JobStatus.Finalized || status == IChainScheduler.JobStatus.Failed
        || status == IChainScheduler.JobStatus.Cancelled;
}

/// @dev A slot that holds its provider's collateral.
function holdsCollateral(IChainScheduler.SlotState state) pure returns (bool) {
    return state == IChainScheduler.SlotState.Assigned || state == IChainScheduler.SlotState.Committed
        || state == IChainScheduler.SlotState.Revealed;
}

/// @title Drives market jobs through whole lifecycles for forge's invariant fuzzer.
/// @notice Three clients and eight providers (plain addresses the handler pranks as) post,
/// bid, withdraw bids, commit (about one in five a wrong result), reveal, let deadlines
/// pass, challenge, finalize, cancel, withdraw and move stake. Every `drive` call takes
/// one job up to eight steps along its lifecycle, choosing each step from the job's
/// current status: a handler that only makes single random calls rarely gets a job past
/// bidding, and misses the bugs that live in settlement (DESIGN.md, forge notes).
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
    struct Book {
        uint256 escrow;
        uint96 collateral;
        uint8 slots;
        bytes32 finished;
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
        Unstake
    }

    uint256 public constant CLIENTS = 3;
    uint256 public constant PROVIDERS = 8;
    uint256 internal constant MAX_LIVE = 6;
    uint256 internal constant MAX_JOBS = 64;
    uint256 internal constant MAX_STEPS = 8;
    uint256 internal constant INITIAL_STAKE = 8 ether;
    uint256 internal constant MAX_WAIT = 20 minutes;
    uint32 internal constant WASM = 1;
    uint32 internal constant DOCKER = 2;
    uint32 internal constant GPU = 4;
    string internal constant SPEC_CID = "bafy-spec";

    ChainScheduler public immutable market;
    address[] internal _clients;
    address[] internal _providers;

    mapping(uint256 jobId => IChainScheduler.JobTerms) internal _terms;
    mapping(uint256 jobId => Book) public book;
    mapping(uint256 jobId => mapping(uint256 slot => Opening)) internal _openings;
    /// @dev Jobs not seen finished yet, the ones `drive` picks from.
    uint256[] internal _live;

    // Violations seen while acting (the invariant requires each to stay 0).
    uint256 public withdrawalsAboveCredit;
    uint256 public withdrawalsBelowCredit;
    uint256 public forgedRevealsAccepted;
    uint256 public finishedJobsChanged;

    // Coverage counters (the coverage test requires each to be reached).
    mapping(Action => uint256) public done;
    mapping(IChainScheduler.JobStatus => uint256) public ended;
    mapping(IChainScheduler.Round => uint256) public roundsSeen;
    uint256 public slashedSlots;

    constructor(ChainScheduler market_) {
        market = market_;
        for (uint256 i = 0; i < CLIENTS; ++i) {
            address client = address(uint160(0xC000 + i));
            VM.label(client, string.concat("client", _digit(i)));
            _clients.push(client);
        }
        for (uint256 i = 0; i < PROVIDERS; ++i) {
            address provider = address(uint160(0xB000 + i));
            VM.label(provider, string.concat("provider", _digit(i)));
            _providers.push(provider);
            // Three providers have a GPU: just enough for a k=3 GPU job, none to spare.
            uint32 capabilities = WASM | DOCKER | (i < 3 ? GPU : 0);
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
        IChainScheduler.Provider memory info = market.getProvider(provider);
        if (info.unbondingAt != 0) {
            if (block.timestamp < info.unbondingAt) VM.warp(info.unbondingAt);
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
        } else {
            _addStake(provider, 1 ether + seed % (4 ether));
        }
        _observeLive();
    }

    /// @notice Up to 15 minutes pass (every deadline moves closer), with a new prevrandao.
    function warp(uint256 seconds_) external {
        VM.warp(block.timestamp + seconds_ % 15 minutes);
        VM.roll(block.number + 1);
        VM.prevrandao(keccak256(abi.encode(seconds_)));
        _observeLive();
    }

    // =================================================================== views

    /// @notice Everyone who can hold credit: the clients, then the providers.
    function actors() external view returns (address[] memory all) {
        all = new address[](CLIENTS + PROVIDERS);
        for (uint256 i = 0; i < CLIENTS; ++i) all[i] = _clients[i];
        for (uint256 i = 0; i < PROVIDERS; ++i) all[CLIENTS + i] = _providers[i];
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
        IChainScheduler.Job memory job = market.getJob(jobId);
        IChainScheduler.JobTerms memory t = _terms[jobId];
        uint256 choice = seed % 16;
        seed >>= 8;
        IChainScheduler.JobStatus status = job.status;
        bool moving = status == IChainScheduler.JobStatus.Open || status == IChainScheduler.JobStatus.Running
            || status == IChainScheduler.JobStatus.Revealing;
        if (moving && block.timestamp >= job.deadline && choice >= 4) {
            // The phase is over: usually a keeper moves the job on; sometimes a late
            // provider still tries (and must be refused).
            _timeout(jobId, t, job.deadline);
        } else if (status == IChainScheduler.JobStatus.Open) {
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
        } else if (status == IChainScheduler.JobStatus.Running) {
            if (choice < 14) _commit(jobId, t, job.round, seed);
            else _timeout(jobId, t, job.deadline);
        } else if (status == IChainScheduler.JobStatus.Revealing) {
            if (choice == 0) _forgeReveal(jobId, t, seed);
            else if (choice < 14) _reveal(jobId, t, seed);
            else _timeout(jobId, t, job.deadline);
        } else if (status == IChainScheduler.JobStatus.Succeeded) {
            if (choice < 8 && t.verifiers != 0) _challenge(jobId, t);
            else _finalize(jobId, t, job.deadline);
        }
        return _observe(jobId);
    }

    /// @dev Any action on any job, whatever its status: finished jobs must refuse them all.
    function _poke(uint256 jobId, uint256 seed) internal {
        IChainScheduler.Job memory job = market.getJob(jobId);
        IChainScheduler.JobTerms memory t = _terms[jobId];
        uint256 choice = seed % 9;
        seed >>= 8;
        if (choice == 0) _bid(jobId, t, seed);
        else if (choice == 1) _withdrawBid(jobId, t, job.round, seed);
        else if (choice == 2) _cancel(jobId, t, seed);
        else if (choice == 3) _closeBidding(jobId, t, job);
        else if (choice == 4) _commit(jobId, t, job.round, seed);
        else if (choice == 5) _reveal(jobId, t, seed);
        else if (choice == 6) _challenge(jobId, t);
        else if (choice == 7) _finalize(jobId, t, job.deadline);
        else _timeout(jobId, t, job.deadline);
        _observe(jobId);
    }

    function _post(uint256 seed) internal returns (uint256 jobId) {
        IChainScheduler.JobTerms memory t;
        t.client = _clients[seed % CLIENTS];
        t.specDigest = keccak256(bytes(SPEC_CID));
        bool replicated = (seed >> 8) % 2 == 0;
        t.k = replicated ? 3 : 1;
        t.m = replicated ? 2 : 1;
        uint256 kind = (seed >> 16) % 4;
        if (kind < 2) {
            (t.executor, t.safety) = (IChainScheduler.Executor.Wasm, IChainScheduler.SafetyClass.Deterministic);
        } else if (kind == 2 || replicated) {
            (t.executor, t.safety) = (IChainScheduler.Executor.Docker, IChainScheduler.SafetyClass.Nondestructive);
        } else {
            (t.executor, t.safety) = (IChainScheduler.Executor.Docker, IChainScheduler.SafetyClass.Destructive);
        }
        if (t.safety != IChainScheduler.SafetyClass.Destructive) {
            uint256 verify = (seed >> 24) % 3;
            t.verifiers = verify == 0 ? 0 : (verify == 1 ? 1 : 3);
            if (t.verifiers != 0) t.auditBps = [uint16(0), 5000, 10_000][(seed >> 32) % 3];
        }
        t.capabilities = (seed >> 40) % 8 == 0 ? GPU : 0;
        t.maxPrice = 1 gwei;
        t.maxUnits = 1000;
        t.minUnits = (seed >> 48) % 2 == 0 ? 0 : 100;
        t.collateral = (seed >> 56) % 8 == 0 ? 0 : 1 ether;
        // Phases outlast most waits (see MAX_WAIT), so a job usually lives to its next step
        // even when other jobs move the clock; the bid and challenge windows are short
        // enough to wait out.
        t.bidWindow = (seed >> 64) % 2 == 0 ? 0 : 5 minutes;
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
            finished: 0
        });
        _live.push(jobId);
    }

    // ================================================================= actions

    function _bid(uint256 jobId, IChainScheduler.JobTerms memory t, uint256 seed) internal {
        // One bid in nine asks more than the maximum price and is refused.
        uint64 price = uint64(1 + seed % (uint256(t.maxPrice) + t.maxPrice / 8));
        uint256 start = seed >> 64;
        // The first provider, from a random one on, that the contract accepts.
        for (uint256 i = 0; i < PROVIDERS; ++i) {
            VM.prank(_providers[(start + i) % PROVIDERS]);
            try market.bid(jobId, t, price) {
                done[Action.Bid] += 1;
                return;
            } catch {}
        }
    }

    function _withdrawBid(uint256 jobId, IChainScheduler.JobTerms memory t, IChainScheduler.Round round, uint256 seed)
        internal
    {
        (uint256 first, uint256 count) = _range(round, t);
        for (uint256 i = 0; i < count; ++i) {
            uint8 slot = uint8(first + (seed + i) % count);
            (IChainScheduler.Slot memory s,) = market.getSlot(jobId, slot);
            if (s.state != IChainScheduler.SlotState.Assigned) continue;
            VM.prank(s.provider);
            try market.withdrawBid(jobId, t, slot) {
                done[Action.WithdrawBid] += 1;
            } catch {}
            return;
        }
    }

    function _cancel(uint256 jobId, IChainScheduler.JobTerms memory t, uint256 seed) internal {
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

    function _closeBidding(uint256 jobId, IChainScheduler.JobTerms memory t, IChainScheduler.Job memory job)
        internal
    {
        // While Open, the deadline is the fill deadline, `fillTimeout` after the round opened.
        uint256 windowEnd = uint256(job.deadline) + t.bidWindow - t.fillTimeout;
        if (block.timestamp < windowEnd) VM.warp(windowEnd);
        try market.closeBidding(jobId, t) {
            done[Action.CloseBidding] += 1;
        } catch {}
    }

    function _commit(uint256 jobId, IChainScheduler.JobTerms memory t, IChainScheduler.Round round, uint256 seed)
        internal
    {
        (uint256 first, uint256 count) = _range(round, t);
        for (uint256 i = 0; i < count; ++i) {
            uint8 slot = uint8(first + (seed + i) % count);
            (IChainScheduler.Slot memory s,) = market.getSlot(jobId, slot);
            if (s.state != IChainScheduler.SlotState.Assigned) continue;
            Opening memory opening = _plan(jobId, t, seed);
            bytes32 commitment =
                keccak256(abi.encode(jobId, s.provider, _resultCid(opening.result), opening.usage, opening.salt));
            VM.prank(s.provider);
            try market.commit(jobId, t, slot, commitment) {
                done[Action.Commit] += 1;
                _openings[jobId][slot] = opening;
            } catch {}
            return;
        }
    }

    function _reveal(uint256 jobId, IChainScheduler.JobTerms memory t, uint256 seed) internal {
        uint256 slots = book[jobId].slots;
        for (uint256 i = 0; i < slots; ++i) {
            uint8 slot = uint8((seed + i) % slots);
            (IChainScheduler.Slot memory s,) = market.getSlot(jobId, slot);
            if (s.state != IChainScheduler.SlotState.Committed) continue;
            Opening memory o = _openings[jobId][slot];
            VM.prank(s.provider);
            try market.reveal(jobId, t, slot, _resultCid(o.result), o.usage, o.salt) {
                done[Action.Reveal] += 1;
            } catch {}
            return;
        }
    }

    /// @dev A reveal that does not open the commitment (another salt) must be refused.
    function _forgeReveal(uint256 jobId, IChainScheduler.JobTerms memory t, uint256 seed) internal {
        uint256 slots = book[jobId].slots;
        for (uint256 i = 0; i < slots; ++i) {
            uint8 slot = uint8((seed + i) % slots);
            (IChainScheduler.Slot memory s,) = market.getSlot(jobId, slot);
            if (s.state != IChainScheduler.SlotState.Committed) continue;
            Opening memory o = _openings[jobId][slot];
            VM.prank(s.provider);
            try market.reveal(jobId, t, slot, _resultCid(o.result), o.usage, o.salt ^ bytes32(uint256(1))) {
                forgedRevealsAccepted += 1;
            } catch {}
            return;
        }
    }

    function _challenge(uint256 jobId, IChainScheduler.JobTerms memory t) internal {
        VM.deal(t.client, t.client.balance + t.collateral);
        VM.prank(t.client);
        try market.challenge{value: t.collateral}(jobId, t) {
            done[Action.Challenge] += 1;
        } catch {}
    }

    function _finalize(uint256 jobId, IChainScheduler.JobTerms memory t, uint40 deadline) internal {
        if (block.timestamp < deadline) VM.warp(deadline);
        try market.finalize(jobId, t) {
            done[Action.Finalize] += 1;
        } catch {}
    }

    function _timeout(uint256 jobId, IChainScheduler.JobTerms memory t, uint40 deadline) internal {
        // A keeper waits out a phase only when it is nearly over: jumping a whole phase
        // would expire every other job's phase too, and few jobs would ever succeed.
        if (block.timestamp < deadline && deadline - block.timestamp <= MAX_WAIT) VM.warp(deadline);
        try market.timeout(jobId, t) {
            done[Action.Timeout] += 1;
        } catch {}
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
    function _observe(uint256 jobId) internal returns (bool live) {
        IChainScheduler.Job memory job = market.getJob(jobId);
        roundsSeen[job.round] += 1;
        if (!isFinished(job.status)) return true;
        Book storage b = book[jobId];
        bytes32 digest = finishedState(market, jobId, b.slots);
        if (b.finished == 0) {
            b.finished = digest;
            ended[job.status] += 1;
            for (uint256 i = 0; i < b.slots; ++i) {
                (IChainScheduler.Slot memory s,) = market.getSlot(jobId, uint8(i));
                if (s.state == IChainScheduler.SlotState.Slashed) slashedSlots += 1;
            }
            _forget(jobId);
        } else if (b.finished != digest) {
            finishedJobsChanged += 1;
        }
        return false;
    }

    function _observeLive() internal {
        // Backwards: _observe may swap-remove the current entry.
        for (uint256 i = _live.length; i > 0; --i) {
            _observe(_live[i - 1]);
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
    function _plan(uint256 jobId, IChainScheduler.JobTerms memory t, uint256 seed)
        internal
        pure
        returns (Opening memory o)
    {
        bool deterministic = t.safety == IChainScheduler.SafetyClass.Deterministic;
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

    function _range(IChainScheduler.Round round, IChainScheduler.JobTerms memory t)
        internal
        pure
        returns (uint256 first, uint256 count)
    {
        if (round == IChainScheduler.Round.Main) return (0, t.k);
        if (round == IChainScheduler.Round.Audit) return (t.k, 1);
        return (uint256(t.k) + 1, t.verifiers);
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
    /// @notice The coverage test did not reach an outcome.
    error MarketInvariantsNotReached(string outcome);

    uint40 internal constant UNBONDING_DELAY = 1 hours;

    ChainScheduler internal market;
    MarketHandler internal handler;

    function setUp() public {
        VM.warp(1_700_000_000);
        market = new ChainScheduler(UNBONDING_DELAY);
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

    /// @notice All four market invariants (see the contract notice), in one campaign: forge
    /// runs a separate campaign per invariant function, so one function checks them all
    /// after every call at a quarter of the cost.
    function invariant_marketLedger() public view {
        _checkMarket();
    }

    /// @notice The handler is not vacuous: a fixed sequence of 600 calls reaches every
    /// outcome (finalized, failed, cancelled, challenged, audited, escalated, slashed,
    /// bids withdrawn, stake unstaked), with the invariants checked after every call.
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
        _reached("jobs finalized", handler.ended(IChainScheduler.JobStatus.Finalized));
        _reached("jobs failed", handler.ended(IChainScheduler.JobStatus.Failed));
        _reached("jobs cancelled", handler.ended(IChainScheduler.JobStatus.Cancelled));
        _reached("steps in an audit round", handler.roundsSeen(IChainScheduler.Round.Audit));
        _reached("steps in a verify round", handler.roundsSeen(IChainScheduler.Round.Verify));
        _reached("slots slashed", handler.slashedSlots());
        _reached("bids", handler.done(MarketHandler.Action.Bid));
        _reached("bids withdrawn", handler.done(MarketHandler.Action.WithdrawBid));
        _reached("biddings closed", handler.done(MarketHandler.Action.CloseBidding));
        _reached("commits", handler.done(MarketHandler.Action.Commit));
        _reached("reveals", handler.done(MarketHandler.Action.Reveal));
        _reached("timeouts", handler.done(MarketHandler.Action.Timeout));
        _reached("challenges", handler.done(MarketHandler.Action.Challenge));
        _reached("finalizes", handler.done(MarketHandler.Action.Finalize));
        _reached("withdrawals", handler.done(MarketHandler.Action.Withdraw));
        _reached("unstakes", handler.done(MarketHandler.Action.Unstake));
    }

    /// @notice withdraw() pays nothing to an account without credit (expectRevert demo).
    function test_withdrawRefusesAnAccountWithoutCredit() public {
        VM.expectRevert(
            abi.encodeWithSelector(IChainScheduler.ChainSchedulerNothingToWithdraw.selector, address(this))
        );
        market.withdraw();
    }

    function _checkMarket() internal view {
        _noViolation("withdrawalsAboveCredit", handler.withdrawalsAboveCredit());
        _noViolation("withdrawalsBelowCredit", handler.withdrawalsBelowCredit());
        _noViolation("forgedRevealsAccepted", handler.forgedRevealsAccepted());
        _noViolation("finishedJobsChanged", handler.finishedJobsChanged());
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
    function _stakes(address[] memory providers, uint256[] memory liveCollateral)
        internal
        view
        returns (uint256 total)
    {
        for (uint256 i = 0; i < providers.length; ++i) {
            IChainScheduler.Provider memory p = market.getProvider(providers[i]);
            total += uint256(p.free) + p.locked;
            if (p.locked != liveCollateral[i]) {
                revert MarketInvariantsLockedStakeMismatch(providers[i], p.locked, liveCollateral[i]);
            }
        }
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
        (uint256 escrow, uint96 collateral, uint8 slots, bytes32 finishedDigest) = handler.book(jobId);
        bool finished = isFinished(market.getJob(jobId).status);
        if (finished) {
            _checkFinished(jobId, slots, finishedDigest);
        } else {
            held = escrow + market.slashPoolOf(jobId) + market.challengeBondOf(jobId);
        }
        for (uint256 s = 0; s < slots; ++s) {
            (IChainScheduler.Slot memory slot,) = market.getSlot(jobId, uint8(s));
            if (!holdsCollateral(slot.state)) continue;
            if (finished) revert MarketInvariantsCollateralInFinishedJob(jobId, uint8(s));
            for (uint256 i = 0; i < providers.length; ++i) {
                if (providers[i] == slot.provider) liveCollateral[i] += collateral;
            }
        }
    }

    /// @dev A finished job holds no money and has not changed since it finished.
    function _checkFinished(uint256 jobId, uint8 slots, bytes32 finishedDigest) internal view {
        uint256 pool = market.slashPoolOf(jobId);
        uint256 bond = market.challengeBondOf(jobId);
        if (pool != 0 || bond != 0) revert MarketInvariantsMoneyInFinishedJob(jobId, pool, bond);
        if (finishedDigest != 0 && finishedDigest != finishedState(market, jobId, slots)) {
            revert MarketInvariantsFinishedJobChanged(jobId);
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
