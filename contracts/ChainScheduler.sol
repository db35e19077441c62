// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IChainScheduler} from "./IChainScheduler.sol";

/// @title ChainScheduler
/// @notice The verifiable compute market. See `IChainScheduler` for the API and
/// DESIGN.md ("The contract") for the protocol.
/// @dev Money rules, in one place:
///  - `postJob` takes escrow = (k + audit slot + verifiers) × maxUnits × maxPrice, the most
///    the job can ever pay. Nothing is paid before `finalize`; the unspent rest goes back
///    to the client then (or all of it on failure or cancellation).
///  - A bid locks `collateral` from the provider's free stake. Settlement unlocks it
///    (winner or blameless), or slashes it into the job's slash pool (missed commit,
///    missed reveal, a result other than the accepted one).
///  - The slash pool goes to the injured parties: on success split equally between the
///    client and each paid provider (the client takes the rounding dust); on failure all
///    to the client. Nothing ever goes to an admin; there is none.
///  - Lifecycle functions only credit `_credits`; `withdraw()` is the one place that
///    sends ether (checks-effects-interactions plus a reentrancy guard).
/// Slot indexes: main replicas 0..k-1, the audit slot k, verifier slots k+1..k+verifiers.
contract ChainScheduler is IChainScheduler {
    uint256 private constant MAX_K = 16;
    uint256 private constant MAX_VERIFIERS = 15;
    uint256 private constant MAX_PARENTS = 8;
    uint256 private constant BPS = 10_000;

    uint8 private constant FLAG_AUDIT_DRAWN = 1;
    uint8 private constant FLAG_AUDIT_OPENED = 2;
    uint8 private constant FLAG_VERIFY_OPENED = 4;
    uint8 private constant FLAG_CHALLENGED = 8;
    /// @dev Bits 4-5 of `flags` count the times a main slot was reopened after a missed commit.
    uint8 private constant REOPEN_SHIFT = 4;
    uint8 private constant REOPEN_MASK = 3;
    /// @dev Reopenings per job. A griefer who bids and never commits costs the job one commit
    /// window each time; after this many the job goes on with what was committed, or fails
    /// with the griefers' collateral in the client's refund.
    uint8 private constant MAX_REOPENS = 2;
    /// @dev Bit 6 of `flags`: the audit decision waits for a draw (main commits all in).
    uint8 private constant FLAG_DRAW_PENDING = 64;
    /// @notice Capability bit of providers that opted in to be drawn as auditors and verifiers.
    uint32 public constant VERIFIER = uint32(1) << 31;
    /// @dev Candidates one seat's draw looks at before it gives up until the next draw. Each
    /// refused candidate leaves the draw's sample space, so with at most this many ineligible
    /// pool members a seat is always filled when anyone eligible exists.
    uint256 private constant MAX_DRAW_TRIES = 16;


    /// @dev What a winner gets besides its pay, at settlement (memory only).
    struct Bonus {
        uint256 poolShare;
        uint256 bondShare;
        bool audited;
    }

    /// @dev A client's challenge: bond 96 | original winner slot 8 (one slot).
    struct Challenge {
        uint96 bond;
        uint8 originalWinner;
    }

    /// @notice Seconds between `beginUnbonding` and the first allowed `unstake`.
    uint40 public immutable unbondingDelay;

    /// @notice Number of jobs posted; job ids run from 1 to `jobCount`.
    uint256 public jobCount;

    mapping(uint256 jobId => Job) private _jobs;
    mapping(uint256 jobId => mapping(uint256 slot => Slot)) private _slots;
    /// @dev Per slot: the commitment until revealed, then bytes24 result digest | uint64 usage.
    mapping(uint256 jobId => mapping(uint256 slot => bytes32)) private _sealed;
    mapping(address provider => Provider) private _providers;
    /// @dev Credit plus one once an account has ever been credited: withdrawing leaves
    /// the slot at 1 instead of 0, so the next credit is a 5,000-gas update rather than
    /// a 22,100-gas new slot. Read and written only through `_credit` and `creditOf`.
    mapping(address account => uint256) private _credits;
    mapping(uint256 jobId => uint256) private _slashPool;
    mapping(uint256 jobId => Challenge) private _challenges;
    /// @dev The verifier pool: a Fenwick (binary indexed) tree over members' weights, so that
    /// a weight update and a weighted draw each cost O(log n) in the number of members.
    /// `_tree[i]` sums the weights of leaves (i - lowbit(i), i]; `_members[i]` is leaf i's provider.
    mapping(uint256 node => uint256) private _tree;
    mapping(uint256 leaf => address) private _members;
    /// @dev Leaves in use and the tree's capacity (a power of two, doubled as members join).
    uint128 private _poolSize;
    uint128 private _poolCap;
    /// @dev The block whose hash a job's pending draw uses (see `DrawPending`).
    mapping(uint256 jobId => uint256) private _drawBlock;
    /// @dev EIP-1153 transient storage: the guard costs 200 gas instead of two SSTOREs.
    bool private transient _entered;

    /// @param unbondingDelay_ Seconds a provider waits between `beginUnbonding` and `unstake`.
    constructor(uint40 unbondingDelay_) {
        unbondingDelay = unbondingDelay_;
    }

    modifier nonReentrant() {
        if (_entered) revert ChainSchedulerReentrantCall();
        _entered = true;
        _;
        _entered = false;
    }

    // =============================================================== providers

    /// @inheritdoc IChainScheduler
    function register(uint32 capabilities) external payable {
        Provider storage p = _providers[msg.sender];
        if (p.registered) revert ChainSchedulerAlreadyRegistered(msg.sender);
        if (msg.value == 0) revert ChainSchedulerZeroAmount();
        p.registered = true;
        p.capabilities = capabilities;
        p.free = _toUint96(msg.value);
        _syncPool(msg.sender, p);
        emit ProviderRegistered(msg.sender, capabilities, msg.value);
    }

    /// @inheritdoc IChainScheduler
    function addStake() external payable {
        Provider storage p = _registered(msg.sender);
        if (msg.value == 0) revert ChainSchedulerZeroAmount();
        // Free and locked stake together must fit 96 bits: unlocking moves locked to free, and an
        // unlock that overflowed would freeze every job the provider is in.
        p.free = _toUint96(uint256(p.free) + p.locked + msg.value) - p.locked;
        p.unbondingAt = 0;
        _syncPool(msg.sender, p);
        emit StakeAdded(msg.sender, msg.value, p.free);
    }

    /// @inheritdoc IChainScheduler
    function setCapabilities(uint32 capabilities) external {
        Provider storage p = _registered(msg.sender);
        p.capabilities = capabilities;
        _syncPool(msg.sender, p);
        emit CapabilitiesChanged(msg.sender, capabilities);
    }

    /// @inheritdoc IChainScheduler
    function beginUnbonding() external {
        Provider storage p = _registered(msg.sender);
        uint40 unlockAt = uint40(block.timestamp) + unbondingDelay;
        p.unbondingAt = unlockAt;
        _syncPool(msg.sender, p);
        emit UnbondingStarted(msg.sender, unlockAt);
    }

    /// @inheritdoc IChainScheduler
    function unstake(uint96 amount) external {
        Provider storage p = _registered(msg.sender);
        if (amount == 0) revert ChainSchedulerZeroAmount();
        if (p.unbondingAt == 0 || block.timestamp < p.unbondingAt || p.locked != 0) {
            revert ChainSchedulerStakeLocked(msg.sender, p.unbondingAt, p.locked);
        }
        if (amount > p.free) revert ChainSchedulerInsufficientStake(msg.sender, amount, p.free);
        p.free -= amount;
        _credit(msg.sender, amount);
        emit Unstaked(msg.sender, amount);
    }

    // ==================================================================== jobs

    /// @inheritdoc IChainScheduler
    function postJob(string calldata specCid, JobTerms calldata terms) external payable returns (uint256 jobId) {
        _validateTerms(specCid, terms);
        uint256 escrow = _escrow(terms);
        if (msg.value != escrow) revert ChainSchedulerWrongEscrow(escrow, msg.value);
        jobId = ++jobCount;
        for (uint256 i = 0; i < terms.parents.length; ++i) {
            uint64 parent = terms.parents[i];
            if (parent == 0 || parent >= jobId) revert ChainSchedulerUnknownParent(parent);
        }
        _jobs[jobId] = Job({
            termsDigest: _digest(terms),
            status: JobStatus.Open,
            round: Round.Main,
            filled: 0,
            committed: 0,
            revealed: 0,
            winner: 0,
            flags: 0,
            deadline: _after(terms.fillTimeout)
        });
        emit JobPosted(jobId, msg.sender, specCid, terms, escrow);
    }

    /// @inheritdoc IChainScheduler
    function bid(uint256 jobId, JobTerms calldata terms, uint64 price) external {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Open);
        _requireBefore(jobId, job.deadline);
        if (price > terms.maxPrice) revert ChainSchedulerPriceTooHigh(price, terms.maxPrice);
        // Whoever opens a verification round could otherwise fill it with its own accounts.
        if (job.round != Round.Main) revert ChainSchedulerDrawnRound(jobId);
        _requireParentsFinalized(jobId, terms);
        Provider storage p = _eligible(msg.sender, terms);

        (uint256 first, uint256 count) = _range(job.round, terms);
        // A provider that missed its commit cannot take its reopened slot back.
        _requireFresh(jobId, msg.sender, first + count);
        bool windowOpen = _bidWindowOpen(job, terms);
        uint256 index;
        if (job.filled < count) {
            index = _firstEmpty(jobId, first, count);
            job.filled += 1;
        } else {
            // Full during the bid window: a cheaper bid displaces the dearest (O(k)).
            uint64 dearest;
            (index, dearest) = _dearest(jobId, first, count);
            if (!windowOpen || price >= dearest) revert ChainSchedulerBidNotCompetitive(price, dearest);
            Slot storage displaced = _slots[jobId][index];
            address loser = displaced.provider;
            _unlock(_providers[loser], terms.collateral);
            emit BidDisplaced(jobId, uint8(index), loser);
        }
        p.free -= terms.collateral;
        p.locked += terms.collateral;
        _slots[jobId][index] = Slot({provider: msg.sender, price: price, state: SlotState.Assigned});
        emit SlotAssigned(jobId, job.round, uint8(index), msg.sender, price);
        if (job.filled == count && !windowOpen) _closeBidding(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function withdrawBid(uint256 jobId, JobTerms calldata terms, uint8 slot) external {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Open);
        (, uint256 count) = _range(job.round, terms);
        if (job.round != Round.Main || slot >= count || job.filled == count || _reopens(job) != 0) {
            revert ChainSchedulerBidFinal(jobId, slot);
        }
        _heldSlot(jobId, slot, SlotState.Assigned);
        delete _slots[jobId][slot];
        job.filled -= 1;
        _unlock(_providers[msg.sender], terms.collateral);
        emit BidWithdrawn(jobId, slot, msg.sender);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function draw(uint256 jobId, JobTerms calldata terms) external {
        Job memory job = _load(jobId, terms);
        bool auditDecision = job.status == JobStatus.Running && job.flags & FLAG_DRAW_PENDING != 0;
        bool seats = job.status == JobStatus.Open && job.round != Round.Main;
        if (!auditDecision && !seats) revert ChainSchedulerNoDraw(jobId);
        // Past the fill deadline an unfilled round is `timeout`'s to end.
        if (seats) _requireBefore(jobId, job.deadline);
        _draw(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function closeBidding(uint256 jobId, JobTerms calldata terms) external {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Open);
        if (_bidWindowOpen(job, terms)) revert ChainSchedulerBidWindowOpen(jobId, _bidWindowEnd(job, terms));
        (, uint256 count) = _range(job.round, terms);
        if (job.filled < count) revert ChainSchedulerSlotsNotFilled(jobId, job.filled, uint8(count));
        _closeBidding(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function commit(uint256 jobId, JobTerms calldata terms, uint8 slot, bytes32 commitment) external {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Running);
        _requireBefore(jobId, job.deadline);
        Slot storage s = _heldSlot(jobId, slot, SlotState.Assigned);
        s.state = SlotState.Committed;
        _sealed[jobId][slot] = commitment;
        job.committed += 1;
        emit ResultCommitted(jobId, slot, msg.sender);
        (, uint256 count) = _range(job.round, terms);
        // The audit round has one slot and follows the main commits: its commit closes it.
        if (job.round == Round.Audit || job.committed == count) _closeCommits(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function reveal(
        uint256 jobId,
        JobTerms calldata terms,
        uint8 slot,
        string calldata resultCid,
        uint64 usage,
        bytes32 salt
    ) external {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Revealing);
        _requireBefore(jobId, job.deadline);
        Slot storage s = _heldSlot(jobId, slot, SlotState.Committed);
        // The commitment binds job, provider, result and usage: another provider's
        // commitment or a different result opens nothing.
        bytes32 opened = keccak256(abi.encode(jobId, msg.sender, resultCid, usage, salt));
        if (opened != _sealed[jobId][slot]) revert ChainSchedulerCommitmentMismatch(jobId, slot);
        s.state = SlotState.Revealed;
        _sealed[jobId][slot] = _resultKey(resultCid, usage);
        job.revealed += 1;
        emit ResultRevealed(jobId, slot, msg.sender, resultCid, usage);
        if (job.revealed == job.committed) _tally(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function timeout(uint256 jobId, JobTerms calldata terms) external {
        Job memory job = _load(jobId, terms);
        JobStatus status = job.status;
        if (status != JobStatus.Open && status != JobStatus.Running && status != JobStatus.Revealing) {
            revert ChainSchedulerWrongStatus(jobId, JobStatus.Running, status);
        }
        _requireAfter(jobId, job.deadline);
        if (job.flags & FLAG_DRAW_PENDING != 0) _draw(jobId, job, terms);
        else if (status == JobStatus.Open) _timeoutFill(jobId, job, terms);
        else if (status == JobStatus.Running) _timeoutCommits(jobId, job, terms);
        else _timeoutReveals(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function finalize(uint256 jobId, JobTerms calldata terms) external {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Succeeded);
        _requireAfter(jobId, job.deadline);
        _settle(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function cancel(uint256 jobId, JobTerms calldata terms) external {
        Job memory job = _load(jobId, terms);
        if (msg.sender != terms.client) revert ChainSchedulerNotClient(jobId, msg.sender);
        _cancel(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function cancelOrphan(uint256 jobId, JobTerms calldata terms, uint256 parentIndex) external {
        Job memory job = _load(jobId, terms);
        uint64 parent = terms.parents[parentIndex];
        JobStatus parentStatus = _jobs[parent].status;
        if (parentStatus != JobStatus.Failed && parentStatus != JobStatus.Cancelled) {
            revert ChainSchedulerParentNotFailed(jobId, parent, parentStatus);
        }
        _cancel(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function challenge(uint256 jobId, JobTerms calldata terms) external payable {
        Job memory job = _load(jobId, terms);
        if (msg.sender != terms.client) revert ChainSchedulerNotClient(jobId, msg.sender);
        _requireStatus(jobId, job, JobStatus.Succeeded);
        _requireBefore(jobId, job.deadline);
        if (terms.verifiers == 0 || job.flags & FLAG_VERIFY_OPENED != 0) revert ChainSchedulerNotChallengeable(jobId);
        if (msg.value != terms.collateral) revert ChainSchedulerWrongBond(terms.collateral, msg.value);
        _challenges[jobId] = Challenge({bond: terms.collateral, originalWinner: job.winner});
        job.flags |= FLAG_CHALLENGED;
        emit JobChallenged(jobId, msg.value);
        _openRound(jobId, job, terms, Round.Verify);
        _jobs[jobId] = job;
    }

    /// @inheritdoc IChainScheduler
    function withdraw() external nonReentrant {
        uint256 stored = _credits[msg.sender];
        if (stored <= 1) revert ChainSchedulerNothingToWithdraw(msg.sender);
        uint256 amount = stored - 1;
        _credits[msg.sender] = 1;
        emit Withdrawn(msg.sender, amount);
        // slither-disable-next-line low-level-calls
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert ChainSchedulerTransferFailed(msg.sender, amount);
    }

    // =================================================================== views

    /// @inheritdoc IChainScheduler
    function escrowFor(JobTerms calldata terms) external pure returns (uint256) {
        return _escrow(terms);
    }

    /// @inheritdoc IChainScheduler
    function getJob(uint256 jobId) external view returns (Job memory) {
        return _jobs[jobId];
    }

    /// @inheritdoc IChainScheduler
    function getSlot(uint256 jobId, uint8 slot) external view returns (Slot memory, bytes32) {
        return (_slots[jobId][slot], _sealed[jobId][slot]);
    }

    /// @inheritdoc IChainScheduler
    function getProvider(address provider) external view returns (Provider memory) {
        return _providers[provider];
    }

    /// @inheritdoc IChainScheduler
    function creditOf(address account) external view returns (uint256) {
        uint256 stored = _credits[account];
        return stored == 0 ? 0 : stored - 1;
    }

    /// @notice Slashed collateral waiting to be shared out when the job ends.
    /// @param jobId The job.
    /// @return The pool in wei.
    function slashPoolOf(uint256 jobId) external view returns (uint256) {
        return _slashPool[jobId];
    }

    /// @notice The verifier pool: members (leaves used) and their total weight.
    /// @return members Leaves in use (members that left keep a leaf of weight 0).
    /// @return weight Sum of the members' weights.
    function poolOf() external view returns (uint256 members, uint256 weight) {
        members = _poolSize;
        weight = _poolCap == 0 ? 0 : _tree[_poolCap];
    }

    /// @notice The block whose hash a job's pending draw uses (0 if it never had one).
    /// @param jobId The job.
    /// @return The block number.
    function drawBlockOf(uint256 jobId) external view returns (uint256) {
        return _drawBlock[jobId];
    }

    /// @notice The bond of an open challenge (0 when none).
    /// @param jobId The job.
    /// @return The bond in wei.
    function challengeBondOf(uint256 jobId) external view returns (uint256) {
        return _challenges[jobId].bond;
    }

    // ========================================================= phase machinery

    function _closeBidding(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        job.status = JobStatus.Running;
        job.revealed = 0;
        job.deadline = _after(terms.execTimeout);
        emit BiddingClosed(jobId, job.round, _seed(jobId, job), job.deadline);
    }

    function _closeCommits(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        if (job.round == Round.Main && terms.auditBps != 0 && job.flags & FLAG_AUDIT_OPENED == 0) {
            // The audit decision uses the hash of this block, which does not exist while the
            // last commitment runs: no committer can know, or retry until, it is not audited.
            job.flags |= FLAG_DRAW_PENDING;
            job.deadline = _after(terms.fillTimeout);
            _armDraw(jobId, Round.Audit);
            return;
        }
        _beginReveals(jobId, job, terms);
    }

    function _beginReveals(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        job.status = JobStatus.Revealing;
        job.deadline = _after(terms.revealWindow);
        emit CommitsClosed(jobId, job.round, job.flags & FLAG_AUDIT_DRAWN != 0, job.deadline);
    }

    function _tally(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        bool deterministic = terms.safety == SafetyClass.Deterministic;
        if (job.round != Round.Verify) {
            // Main replicas (and the auditor, if one ran) have revealed together.
            (bool found, uint256 winner) = _quorum(jobId, 0, terms.k, terms.m, deterministic);
            if (!found) {
                if (terms.verifiers != 0 && job.flags & FLAG_VERIFY_OPENED == 0) {
                    _openRound(jobId, job, terms, Round.Verify);
                } else {
                    _fail(jobId, job, terms, FailReason.NoQuorum);
                }
                return;
            }
            job.winner = uint8(winner);
            uint256 auditor = terms.k;
            if (
                job.flags & FLAG_AUDIT_OPENED != 0 && _slots[jobId][auditor].state == SlotState.Revealed
                    && !_matches(_sealed[jobId][auditor], _sealed[jobId][winner], deterministic)
            ) {
                // The auditor disagrees with the quorum: a majority of fresh replicas decides.
                _openRound(jobId, job, terms, Round.Verify);
            } else {
                _succeed(jobId, job, terms, terms.challengeWindow);
            }
            return;
        }
        (uint256 first, uint256 count) = _range(Round.Verify, terms);
        (bool decided, uint256 verdict) = _quorum(jobId, first, count, count / 2 + 1, deterministic);
        bool challenged = job.flags & FLAG_CHALLENGED != 0;
        if (decided) {
            job.winner = uint8(verdict);
            // A result decided by fresh verifiers after a challenge is final at once.
            _succeed(jobId, job, terms, challenged ? 0 : terms.challengeWindow);
        } else if (challenged) {
            _voidChallenge(jobId, job, terms);
        } else {
            _fail(jobId, job, terms, FailReason.NoQuorum);
        }
    }

    function _timeoutFill(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        (uint256 first, uint256 count) = _range(job.round, terms);
        if (job.filled == count) {
            // Window mode: every slot is held and the window is long over.
            _closeBidding(jobId, job, terms);
        } else if (job.round == Round.Main) {
            _fail(jobId, job, terms, FailReason.NotFilled);
        } else if (job.round == Round.Audit) {
            // Nobody took the audit: the main replicas reveal unaudited.
            _beginReveals(jobId, job, terms);
        } else {
            _releaseRange(jobId, first, count, terms.collateral);
            if (job.flags & FLAG_CHALLENGED != 0) _voidChallenge(jobId, job, terms);
            else _fail(jobId, job, terms, FailReason.NoQuorum);
        }
    }

    function _timeoutCommits(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        (uint256 first, uint256 count) = _range(job.round, terms);
        // Reassignment (seeds 002/003): a main slot that missed its commit is reopened
        // for a fresh provider unless the job is destructive (at most once) or has been
        // reopened MAX_REOPENS times already.
        // A drawn auditor or verifier that missed its commit is replaced by a new draw the same
        // way: otherwise a main provider's own account, drawn as its auditor, could skip the audit.
        bool reopen = (job.round != Round.Main || terms.safety != SafetyClass.Destructive) && _reopens(job) < MAX_REOPENS;
        bool reopened = false;
        for (uint256 i = first; i < first + count; ++i) {
            if (_slots[jobId][i].state != SlotState.Assigned) continue;
            _slash(jobId, i, terms.collateral, reopen);
            if (reopen) {
                // The Slashed record stays until a fresh provider takes the slot, so the
                // provider that missed its commit cannot take it back (_requireFresh).
                job.filled -= 1;
                reopened = true;
            }
        }
        if (reopened) {
            job.flags += uint8(1) << REOPEN_SHIFT;
            job.status = JobStatus.Open;
            job.deadline = _after(terms.fillTimeout);
            if (job.round != Round.Main) _armDraw(jobId, job.round);
        } else if (job.committed != 0) {
            // Includes an auditor that missed its commit: the main replicas reveal unaudited.
            _closeCommits(jobId, job, terms);
        } else if (job.round == Round.Verify && job.flags & FLAG_CHALLENGED != 0) {
            _voidChallenge(jobId, job, terms);
        } else {
            _fail(jobId, job, terms, FailReason.NoCommits);
        }
    }

    function _timeoutReveals(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        // Main and audit slots reveal together, so scan every slot opened so far.
        uint256 end = _usedEnd(job, terms);
        for (uint256 i = 0; i < end; ++i) {
            if (_slots[jobId][i].state == SlotState.Committed) _slash(jobId, i, terms.collateral, false);
        }
        _tally(jobId, job, terms);
    }

    function _openRound(uint256 jobId, Job memory job, JobTerms calldata terms, Round round) private {
        job.round = round;
        job.status = JobStatus.Open;
        job.filled = 0;
        if (round == Round.Verify) {
            // An audit keeps counting the main commitments: they are revealed together.
            job.committed = 0;
            job.revealed = 0;
        }
        job.flags |= round == Round.Audit ? FLAG_AUDIT_OPENED : FLAG_VERIFY_OPENED;
        job.deadline = _after(terms.fillTimeout);
        (, uint256 count) = _range(round, terms);
        emit RoundOpened(jobId, round, uint8(count), job.deadline);
        // The audit round is opened by the draw that also fills its seat.
        if (round == Round.Verify) _armDraw(jobId, round);
    }

    function _armDraw(uint256 jobId, Round round) private {
        _drawBlock[jobId] = block.number;
        emit DrawPending(jobId, round, block.number);
    }

    /// @dev Carry out a pending draw (see `draw`). The randomness is the hash of the block the
    /// draw was armed in: unknown to the transaction that armed it, fixed before anyone draws.
    function _draw(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        uint256 base = _drawBlock[jobId];
        if (block.number <= base) revert ChainSchedulerDrawTooEarly(jobId, base);
        bytes32 hash = blockhash(base);
        Round round = job.flags & FLAG_DRAW_PENDING != 0 ? Round.Audit : job.round;
        if (hash == 0) {
            // Older than 256 blocks: nobody drew in time, and a stale hash may be known to
            // whoever waited. Draw from a block that does not exist yet instead.
            _armDraw(jobId, round);
            return;
        }
        bytes32 random = keccak256(abi.encode(hash, jobId, job.flags));
        if (job.flags & FLAG_DRAW_PENDING != 0) {
            job.flags &= ~FLAG_DRAW_PENDING;
            if (uint256(keccak256(abi.encode(random, "audit"))) % BPS >= terms.auditBps) {
                _beginReveals(jobId, job, terms);
                return;
            }
            // The auditor runs and commits before anyone reveals, so it has nothing to copy;
            // the main commitments wait sealed until then. Its seat uses the same randomness.
            job.flags |= FLAG_AUDIT_DRAWN;
            emit CommitsClosed(jobId, Round.Main, true, 0);
            _openRound(jobId, job, terms, Round.Audit);
        }
        _fillSeats(jobId, job, terms, random);
    }

    /// @dev Fill the empty seats of the current (audit or verification) round by draw; close
    /// bidding when all are held, or arm another draw for the rest.
    function _fillSeats(uint256 jobId, Job memory job, JobTerms calldata terms, bytes32 random) private {
        (uint256 first, uint256 count) = _range(job.round, terms);
        uint256 end = first + count;
        for (uint256 i = first; i < end; ++i) {
            SlotState state = _slots[jobId][i].state;
            if (state != SlotState.Empty && state != SlotState.Slashed) continue;
            address drawn = _drawSeat(jobId, terms, keccak256(abi.encode(random, i)), end);
            if (drawn == address(0)) break;
            Provider storage p = _providers[drawn];
            p.free -= terms.collateral;
            p.locked += terms.collateral;
            _slots[jobId][i] = Slot({provider: drawn, price: terms.maxPrice, state: SlotState.Assigned});
            job.filled += 1;
            emit SlotAssigned(jobId, job.round, uint8(i), drawn, terms.maxPrice);
        }
        if (job.filled == count) _closeBidding(jobId, job, terms);
        else _armDraw(jobId, job.round);
    }

    /// @dev Pool members a seat's draw refused, as intervals of the weight line sorted by leaf.
    struct Refused {
        uint256[] leaf;
        uint256[] start;
        uint256[] weight;
        uint256 count;
        uint256 total;
    }

    /// @dev One seat: sample the pool by weight until a member that may verify this job turns
    /// up. Each refused member is taken out of the sample space (its interval of the weight
    /// line is skipped), so the draw is a weighted draw without replacement.
    function _drawSeat(uint256 jobId, JobTerms calldata terms, bytes32 random, uint256 end)
        private
        view
        returns (address)
    {
        uint256 total = _poolCap == 0 ? 0 : _tree[_poolCap];
        Refused memory refused = Refused({
            leaf: new uint256[](MAX_DRAW_TRIES),
            start: new uint256[](MAX_DRAW_TRIES),
            weight: new uint256[](MAX_DRAW_TRIES),
            count: 0,
            total: 0
        });
        for (uint256 t = 0; t < MAX_DRAW_TRIES && total > refused.total; ++t) {
            uint256 r = uint256(keccak256(abi.encode(random, t))) % (total - refused.total);
            // Step over each refused interval that starts at or before r.
            for (uint256 e = 0; e < refused.count && r >= refused.start[e]; ++e) {
                r += refused.weight[e];
            }
            uint256 index = _treeFind(r);
            address candidate = _members[index];
            if (_mayVerify(jobId, terms, candidate, end)) return candidate;
            _refuse(refused, index, _providers[candidate].poolWeight);
        }
        return address(0);
    }

    function _refuse(Refused memory refused, uint256 index, uint256 weight) private view {
        uint256 start = _treePrefix(index - 1);
        uint256 at = refused.count;
        while (at > 0 && refused.leaf[at - 1] > index) {
            refused.leaf[at] = refused.leaf[at - 1];
            refused.start[at] = refused.start[at - 1];
            refused.weight[at] = refused.weight[at - 1];
            --at;
        }
        refused.leaf[at] = index;
        refused.start[at] = start;
        refused.weight[at] = weight;
        refused.count += 1;
        refused.total += weight;
    }

    /// @dev Whether a drawn pool member may take a seat of this job: not the client, holding
    /// or having held no slot of it, able to run it, and with the free stake for its collateral.
    function _mayVerify(uint256 jobId, JobTerms calldata terms, address candidate, uint256 end)
        private
        view
        returns (bool)
    {
        if (candidate == terms.client) return false;
        Provider storage p = _providers[candidate];
        uint32 required = (uint32(1) << uint8(terms.executor)) | terms.capabilities;
        if (p.capabilities & required != required || p.free < terms.collateral) return false;
        for (uint256 i = 0; i < end; ++i) {
            if (_slots[jobId][i].provider == candidate) return false;
        }
        return true;
    }

    function _succeed(uint256 jobId, Job memory job, JobTerms calldata terms, uint32 challengeWindow) private {
        job.status = JobStatus.Succeeded;
        job.deadline = _after(challengeWindow);
        emit JobSucceeded(jobId, job.winner, _sealed[jobId][job.winner], job.deadline);
        // Without a challenge window nothing can change the result any more: settle in this
        // transaction instead of asking a keeper for a separate finalize.
        if (terms.challengeWindow == 0) _settle(jobId, job, terms);
    }

    /// @dev A challenge nobody could resolve (no verifiers came, or they disagreed): the
    /// original result stands and is final; the client gets its bond back.
    function _voidChallenge(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        Challenge memory c = _challenges[jobId];
        delete _challenges[jobId];
        job.flags &= ~FLAG_CHALLENGED;
        job.winner = c.originalWinner;
        _credit(terms.client, c.bond);
        _succeed(jobId, job, terms, 0);
    }

    // ============================================================== settlement

    /// @dev Pay the providers whose result matches the accepted one, slash those whose
    /// result differs, refund the unspent escrow and share out the slash pool.
    function _settle(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        bytes32 accepted = _sealed[jobId][job.winner];
        // An audit counts for the main replicas only if the auditor actually revealed.
        Bonus memory bonus = Bonus({
            poolShare: 0,
            bondShare: 0,
            audited: job.flags & FLAG_AUDIT_OPENED != 0 && _slots[jobId][terms.k].state == SlotState.Revealed
        });
        (uint256[] memory winners, uint256 n, uint64 units) = _judge(jobId, job, terms, accepted);
        // The slash pool is shared by the client and each winner; the client keeps the dust.
        uint256 pool = _takeSlashPool(jobId);
        bonus.poolShare = pool / (n + 1);
        bool upheld;
        (bonus.bondShare, upheld) = _settleChallenge(jobId, job, terms, accepted, winners, n);
        uint256 paid = _payWinners(jobId, terms, winners, n, units, bonus);
        uint256 refund = _escrow(terms) - paid;
        _credit(terms.client, refund + pool - bonus.poolShare * n);
        job.status = JobStatus.Finalized;
        emit JobFinalized(jobId, job.winner, paid, refund, upheld);
    }

    /// @dev Sort the revealed slots into winners (same result as `accepted`) and losers
    /// (slashed now), and work out the units each winner is paid for.
    function _judge(uint256 jobId, Job memory job, JobTerms calldata terms, bytes32 accepted)
        private
        returns (uint256[] memory winners, uint256 n, uint64 units)
    {
        bool deterministic = terms.safety == SafetyClass.Deterministic;
        uint256 end = _usedEnd(job, terms);
        winners = new uint256[](end);
        uint64[] memory usages = new uint64[](end);
        for (uint256 i = 0; i < end; ++i) {
            if (_slots[jobId][i].state != SlotState.Revealed) continue;
            bytes32 key = _sealed[jobId][i];
            if (_matches(key, accepted, deterministic)) {
                winners[n] = i;
                usages[n] = uint64(uint256(key));
                ++n;
            } else {
                _slash(jobId, i, terms.collateral, false);
            }
        }
        // Deterministic winners agree on usage; otherwise all are paid the median.
        units = deterministic ? uint64(uint256(accepted)) : _lowerMedian(usages, n);
        // The floor pays a replica's fixed costs even for a failure result of no work.
        if (units < terms.minUnits) units = terms.minUnits;
        if (units > terms.maxUnits) units = terms.maxUnits;
    }

    /// @dev Credit each winner `price × units` plus its pool share (and, for the providers
    /// a rejected challenge accused, its bond share); release its collateral and count its
    /// success. Returns the total paid from escrow.
    function _payWinners(
        uint256 jobId,
        JobTerms calldata terms,
        uint256[] memory winners,
        uint256 n,
        uint64 units,
        Bonus memory bonus
    ) private returns (uint256 paid) {
        for (uint256 w = 0; w < n; ++w) {
            uint256 i = winners[w];
            Slot storage s = _slots[jobId][i];
            address provider = s.provider;
            uint256 amount = uint256(s.price) * units;
            paid += amount;
            s.state = SlotState.Settled;
            Provider storage p = _providers[provider];
            _unlock(p, terms.collateral);
            p.succeeded += 1;
            if (bonus.audited && i < terms.k) p.audited += 1;
            _credit(provider, amount + bonus.poolShare + (i <= terms.k ? bonus.bondShare : 0));
            emit ProviderPaid(jobId, uint8(i), provider, amount, units);
        }
    }

    /// @dev Decide a challenge at settlement. Upheld (the accepted result changed): the
    /// bond goes back to the client. Rejected: the loser pays, the bond is shared by the
    /// providers it accused, the winners outside the verifier round (the client keeps
    /// the rounding dust). The original winner is among them, so there is at least one.
    function _settleChallenge(
        uint256 jobId,
        Job memory job,
        JobTerms calldata terms,
        bytes32 accepted,
        uint256[] memory winners,
        uint256 n
    ) private returns (uint256 bondShare, bool upheld) {
        if (job.flags & FLAG_CHALLENGED == 0) return (0, false);
        Challenge memory c = _challenges[jobId];
        delete _challenges[jobId];
        upheld = !_matches(_sealed[jobId][c.originalWinner], accepted, terms.safety == SafetyClass.Deterministic);
        if (upheld) {
            _credit(terms.client, c.bond);
            return (0, true);
        }
        uint256 accused = 0;
        for (uint256 w = 0; w < n; ++w) {
            if (winners[w] <= terms.k) ++accused;
        }
        // slither-disable-next-line divide-before-multiply (intended: the client takes the dust)
        bondShare = c.bond / accused;
        _credit(terms.client, c.bond - bondShare * accused);
    }

    function _fail(uint256 jobId, Job memory job, JobTerms calldata terms, FailReason reason) private {
        uint256 end = _usedEnd(job, terms);
        uint256 pool = _takeSlashPool(jobId);
        if (pool != 0) pool = _payRevealers(jobId, end, pool);
        // Nobody can be shown wrong without a quorum: live collateral is released unpaid.
        _releaseRange(jobId, 0, end, terms.collateral);
        uint256 refund = _escrow(terms) + pool;
        _credit(terms.client, refund);
        job.status = JobStatus.Failed;
        emit JobFailed(jobId, reason, refund);
    }

    /// @dev A job that failed after some replicas revealed: the collateral of those that missed
    /// a commit or a reveal goes to the ones that revealed, not to the client. Otherwise a client
    /// holding one slot of a k = m job through another account could withhold its reveal, read
    /// the honest replicas' result from their reveals, and be refunded the escrow plus its own
    /// collateral: the result for free. Returns what is left for the client (the rounding dust,
    /// or the whole pool when nobody revealed).
    function _payRevealers(uint256 jobId, uint256 end, uint256 pool) private returns (uint256 rest) {
        uint256 revealed = 0;
        for (uint256 i = 0; i < end; ++i) {
            if (_slots[jobId][i].state == SlotState.Revealed) ++revealed;
        }
        if (revealed == 0) return pool;
        uint256 share = pool / revealed;
        for (uint256 i = 0; i < end; ++i) {
            if (_slots[jobId][i].state == SlotState.Revealed) _credit(_slots[jobId][i].provider, share);
        }
        return pool - share * revealed;
    }

    function _cancel(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        _requireStatus(jobId, job, JobStatus.Open);
        // Cancellable while no provider can have started: nothing committed, and either no
        // slot held or only provisional bids inside a bid window.
        if (job.round != Round.Main || job.committed != 0 || (terms.bidWindow == 0 && job.filled != 0)) {
            revert ChainSchedulerNotCancellable(jobId);
        }
        _releaseRange(jobId, 0, terms.k, terms.collateral);
        uint256 refund = _escrow(terms) + _takeSlashPool(jobId);
        _credit(terms.client, refund);
        job.status = JobStatus.Cancelled;
        emit JobCancelled(jobId, refund);
    }

    /// @dev Unlock, unpaid, every slot in [first, first+count) still holding collateral.
    function _releaseRange(uint256 jobId, uint256 first, uint256 count, uint96 collateral) private {
        for (uint256 i = first; i < first + count; ++i) {
            Slot storage s = _slots[jobId][i];
            SlotState state = s.state;
            if (state == SlotState.Assigned || state == SlotState.Committed || state == SlotState.Revealed) {
                s.state = SlotState.Settled;
                _unlock(_providers[s.provider], collateral);
            }
        }
    }

    function _slash(uint256 jobId, uint256 index, uint96 collateral, bool reopened) private {
        Slot storage s = _slots[jobId][index];
        s.state = SlotState.Slashed;
        Provider storage p = _providers[s.provider];
        p.locked -= collateral;
        p.slashed += 1;
        _syncPool(s.provider, p);
        _slashPool[jobId] += collateral;
        emit SlotSlashed(jobId, uint8(index), s.provider, collateral, reopened);
    }

    function _takeSlashPool(uint256 jobId) private returns (uint256 pool) {
        pool = _slashPool[jobId];
        if (pool != 0) delete _slashPool[jobId];
    }

    function _credit(address account, uint256 amount) private {
        if (amount == 0) return;
        uint256 stored = _credits[account];
        _credits[account] = (stored == 0 ? 1 : stored) + amount;
    }

    function _unlock(Provider storage p, uint96 collateral) private {
        p.locked -= collateral;
        p.free += collateral;
    }

    // =========================================================== verifier pool

    /// @dev Bring the pool's weight for a provider in line with its record: its whole stake
    /// (free + locked, which bids and unlocks leave unchanged) while it has the VERIFIER bit
    /// and is not unbonding, else 0. Stake-weighted: an operator that splits its stake over
    /// many accounts has the same total weight.
    function _syncPool(address provider, Provider storage p) private {
        uint256 want = p.capabilities & VERIFIER != 0 && p.unbondingAt == 0 ? uint256(p.free) + p.locked : 0;
        uint256 have = p.poolWeight;
        if (want == have) return;
        uint256 index = p.poolIndex;
        if (index == 0) {
            index = _joinPool(provider);
            p.poolIndex = uint32(index);
        }
        if (want > have) _treeAdd(index, want - have, true);
        else _treeAdd(index, have - want, false);
        p.poolWeight = uint96(want);
    }

    /// @dev A new leaf. When the tree is full its capacity doubles: the new root covers every
    /// leaf, so it starts as the old root (the nodes in between cover only empty leaves).
    function _joinPool(address provider) private returns (uint256 index) {
        uint256 cap = _poolCap;
        index = uint256(_poolSize) + 1;
        if (index > cap) {
            uint256 grown = cap == 0 ? 1 : cap * 2;
            if (cap != 0) _tree[grown] = _tree[cap];
            _poolCap = uint128(grown);
        }
        _poolSize = uint128(index);
        _members[index] = provider;
    }

    function _treeAdd(uint256 index, uint256 delta, bool up) private {
        uint256 cap = _poolCap;
        for (uint256 i = index; i <= cap; i += i & (~i + 1)) {
            if (up) _tree[i] += delta;
            else _tree[i] -= delta;
        }
    }

    /// @dev Sum of the weights of leaves 1..index.
    function _treePrefix(uint256 index) private view returns (uint256 sum) {
        for (uint256 i = index; i > 0; i -= i & (~i + 1)) {
            sum += _tree[i];
        }
    }

    /// @dev The leaf whose interval of the weight line [0, total) holds r: the smallest index
    /// whose prefix sum exceeds r (r < total).
    function _treeFind(uint256 r) private view returns (uint256) {
        uint256 cap = _poolCap;
        uint256 pos = 0;
        for (uint256 step = cap; step > 0; step >>= 1) {
            uint256 next = pos + step;
            if (next <= cap) {
                uint256 node = _tree[next];
                if (node <= r) {
                    pos = next;
                    r -= node;
                }
            }
        }
        return pos + 1;
    }

    // ================================================================= helpers

    function _validateTerms(string calldata specCid, JobTerms calldata t) private view {
        if (t.client != msg.sender) revert ChainSchedulerBadTerm(7);
        bytes32 specDigest = keccak256(bytes(specCid));
        if (t.specDigest != specDigest) revert ChainSchedulerSpecMismatch(specDigest, t.specDigest);
        _validateReplication(t);
        if (t.maxPrice == 0) revert ChainSchedulerBadTerm(0);
        if (t.maxUnits == 0) revert ChainSchedulerBadTerm(1);
        if (t.minUnits > t.maxUnits) revert ChainSchedulerBadTerm(9);
        if (t.fillTimeout == 0) revert ChainSchedulerBadTerm(2);
        if (t.execTimeout == 0) revert ChainSchedulerBadTerm(3);
        if (t.revealWindow == 0) revert ChainSchedulerBadTerm(4);
        if (t.bidWindow >= t.fillTimeout) revert ChainSchedulerBadTerm(5);
        if (t.parents.length > MAX_PARENTS) revert ChainSchedulerBadTerm(8);
    }

    /// @dev Replication, verification and safety-class rules (seed 001).
    function _validateReplication(JobTerms calldata t) private pure {
        if (t.k == 0 || t.k > MAX_K || t.m > t.k || 2 * uint256(t.m) <= t.k) {
            revert ChainSchedulerBadReplication(t.k, t.m);
        }
        bool wasm = t.executor == Executor.Wasm;
        if (wasm != (t.safety == SafetyClass.Deterministic)) revert ChainSchedulerClassMismatch(t.executor, t.safety);
        if (t.safety == SafetyClass.Destructive && (t.k != 1 || t.verifiers != 0 || t.auditBps != 0)) {
            revert ChainSchedulerDestructiveReplicated(t.k, t.verifiers, t.auditBps);
        }
        if (t.auditBps > BPS || (t.auditBps != 0 && t.verifiers == 0)) revert ChainSchedulerBadAudit(t.auditBps, t.verifiers);
        if (t.verifiers > MAX_VERIFIERS) revert ChainSchedulerBadTerm(6);
        // Without collateral nobody can be slashed: replicas, audits and verifiers would check nothing.
        if (t.collateral == 0 && (t.k > 1 || t.verifiers != 0 || t.auditBps != 0)) revert ChainSchedulerBadTerm(10);
    }

    function _escrow(JobTerms calldata t) private pure returns (uint256) {
        uint256 slots = uint256(t.k) + (t.auditBps != 0 ? 1 : 0) + t.verifiers;
        return slots * t.maxUnits * t.maxPrice;
    }

    function _digest(JobTerms calldata terms) private pure returns (bytes20) {
        return bytes20(keccak256(abi.encode(terms)));
    }

    function _load(uint256 jobId, JobTerms calldata terms) private view returns (Job memory job) {
        job = _jobs[jobId];
        if (job.status == JobStatus.None) revert ChainSchedulerUnknownJob(jobId);
        bytes20 digest = _digest(terms);
        if (digest != job.termsDigest) revert ChainSchedulerTermsMismatch(jobId, job.termsDigest, digest);
    }

    function _requireStatus(uint256 jobId, Job memory job, JobStatus expected) private pure {
        if (job.status != expected) revert ChainSchedulerWrongStatus(jobId, expected, job.status);
    }

    function _requireBefore(uint256 jobId, uint40 deadline) private view {
        // Deadlines are in seconds and minutes; a proposer's few seconds of timestamp
        // drift cannot decide them in practice.
        if (block.timestamp >= deadline) revert ChainSchedulerDeadlinePassed(jobId, deadline, block.timestamp);
    }

    function _requireAfter(uint256 jobId, uint40 deadline) private view {
        if (block.timestamp < deadline) revert ChainSchedulerDeadlineNotReached(jobId, deadline, block.timestamp);
    }

    function _requireParentsFinalized(uint256 jobId, JobTerms calldata terms) private view {
        for (uint256 i = 0; i < terms.parents.length; ++i) {
            uint64 parent = terms.parents[i];
            JobStatus status = _jobs[parent].status;
            if (status != JobStatus.Finalized) revert ChainSchedulerParentNotFinalized(jobId, parent, status);
        }
    }

    function _registered(address account) private view returns (Provider storage p) {
        p = _providers[account];
        if (!p.registered) revert ChainSchedulerNotRegistered(account);
    }

    function _eligible(address account, JobTerms calldata terms) private view returns (Provider storage p) {
        p = _registered(account);
        if (p.unbondingAt != 0) revert ChainSchedulerUnbonding(account);
        uint32 required = (uint32(1) << uint8(terms.executor)) | terms.capabilities;
        if (p.capabilities & required != required) {
            revert ChainSchedulerMissingCapabilities(account, required, p.capabilities);
        }
        if (p.free < terms.collateral) revert ChainSchedulerInsufficientStake(account, terms.collateral, p.free);
    }

    function _requireFresh(uint256 jobId, address provider, uint256 end) private view {
        for (uint256 i = 0; i < end; ++i) {
            if (_slots[jobId][i].provider == provider) revert ChainSchedulerAlreadyInJob(jobId, provider);
        }
    }

    function _heldSlot(uint256 jobId, uint8 slot, SlotState expected) private view returns (Slot storage s) {
        s = _slots[jobId][slot];
        if (s.provider != msg.sender) revert ChainSchedulerNotSlotHolder(jobId, slot, msg.sender);
        if (s.state != expected) revert ChainSchedulerWrongSlotState(jobId, slot, expected, s.state);
    }

    function _firstEmpty(uint256 jobId, uint256 first, uint256 count) private view returns (uint256) {
        for (uint256 i = first; i < first + count; ++i) {
            SlotState state = _slots[jobId][i].state;
            if (state == SlotState.Empty || state == SlotState.Slashed) return i;
        }
        // Unreachable: callers check filled < count.
        revert ChainSchedulerSlotsNotFilled(jobId, uint8(count), uint8(count));
    }

    function _dearest(uint256 jobId, uint256 first, uint256 count) private view returns (uint256 index, uint64 price) {
        for (uint256 i = first; i < first + count; ++i) {
            uint64 p = _slots[jobId][i].price;
            if (p > price || i == first) (index, price) = (i, p);
        }
    }

    /// @dev Index of a revealed slot whose result at least `need` revealed slots share.
    function _quorum(uint256 jobId, uint256 first, uint256 count, uint256 need, bool deterministic)
        private
        view
        returns (bool, uint256)
    {
        bytes32[] memory keys = new bytes32[](count);
        bool[] memory live = new bool[](count);
        for (uint256 i = 0; i < count; ++i) {
            if (_slots[jobId][first + i].state == SlotState.Revealed) {
                live[i] = true;
                keys[i] = _sealed[jobId][first + i];
            }
        }
        for (uint256 i = 0; i < count; ++i) {
            if (!live[i]) continue;
            uint256 agree = 0;
            for (uint256 j = 0; j < count; ++j) {
                if (live[j] && _matches(keys[i], keys[j], deterministic)) ++agree;
            }
            if (agree >= need) return (true, first + i);
        }
        return (false, 0);
    }

    /// @dev Deterministic jobs must agree on result and usage; others on the result only.
    function _matches(bytes32 a, bytes32 b, bool deterministic) private pure returns (bool) {
        return deterministic ? a == b : (a >> 64) == (b >> 64);
    }

    function _resultKey(string calldata resultCid, uint64 usage) private pure returns (bytes32) {
        return bytes32(uint256(bytes32(bytes24(keccak256(bytes(resultCid))))) | usage);
    }

    /// @dev The lower median of the first n values (sorted in place); mirrored in Python.
    function _lowerMedian(uint64[] memory values, uint256 n) private pure returns (uint64) {
        for (uint256 i = 1; i < n; ++i) {
            uint64 v = values[i];
            uint256 j = i;
            while (j > 0 && values[j - 1] > v) {
                values[j] = values[j - 1];
                --j;
            }
            values[j] = v;
        }
        return values[(n - 1) / 2];
    }

    /// @dev The seed every replica of the job receives, in every round (a re-run must
    /// reproduce the result). Derived from the job's identity, not stored: it is for
    /// agreement between replicas, not secrecy (the audit draw is what must be unpredictable).
    function _seed(uint256 jobId, Job memory job) private view returns (bytes32) {
        return keccak256(abi.encode(block.chainid, address(this), jobId, job.termsDigest));
    }

    function _reopens(Job memory job) private pure returns (uint8) {
        return (job.flags >> REOPEN_SHIFT) & REOPEN_MASK;
    }

    function _range(Round round, JobTerms calldata t) private pure returns (uint256 first, uint256 count) {
        if (round == Round.Main) return (0, t.k);
        if (round == Round.Audit) return (t.k, 1);
        return (uint256(t.k) + 1, t.verifiers);
    }

    /// @dev One past the highest slot index any round of this job has opened.
    function _usedEnd(Job memory job, JobTerms calldata t) private pure returns (uint256) {
        if (job.flags & FLAG_VERIFY_OPENED != 0) return uint256(t.k) + 1 + t.verifiers;
        if (job.flags & FLAG_AUDIT_OPENED != 0) return uint256(t.k) + 1;
        return t.k;
    }

    function _bidWindowEnd(Job memory job, JobTerms calldata t) private pure returns (uint256) {
        // While Open, `deadline` is the fill deadline: it started `fillTimeout` before it.
        return uint256(job.deadline) - t.fillTimeout + t.bidWindow;
    }

    function _bidWindowOpen(Job memory job, JobTerms calldata t) private view returns (bool) {
        // Only the first fill of the main round has a window. A round reopened after a
        // missed commit is first-come: its committed slots must never be displaced.
        return job.round == Round.Main && t.bidWindow != 0 && job.committed == 0
            && block.timestamp < _bidWindowEnd(job, t);
    }

    function _after(uint32 seconds_) private view returns (uint40) {
        return uint40(block.timestamp) + seconds_;
    }

    function _toUint96(uint256 value) private pure returns (uint96) {
        if (value > type(uint96).max) revert ChainSchedulerAmountTooLarge(value);
        return uint96(value);
    }
}
