// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IChainScheduler} from "./IChainScheduler.sol";
import {ChainSchedulerBase} from "./ChainSchedulerBase.sol";
import {ChainSchedulerExtension} from "./ChainSchedulerExtension.sol";

/// @title ChainScheduler
/// @notice The verifiable compute market. See `IChainScheduler` for the API and
/// DESIGN.md ("The contract") for the protocol; the rules are in `ChainSchedulerBase`.
/// @dev The functions every job's lifecycle calls (post, bid, close bidding, commit, reveal,
/// timeout, finalize, withdraw) run here. The rest of `IChainScheduler` (provider management,
/// draws, challenges, cancellations, withdrawn bids and the views) runs in
/// `ChainSchedulerExtension`, created by this constructor and reached through `fallback` by
/// `delegatecall` on this contract's storage: the market is one address with one storage
/// and the whole `IChainScheduler` interface (call it through that type), in two pieces of
/// code that each fit the 24,576-byte limit. A delegated call costs about 2,700 gas more.
contract ChainScheduler is ChainSchedulerBase {
    /// @notice The code that runs the delegated functions (it holds no state of its own).
    /// @dev Runs every function but the lifecycle's (read it through `extension()`, there).
    address private immutable _extension;

    /// @param unbondingDelay_ Seconds a provider waits between `beginUnbonding` and `unstake`.
    constructor(uint40 unbondingDelay_) ChainSchedulerBase(unbondingDelay_) {
        _extension = address(new ChainSchedulerExtension(unbondingDelay_));
    }

    // ==================================================================== jobs

    /// @notice See `IChainScheduler`.
    function postJob(string calldata specCid, JobTerms calldata terms) external payable returns (uint256 jobId) {
        _validateTerms(specCid, terms);
        uint256 escrow = _escrow(terms);
        if (msg.value != escrow) revert ChainSchedulerWrongEscrow(escrow, msg.value);
        jobId = ++_jobCount;
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

    /// @notice See `IChainScheduler`.
    function bid(uint256 jobId, JobTerms calldata terms, uint64 price) external {
        // A lottery job's replicas are drawn from its entrants: `enter` (in the extension).
        if (_entering(jobId, terms)) _delegate(IChainScheduler.enter.selector);
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Open);
        _requireBefore(jobId, job.deadline);
        if (price > terms.maxPrice) revert ChainSchedulerPriceTooHigh(price, terms.maxPrice);
        // Whoever opens a verification round could otherwise fill it with its own accounts.
        if (job.round != Round.Main) revert ChainSchedulerDrawnRound(jobId);
        _requireParentsFinalized(jobId, terms);
        Provider storage p = _eligible(msg.sender, terms);

        // Bids are for the main round only: slots 0 to k - 1.
        uint256 count = terms.k;
        // A provider that missed its commit cannot take its reopened slot back.
        _requireFresh(jobId, msg.sender, count);
        bool windowOpen = _bidWindowOpen(job, terms);
        uint256 index;
        if (job.filled < count) {
            index = _firstEmpty(jobId, 0, count);
            job.filled += 1;
        } else {
            // Full during the bid window: a cheaper bid displaces the dearest (O(k)).
            uint64 dearest;
            (index, dearest) = _dearest(jobId, 0, count);
            if (!windowOpen || price >= dearest) revert ChainSchedulerBidNotCompetitive(price, dearest);
            Slot storage displaced = _slots[jobId][index];
            address loser = displaced.provider;
            _unlock(_providers[loser], terms.collateral);
            emit BidDisplaced(jobId, uint8(index), loser);
        }
        p.free -= terms.collateral;
        p.locked += terms.collateral;
        // A main slot never holds more than one vote: its `extraVotes` stays 0.
        Slot storage s = _slots[jobId][index];
        s.provider = msg.sender;
        s.price = price;
        s.state = SlotState.Assigned;
        emit SlotAssigned(jobId, job.round, uint8(index), msg.sender, price);
        if (job.filled == count && !windowOpen) _closeBidding(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @notice See `IChainScheduler`.
    function closeBidding(uint256 jobId, JobTerms calldata terms) external {
        // A lottery job's close arms the draw of its replicas (in the extension).
        if (_entering(jobId, terms)) _delegate(0);
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Open);
        if (_bidWindowOpen(job, terms)) revert ChainSchedulerBidWindowOpen(jobId, _bidWindowEnd(job, terms));
        (, uint256 count) = _range(job.round, terms);
        if (job.filled < count) revert ChainSchedulerSlotsNotFilled(jobId, job.filled, uint8(count));
        _closeBidding(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @notice See `IChainScheduler`.
    function commit(uint256 jobId, JobTerms calldata terms, uint8 slot, bytes32 commitment) external {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Running);
        _requireBefore(jobId, job.deadline);
        Slot storage s = _heldSlot(jobId, slot, SlotState.Assigned);
        s.state = SlotState.Committed;
        _sealed[jobId][slot] = commitment;
        job.committed += 1;
        emit ResultCommitted(jobId, slot, msg.sender);
        // Every held slot has committed (a slot may hold several votes of a verification
        // round). The audit round has one slot and follows the main commits: its commit closes it.
        if (job.round == Round.Audit || job.committed == job.filled) _closeCommits(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @notice See `IChainScheduler`.
    function reveal(
        uint256 jobId,
        JobTerms calldata terms,
        uint8 slot,
        string calldata resultCid,
        uint64 usage,
        bytes32 salt
    ) external {
        Job memory job = _opening(jobId, terms, slot, keccak256(bytes(resultCid)), usage, salt, false);
        emit ResultRevealed(jobId, slot, msg.sender, resultCid, usage);
        _revealed(jobId, job, terms);
    }

    /// @notice See `IChainScheduler`.
    function revealSealed(
        uint256 jobId,
        JobTerms calldata terms,
        uint8 slot,
        bytes32 resultHash,
        uint64 usage,
        bytes32 salt,
        bytes calldata envelope
    ) external {
        Job memory job = _opening(jobId, terms, slot, resultHash, usage, salt, true);
        emit ResultSealed(jobId, slot, msg.sender, resultHash, usage, envelope);
        _revealed(jobId, job, terms);
    }

    /// @dev Open the slot's commitment and record its result key; the caller emits the event.
    function _opening(
        uint256 jobId,
        JobTerms calldata terms,
        uint8 slot,
        bytes32 resultHash,
        uint64 usage,
        bytes32 salt,
        bool sealed_
    ) private returns (Job memory job) {
        job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Revealing);
        _requireBefore(jobId, job.deadline);
        // Main and audit results of a job with verifiers stay sealed, so that a drawn
        // verifier, who reveals the CID itself, cannot copy what it did not compute.
        bool mustSeal = terms.verifiers != 0 && slot <= terms.k;
        if (sealed_ != mustSeal) revert ChainSchedulerRevealKind(jobId, slot, mustSeal);
        Slot storage s = _heldSlot(jobId, slot, SlotState.Committed);
        // The commitment binds job, provider, result and usage: another provider's
        // commitment or a different result opens nothing.
        bytes32 opened = keccak256(abi.encode(jobId, msg.sender, resultHash, usage, salt));
        if (opened != _sealed[jobId][slot]) revert ChainSchedulerCommitmentMismatch(jobId, slot);
        s.state = SlotState.Revealed;
        _sealed[jobId][slot] = _resultKey(resultHash, usage);
        job.revealed += 1;
    }

    function _revealed(uint256 jobId, Job memory job, JobTerms calldata terms) private {
        if (job.revealed == job.committed) _tally(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @notice See `IChainScheduler`.
    function timeout(uint256 jobId, JobTerms calldata terms) external {
        Job memory job = _load(jobId, terms);
        JobStatus status = job.status;
        if (status != JobStatus.Open && status != JobStatus.Running && status != JobStatus.Revealing) {
            revert ChainSchedulerWrongStatus(jobId, JobStatus.Running, status);
        }
        _requireAfter(jobId, job.deadline);
        // A pending audit decision nobody drew: `draw` (same arguments) in the extension.
        if (job.flags & FLAG_DRAW_PENDING != 0) _delegate(IChainScheduler.draw.selector);
        if (status == JobStatus.Open) _timeoutFill(jobId, job, terms);
        else if (status == JobStatus.Running) _timeoutCommits(jobId, job, terms);
        else _timeoutReveals(jobId, job, terms);
        _jobs[jobId] = job;
    }

    /// @notice See `IChainScheduler`.
    function finalize(uint256 jobId, JobTerms calldata terms) external {
        Job memory job = _load(jobId, terms);
        _requireStatus(jobId, job, JobStatus.Succeeded);
        _requireAfter(jobId, job.deadline);
        if (_sealedWinner(job, terms)) {
            // A sealed result settles by its publication; without one for a reveal window,
            // the job fails and the sealed slots lose their collateral.
            _requireAfter(jobId, job.deadline + terms.revealWindow);
            _failUnpublished(jobId, job, terms);
        } else {
            _settle(jobId, job, terms);
        }
        _jobs[jobId] = job;
    }

    /// @notice See `IChainScheduler`.
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

    // =============================================================== delegation

    /// @notice Every other function of `IChainScheduler` (provider management, draws,
    /// challenges, cancellations, withdrawn bids, the views) runs in the extension.
    fallback() external payable {
        _delegate(0);
    }

    /// @notice Plain ether is refused (the extension has no receive function): stake with
    /// `register`/`addStake`, escrow with `postJob`.
    receive() external payable {
        _delegate(0);
    }

    /// @dev Run this call's calldata in the extension, on this contract's storage, and return
    /// or revert with what it returned. `selector`, when not 0, replaces the calldata's own
    /// (for a call whose arguments are another function's).
    function _delegate(bytes4 selector) private {
        address target = _extension;
// slither-disable-next-line assembly (a delegatecall that forwards the calldata and returns or reverts with what the extension returned)
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            calldatacopy(ptr, 0, calldatasize())
            if selector { mstore(ptr, or(and(mload(ptr), not(shl(224, 0xffffffff))), selector)) }
            let ok := delegatecall(gas(), target, ptr, calldatasize(), 0, 0)
            returndatacopy(ptr, 0, returndatasize())
            if iszero(ok) { revert(ptr, returndatasize()) }
// slither-disable-next-line incorrect-return (intended: a delegated call ends here, returning what the extension returned)
            return(ptr, returndatasize())
        }
    }
}
