// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ChainSchedulerBase} from "./ChainSchedulerBase.sol";

/// @title ChainSchedulerExtension
/// @notice The market functions outside a job's everyday lifecycle: provider management,
/// withdrawn bids, draws, cancellations and challenges. Created by `ChainScheduler` and
/// run only by its `delegatecall`, on the market's storage; see `IChainScheduler` for what
/// each does. Called directly it refuses (`onlyDelegated`): its own storage is not a market.
// slither-disable-next-line locked-ether (runs only by delegatecall from the market, which holds the ether and pays it out by withdraw; called directly it reverts NotDelegated)
contract ChainSchedulerExtension is ChainSchedulerBase {
    /// @notice Most entrants a lottery job keeps (a heavier entrant displaces the lightest):
    /// the draw reads them all.
    /// (Read through `MAX_ENTRANTS()`: only the extension uses it.)
    uint256 internal constant ENTRANTS_CAP = 32;
    /// @dev This contract's own address: under `delegatecall`, `address(this)` is the market's.
    address private immutable _self;

    /// @notice The extension was called directly instead of through the market.
    error ChainSchedulerNotDelegated();

    /// @param unbondingDelay_ The market's unbonding delay (an immutable, so set in both).
    constructor(uint40 unbondingDelay_) ChainSchedulerBase(unbondingDelay_) {
        _self = address(this);
    }

    modifier onlyDelegated() {
        if (address(this) == _self) revert ChainSchedulerNotDelegated();
        _;
    }

    /// @dev `IChainScheduler.register`, delegated by the market.
    function register(uint32 capabilities) external payable onlyDelegated {
        Provider storage p = _providers[msg.sender];
        if (p.registered) revert ChainSchedulerAlreadyRegistered(msg.sender);
        if (msg.value == 0) revert ChainSchedulerZeroAmount();
        p.registered = true;
        p.capabilities = capabilities;
        p.free = _toUint96(msg.value);
        _syncPool(msg.sender, p);
        emit ProviderRegistered(msg.sender, capabilities, msg.value);
    }

    /// @dev `IChainScheduler.addStake`, delegated by the market.
    function addStake() external payable onlyDelegated {
        Provider storage p = _registered(msg.sender);
        if (msg.value == 0) revert ChainSchedulerZeroAmount();
        // Free and locked stake together must fit 96 bits: unlocking moves locked to free, and an
        // unlock that overflowed would freeze every job the provider is in.
        p.free = _toUint96(uint256(p.free) + p.locked + msg.value) - p.locked;
        p.unbondingAt = 0;
        _syncPool(msg.sender, p);
        emit StakeAdded(msg.sender, msg.value, p.free);
    }

    /// @dev `IChainScheduler.setCapabilities`, delegated by the market.
    function setCapabilities(uint32 capabilities) external onlyDelegated {
        Provider storage p = _registered(msg.sender);
        p.capabilities = capabilities;
        _syncPool(msg.sender, p);
        emit CapabilitiesChanged(msg.sender, capabilities);
    }

    /// @dev `IChainScheduler.beginUnbonding`, delegated by the market.
    function beginUnbonding() external onlyDelegated {
        Provider storage p = _registered(msg.sender);
        uint40 unlockAt = uint40(block.timestamp) + _unbondingDelay;
        p.unbondingAt = unlockAt;
        _syncPool(msg.sender, p);
        emit UnbondingStarted(msg.sender, unlockAt);
    }

    /// @dev `IChainScheduler.unstake`, delegated by the market.
    function unstake(uint96 amount) external onlyDelegated {
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

    /// @dev `IChainScheduler.withdrawBid`, delegated by the market.
    function withdrawBid(uint256 jobId, JobTerms calldata terms, uint8 slot) external onlyDelegated {
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

    /// @dev `IChainScheduler.enter`, delegated by the market (also for a `bid` on a lottery job).
    function enter(uint256 jobId, JobTerms calldata terms) external onlyDelegated {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Open);
        _requireBefore(jobId, job.deadline);
        uint256[] storage list = _entrants[jobId];
        uint256 n = list.length;
        // Entries close with the bid window, or once k entered after it: before `closeBidding` can
        // arm the draw, so the entrants are fixed before the draw's hash exists.
        bool open = _bidWindowOpen(job, terms) || n < terms.k;
        if (!_entering(jobId, terms) || !open) revert ChainSchedulerEntriesClosed(jobId);
        _requireParentsFinalized(jobId, terms);
        Provider storage p = _eligible(msg.sender, terms);
        uint256 weight = uint256(p.free) + p.locked;
        if (weight == 0) weight = 1; // collateral 0 (k = 1 without verifiers): still a chance
        uint256 lightest = type(uint256).max;
        uint256 at = n;
        for (uint256 i = 0; i < n; ++i) {
            uint256 e = list[i];
            if (address(uint160(e)) == msg.sender) revert ChainSchedulerAlreadyInJob(jobId, msg.sender);
            if (e >> 160 < lightest) (lightest, at) = (e >> 160, i);
        }
        uint256 packed = weight << 160 | uint160(msg.sender);
        if (n < ENTRANTS_CAP) {
            list.push(packed);
        } else {
            if (weight <= lightest) revert ChainSchedulerLotteryFull(jobId, uint96(lightest));
            address displaced = address(uint160(list[at]));
            _unlock(_providers[displaced], terms.collateral);
            emit EntryReleased(jobId, displaced);
            list[at] = packed;
        }
        p.free -= terms.collateral;
        p.locked += terms.collateral;
        emit Entered(jobId, msg.sender, uint96(weight));
    }

    /// @dev `IChainScheduler.closeBidding` for a lottery job that has not drawn yet, delegated
    /// by the market: arm the draw of its replicas.
    function closeBidding(uint256 jobId, JobTerms calldata terms) external onlyDelegated {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Open);
        _requireBefore(jobId, job.deadline);
        if (_bidWindowOpen(job, terms)) revert ChainSchedulerBidWindowOpen(jobId, _bidWindowEnd(job, terms));
        if (_drawBlock[jobId] != 0) revert ChainSchedulerEntriesClosed(jobId);
        uint256 n = _entrants[jobId].length;
        if (n < terms.k) revert ChainSchedulerSlotsNotFilled(jobId, uint8(n), terms.k);
        _armDraw(jobId, Round.Main);
    }

    /// @dev `IChainScheduler.draw`, delegated by the market.
    function draw(uint256 jobId, JobTerms calldata terms) external onlyDelegated {
        Job memory job = _load(jobId, terms);
        bool auditDecision = job.status == JobStatus.Running && job.flags & FLAG_DRAW_PENDING != 0;
        bool seats = job.status == JobStatus.Open
            && (job.round != Round.Main || (_entering(jobId, terms) && _drawBlock[jobId] != 0));
        if (!auditDecision && !seats) revert ChainSchedulerNoDraw(jobId);
        // Past the fill deadline an unfilled round is `timeout`'s to end.
        if (seats) _requireBefore(jobId, job.deadline);
        _draw(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @dev `IChainScheduler.cancel`, delegated by the market.
    function cancel(uint256 jobId, JobTerms calldata terms) external onlyDelegated {
        Job memory job = _load(jobId, terms);
        if (msg.sender != terms.client) revert ChainSchedulerNotClient(jobId, msg.sender);
        _cancel(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @dev `IChainScheduler.cancelOrphan`, delegated by the market.
    function cancelOrphan(uint256 jobId, JobTerms calldata terms, uint256 parentIndex) external onlyDelegated {
        Job memory job = _load(jobId, terms);
        uint64 parent = terms.parents[parentIndex];
        JobStatus parentStatus = _jobs[parent].status;
        if (parentStatus != JobStatus.Failed && parentStatus != JobStatus.Cancelled) {
            revert ChainSchedulerParentNotFailed(jobId, parent, parentStatus);
        }
        _cancel(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @dev `IChainScheduler.challenge`, delegated by the market.
    function challenge(uint256 jobId, JobTerms calldata terms) external payable onlyDelegated {
        _challenge(jobId, terms, false);
    }

    /// @dev `IChainScheduler.challengeUnread`, delegated by the market.
    function challengeUnread(uint256 jobId, JobTerms calldata terms) external payable onlyDelegated {
        _challenge(jobId, terms, true);
    }

    function _challenge(uint256 jobId, JobTerms calldata terms, bool unread) private {
        Job memory job = _load(jobId, terms);
        if (msg.sender != terms.client) revert ChainSchedulerNotClient(jobId, msg.sender);
        _requireStatus(jobId, job, JobStatus.Succeeded);
        _requireBefore(jobId, job.deadline);
        if (terms.verifiers == 0 || job.flags & FLAG_VERIFY_OPENED != 0) revert ChainSchedulerNotChallengeable(jobId);
        // (A challengeable result is always sealed: one that is not came from a verify round.)
        if (msg.value != terms.collateral) revert ChainSchedulerWrongBond(terms.collateral, msg.value);
        _challenges[jobId] = Challenge({bond: terms.collateral, originalWinner: job.winner, unread: unread});
        job.flags |= FLAG_CHALLENGED;
        emit JobChallenged(jobId, msg.value, unread);
        _openRound(jobId, job, terms, Round.Verify);
        _jobs[jobId] = job;
    }

    /// @dev `IChainScheduler`'s function, delegated by the market: settles the job as the
    /// market's `finalize` does.
    function publish(uint256 jobId, JobTerms calldata terms, string calldata resultCid) external onlyDelegated {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Succeeded);
        // Not before the challenge window is over: a drawn verifier could copy it.
        _requireAfter(jobId, job.deadline);
        if (bytes24(keccak256(bytes(resultCid))) != bytes24(_sealed[jobId][job.winner])) {
            revert ChainSchedulerResultMismatch(jobId);
        }
        emit ResultPublished(jobId, resultCid);
        _settle(jobId, job, terms);
        _jobs[jobId] = job;
    }

    // =================================================================== views

    /// @notice The contract that runs every function of the market but the lifecycle's.
    /// @return Its address.
    function extension() external view returns (address) {
        return _self;
    }

    /// @dev `IChainScheduler`'s view, delegated by the market.
    function jobCount() external view returns (uint256) {
        return _jobCount;
    }

    /// @dev `IChainScheduler`'s view, delegated by the market.
    function unbondingDelay() external view returns (uint40) {
        return _unbondingDelay;
    }

    /// @dev `IChainScheduler`'s view, delegated by the market.
// slither-disable-next-line naming-convention (the name of the constant it reads out)
    function VERIFIER() external pure returns (uint32) {
        return VERIFIER_BIT;
    }

    /// @dev `IChainScheduler`'s view, delegated by the market.
// slither-disable-next-line naming-convention (the name of the constant it reads out)
    function POOL_EPOCH() external pure returns (uint256) {
        return EPOCH_BLOCKS;
    }

    /// @notice Most entrants a lottery job keeps (a heavier entrant displaces the lightest).
    /// @return The number.
// slither-disable-next-line naming-convention (the name of the constant it reads out)
    function MAX_ENTRANTS() external pure returns (uint256) {
        return ENTRANTS_CAP;
    }

    /// @dev `IChainScheduler`'s view, delegated by the market.
    function escrowFor(JobTerms calldata terms) external pure returns (uint256) {
        return _escrow(terms);
    }

    /// @dev `IChainScheduler`'s view, delegated by the market.
    function entrantsOf(uint256 jobId) external view returns (address[] memory providers, uint96[] memory weights) {
        uint256[] storage list = _entrants[jobId];
        providers = new address[](list.length);
        weights = new uint96[](list.length);
        for (uint256 i = 0; i < list.length; ++i) {
            providers[i] = address(uint160(list[i]));
            weights[i] = uint96(list[i] >> 160);
        }
    }

    /// @dev `IChainScheduler`'s view, delegated by the market.
    function getJob(uint256 jobId) external view returns (Job memory) {
        return _jobs[jobId];
    }

    /// @dev `IChainScheduler`'s view, delegated by the market.
    function getSlot(uint256 jobId, uint8 slot) external view returns (Slot memory, bytes32) {
        return (_slots[jobId][slot], _sealed[jobId][slot]);
    }

    /// @dev `IChainScheduler`'s view, delegated by the market.
    function getProvider(address provider) external view returns (Provider memory) {
        return _providers[provider];
    }

    /// @dev `IChainScheduler`'s view, delegated by the market.
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
        weight = _poolCap == 0 ? 0 : _tree[_poolCap] & WEIGHT_MASK;
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
}
