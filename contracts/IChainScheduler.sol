// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title The chain-scheduler market: jobs, bids, commit-reveal, verification and pay.
/// @notice Clients post jobs with escrow; staked providers bid for replica slots, run the
/// job, commit to a result, then reveal it. The contract groups the reveals, pays the
/// agreeing quorum `price × usage`, slashes the rest to the injured parties, and lets
/// anyone move a job past any deadline so nothing waits forever.
/// @dev Job terms are immutable and are NOT kept in storage: the contract stores a 160-bit
/// digest of `abi.encode(terms)` and every job function takes the terms as calldata and
/// checks them against it. That keeps the per-job storage to one slot and doubles as the
/// reorg guard the design asks for: an action built for one set of terms cannot apply to
/// a different job that reuses the same id after a reorg. The full terms, the spec CID and
/// every result CID travel in events.
interface IChainSchedulerTypes {
    // ------------------------------------------------------------------ enums

    /// @notice How a job is executed. The value is also the bit index of the matching
    /// provider capability (`1 << executor`).
    enum Executor {
        Wasm,
        Docker
    }

    /// @notice What the scheduler may do with a job (see DESIGN.md, "Safety classes").
    /// Deterministic: replicas agree on result AND usage; safe to retry, replicate, audit.
    /// Nondestructive: replicas agree on result; usage paid at the winners' median.
    /// Destructive: side effects allowed, so exactly one replica, never re-run.
    enum SafetyClass {
        Deterministic,
        Nondestructive,
        Destructive
    }

    /// @notice Lifecycle of a job. `Succeeded` is provisional (challenge window open);
    /// `Finalized`, `Failed` and `Cancelled` are terminal and never change again.
    enum JobStatus {
        None,
        Open,
        Running,
        Revealing,
        Succeeded,
        Finalized,
        Failed,
        Cancelled
    }

    /// @notice Which set of slots the job is currently filling. Main holds the `k`
    /// replicas, Audit one random extra verifier, Verify `verifiers` fresh replicas used
    /// either to escalate a disputed result or to answer a client's challenge.
    enum Round {
        Main,
        Audit,
        Verify
    }

    /// @notice State of one replica slot.
    enum SlotState {
        Empty,
        Assigned,
        Committed,
        Revealed,
        Slashed,
        Settled
    }

    /// @notice Why a job ended in `Failed`.
    enum FailReason {
        NotFilled,
        NoQuorum,
        NoCommits,
        Unpublished // a sealed accepted result nobody published within a reveal window of the challenge window's end
    }

    // ---------------------------------------------------------------- structs

    /// @notice The immutable terms of a job, chosen by the client at `postJob`.
    /// @dev Hashed with `abi.encode`; the first 20 bytes of the hash are stored.
    struct JobTerms {
        address client;
        bytes32 specDigest; // keccak256(bytes(specCid))
        Executor executor;
        SafetyClass safety;
        uint8 k; // replicas
        uint8 m; // quorum: replicas that must agree (2m > k)
        uint8 verifiers; // replicas of one escalation / challenge round (0: none)
        uint16 auditBps; // audit probability, basis points
        uint32 capabilities; // extra capability bits required (e.g. GPU)
        uint64 maxPrice; // wei per metered unit
        uint64 maxUnits; // metered units at most (Wasm fuel, Docker cpu-ms)
        uint64 minUnits; // units each paid replica is billed at least, failure results included (<= maxUnits)
        uint96 collateral; // locked from a provider's stake per slot
        uint32 bidWindow; // 0: first valid bids win; >0: k cheapest kept until it ends
        uint32 fillTimeout; // how long a round may wait for providers
        uint32 execTimeout; // from bidding close to the commit deadline
        uint32 revealWindow; // from commits close to the reveal deadline
        uint32 challengeWindow; // from success until payouts are free (0: settled at once)
        bool lottery; // the k main replicas are drawn by stake from those who entered in the bid window
        uint64[] parents; // jobs that must be Finalized before bids are taken
    }

    /// @notice The mutable state of a job: one storage slot.
    /// @dev Layout (one 256-bit slot): termsDigest 160 | status 8 | round 8 | filled 8 |
    /// committed 8 | revealed 8 | winner 8 | flags 8 | deadline 40.
    struct Job {
        bytes20 termsDigest;
        JobStatus status;
        Round round;
        uint8 filled; // slots assigned in the current round
        uint8 committed; // commitments in the current round
        uint8 revealed; // reveals in the current round
        uint8 winner; // index of a slot holding the accepted result (valid once Succeeded)
        uint8 flags; // FLAG_* bits (0-3), reopenings of main slots (4-5)
        uint40 deadline; // deadline of the current phase (unix seconds)
    }

    /// @notice One replica slot. Layout: provider 160 | price 64 | state 8 | extraVotes 8 (one slot).
    /// @dev A verifier drawn for several seats of one round holds one slot with a vote per seat:
    /// its collateral, pay, slash-pool share and slashing count once per vote, so splitting
    /// stake over several accounts neither gains nor loses seats.
    struct Slot {
        address provider;
        uint64 price;
        SlotState state;
        uint8 extraVotes; // votes beyond the first
    }

    /// @notice A provider's stake and reputation.
    /// @dev Layout: slot A = free 96 | locked 96 | succeeded 32 | slashed 32;
    /// slot B = capabilities 32 | unbondingAt 40 | audited 32 | registered 8 | poolIndex 32 |
    /// poolWeight 96. A provider with the `VERIFIER` capability bit that is not unbonding is in
    /// the verifier pool with weight free + locked (its whole stake); `poolIndex` is its leaf in
    /// the pool's sum tree (0: never joined) and `poolWeight` the weight the tree holds for it.
    struct Provider {
        uint96 free;
        uint96 locked;
        uint32 succeeded;
        uint32 slashed;
        uint32 capabilities;
        uint40 unbondingAt;
        uint32 audited;
        bool registered;
        uint32 poolIndex;
        uint96 poolWeight;
    }

    // ----------------------------------------------------------------- errors

    /// @notice The replication terms are impossible.
    /// @param k Replicas asked for (1..16).
    /// @param m Quorum asked for (needs k/2 < m <= k).
    error ChainSchedulerBadReplication(uint8 k, uint8 m);
    /// @notice The executor cannot honour the safety class (Wasm is deterministic; Docker is not).
    /// @param executor The executor asked for.
    /// @param safety The safety class asked for.
    error ChainSchedulerClassMismatch(Executor executor, SafetyClass safety);
    /// @notice A destructive job must run exactly once: k = m = 1, no audit, no verifiers.
    /// @param k Replicas asked for.
    /// @param verifiers Verifier replicas asked for.
    /// @param auditBps Audit probability asked for.
    error ChainSchedulerDestructiveReplicated(uint8 k, uint8 verifiers, uint16 auditBps);
    /// @notice Audits need a probability of at most 10000 bps and verifiers to escalate to.
    /// @param auditBps Audit probability asked for.
    /// @param verifiers Verifier replicas asked for.
    error ChainSchedulerBadAudit(uint16 auditBps, uint8 verifiers);
    /// @notice Price, units and every timeout must be positive, and the bid window shorter
    /// than the fill timeout.
    /// @param field Index of the offending field: 0 maxPrice, 1 maxUnits, 2 fillTimeout,
    /// 3 execTimeout, 4 revealWindow, 5 bidWindow, 6 verifiers, 7 client, 8 parents (at most 8),
    /// 9 minUnits (at most maxUnits), 10 collateral (must be positive with k > 1, audits or verifiers),
    /// 11 lottery (needs a bid window to enter in).
    error ChainSchedulerBadTerm(uint8 field);
    /// @notice The spec digest does not hash the spec CID sent.
    /// @param expected keccak256 of the CID sent.
    /// @param actual The digest in the terms.
    error ChainSchedulerSpecMismatch(bytes32 expected, bytes32 actual);
    /// @notice The value sent is not the job's worst-case escrow.
    /// @param expected The escrow the terms require.
    /// @param sent The value sent.
    error ChainSchedulerWrongEscrow(uint256 expected, uint256 sent);
    /// @notice A parent job does not exist (or the child names too many parents).
    /// @param parent The parent id.
    error ChainSchedulerUnknownParent(uint64 parent);
    /// @notice A parent job has not been finalized with a result yet.
    /// @param jobId The child job.
    /// @param parent The parent job.
    /// @param status The parent's status.
    error ChainSchedulerParentNotFinalized(uint256 jobId, uint64 parent, JobStatus status);
    /// @notice The parent named has not failed, so the child cannot be cancelled for it.
    /// @param jobId The child job.
    /// @param parent The parent job.
    /// @param status The parent's status.
    error ChainSchedulerParentNotFailed(uint256 jobId, uint64 parent, JobStatus status);
    /// @notice No job has this id.
    /// @param jobId The id asked for.
    error ChainSchedulerUnknownJob(uint256 jobId);
    /// @notice The terms sent are not the job's terms (wrong job, or a reorg changed it).
    /// @param jobId The job.
    /// @param expected The stored digest.
    /// @param actual The digest of the terms sent.
    error ChainSchedulerTermsMismatch(uint256 jobId, bytes20 expected, bytes20 actual);
    /// @notice The job is not in the state this call needs.
    /// @param jobId The job.
    /// @param expected The status needed.
    /// @param actual The job's status.
    error ChainSchedulerWrongStatus(uint256 jobId, JobStatus expected, JobStatus actual);
    /// @notice The current phase's deadline has passed.
    /// @param jobId The job.
    /// @param deadline The phase deadline.
    /// @param now_ The block timestamp.
    error ChainSchedulerDeadlinePassed(uint256 jobId, uint40 deadline, uint256 now_);
    /// @notice The current phase's deadline has not passed yet.
    /// @param jobId The job.
    /// @param deadline The phase deadline.
    /// @param now_ The block timestamp.
    error ChainSchedulerDeadlineNotReached(uint256 jobId, uint40 deadline, uint256 now_);
    /// @notice The bid window is still open.
    /// @param jobId The job.
    /// @param windowEnd When it closes.
    error ChainSchedulerBidWindowOpen(uint256 jobId, uint256 windowEnd);
    /// @notice Not every slot of the round has a provider yet.
    /// @param jobId The job.
    /// @param filled Slots filled.
    /// @param needed Slots needed.
    error ChainSchedulerSlotsNotFilled(uint256 jobId, uint8 filled, uint8 needed);
    /// @notice The caller is not a registered provider.
    /// @param provider The caller.
    error ChainSchedulerNotRegistered(address provider);
    /// @notice The caller is already a registered provider.
    /// @param provider The caller.
    error ChainSchedulerAlreadyRegistered(address provider);
    /// @notice The provider lacks a capability the job needs.
    /// @param provider The provider.
    /// @param required Capability bits the job needs.
    /// @param have Capability bits the provider registered.
    error ChainSchedulerMissingCapabilities(address provider, uint32 required, uint32 have);
    /// @notice The provider's free stake cannot cover the slot collateral.
    /// @param provider The provider.
    /// @param required Collateral needed.
    /// @param free Free stake.
    error ChainSchedulerInsufficientStake(address provider, uint256 required, uint256 free);
    /// @notice An unbonding provider takes no new work.
    /// @param provider The provider.
    error ChainSchedulerUnbonding(address provider);
    /// @notice Stake cannot be withdrawn yet.
    /// @param provider The provider.
    /// @param unlockAt When unbonding ends (0 if it never started).
    /// @param locked Collateral still locked in jobs.
    error ChainSchedulerStakeLocked(address provider, uint40 unlockAt, uint96 locked);
    /// @notice The bid is above the job's maximum price.
    /// @param price The bid.
    /// @param maxPrice The job's maximum.
    error ChainSchedulerPriceTooHigh(uint64 price, uint64 maxPrice);
    /// @notice Every slot is held by a bid at or below this price.
    /// @param price The bid.
    /// @param dearest The dearest bid kept.
    error ChainSchedulerBidNotCompetitive(uint64 price, uint64 dearest);
    /// @notice The bid cannot be withdrawn: the slot is not in the open round, the round is
    /// full, or a slot of the job was reopened.
    /// @param jobId The job.
    /// @param slot The slot index.
    error ChainSchedulerBidFinal(uint256 jobId, uint8 slot);
    /// @notice The provider already holds a slot in this job (verifiers must be fresh).
    /// @param jobId The job.
    /// @param provider The provider.
    error ChainSchedulerAlreadyInJob(uint256 jobId, address provider);
    /// @notice The caller does not hold this slot.
    /// @param jobId The job.
    /// @param slot The slot index.
    /// @param caller The caller.
    error ChainSchedulerNotSlotHolder(uint256 jobId, uint8 slot, address caller);
    /// @notice The slot is not in the state this call needs.
    /// @param jobId The job.
    /// @param slot The slot index.
    /// @param expected The state needed.
    /// @param actual The slot's state.
    error ChainSchedulerWrongSlotState(uint256 jobId, uint8 slot, SlotState expected, SlotState actual);
    /// @notice The reveal does not open the slot's commitment.
    /// @param jobId The job.
    /// @param slot The slot index.
    error ChainSchedulerCommitmentMismatch(uint256 jobId, uint8 slot);
    /// @notice The slot reveals the other way: main and audit slots of a job with verifiers
    /// reveal sealed (`revealSealed`, the CID's hash), every other slot reveals its CID (`reveal`).
    /// @param jobId The job.
    /// @param slot The slot index.
    /// @param sealedExpected True when this slot must use `revealSealed`.
    error ChainSchedulerRevealKind(uint256 jobId, uint8 slot, bool sealedExpected);
    /// @notice The lottery job takes no more entries: it is not a lottery job, its bid window is
    /// over with k entrants, or its replicas are being or have been drawn.
    /// @param jobId The job.
    error ChainSchedulerEntriesClosed(uint256 jobId);
    /// @notice The lottery holds its maximum of entrants, none lighter than the caller.
    /// @param jobId The job.
    /// @param lightest The weight of the lightest entrant.
    error ChainSchedulerLotteryFull(uint256 jobId, uint96 lightest);
    /// @notice The CID published does not hash to the job's accepted result.
    /// @param jobId The job.
    error ChainSchedulerResultMismatch(uint256 jobId);
    /// @notice Only the job's client may do this.
    /// @param jobId The job.
    /// @param caller The caller.
    error ChainSchedulerNotClient(uint256 jobId, address caller);
    /// @notice The job can no longer be cancelled (work has been assigned).
    /// @param jobId The job.
    error ChainSchedulerNotCancellable(uint256 jobId);
    /// @notice The job cannot be challenged (no verifier budget left, or already challenged).
    /// @param jobId The job.
    error ChainSchedulerNotChallengeable(uint256 jobId);
    /// @notice The challenge bond sent is not the job's collateral per slot.
    /// @param expected The bond required.
    /// @param sent The value sent.
    error ChainSchedulerWrongBond(uint256 expected, uint256 sent);
    /// @notice Nothing is owed to this account.
    /// @param account The caller.
    error ChainSchedulerNothingToWithdraw(address account);
    /// @notice Sending ether failed.
    /// @param account The receiver.
    /// @param amount The amount.
    error ChainSchedulerTransferFailed(address account, uint256 amount);
    /// @notice A guarded function was re-entered.
    error ChainSchedulerReentrantCall();
    /// @notice A zero amount was given where a positive one is needed.
    error ChainSchedulerZeroAmount();
    /// @notice Audit and verification seats are drawn, never bid for.
    /// @param jobId The job.
    error ChainSchedulerDrawnRound(uint256 jobId);
    /// @notice The job has no draw waiting (no audit decision, no audit or verifier seat to fill).
    /// @param jobId The job.
    error ChainSchedulerNoDraw(uint256 jobId);
    /// @notice The draw's randomness does not exist yet: it is the hash of block `afterBlock`,
    /// readable from the next block on.
    /// @param jobId The job.
    /// @param afterBlock The block whose hash the draw uses.
    error ChainSchedulerDrawTooEarly(uint256 jobId, uint256 afterBlock);
    /// @notice An amount does not fit the 96-bit stake fields.
    /// @param amount The amount.
    error ChainSchedulerAmountTooLarge(uint256 amount);

    // ----------------------------------------------------------------- events

    /// @notice A provider joined with stake.
    /// @param provider The provider.
    /// @param capabilities Its capability bits.
    /// @param stake The stake deposited.
    event ProviderRegistered(address indexed provider, uint32 capabilities, uint256 stake);
    /// @notice A provider added stake (and ended any unbonding).
    /// @param provider The provider.
    /// @param amount The amount added.
    /// @param free Its free stake after.
    event StakeAdded(address indexed provider, uint256 amount, uint256 free);
    /// @notice A provider changed its capabilities.
    /// @param provider The provider.
    /// @param capabilities The new capability bits.
    event CapabilitiesChanged(address indexed provider, uint32 capabilities);
    /// @notice A provider started unbonding; it takes no new work.
    /// @param provider The provider.
    /// @param unlockAt When its free stake may be withdrawn.
    event UnbondingStarted(address indexed provider, uint40 unlockAt);
    /// @notice Stake moved from a provider's free stake to its withdrawable credit.
    /// @param provider The provider.
    /// @param amount The amount.
    event Unstaked(address indexed provider, uint256 amount);
    /// @notice A job was posted.
    /// @param jobId The new job id.
    /// @param client The client.
    /// @param specCid CID of the job spec in content storage.
    /// @param terms The full terms (pass them back to every job function).
    /// @param escrow The escrow held.
    event JobPosted(uint256 indexed jobId, address indexed client, string specCid, JobTerms terms, uint256 escrow);
    /// @notice A provider took (or, in window mode, provisionally holds) a slot.
    /// @param jobId The job.
    /// @param round The round the slot belongs to.
    /// @param slot The slot index.
    /// @param provider The provider.
    /// @param price Its price per unit.
    event SlotAssigned(uint256 indexed jobId, Round round, uint8 slot, address indexed provider, uint64 price);
    /// @notice A verifier already seated in the round was drawn for another seat: its slot
    /// gains a vote and another collateral is locked.
    /// @param jobId The job.
    /// @param slot The slot it holds.
    /// @param provider The provider.
    /// @param votes The slot's votes now.
    event VoteAdded(uint256 indexed jobId, uint8 slot, address indexed provider, uint8 votes);
    /// @notice A provider withdrew its bid from a round that had not filled; its collateral is free.
    /// @param jobId The job.
    /// @param slot The slot index, empty again.
    /// @param provider The provider that left.
    event BidWithdrawn(uint256 indexed jobId, uint8 slot, address indexed provider);
    /// @notice A cheaper bid displaced a provider during the bid window; its collateral is free.
    /// @param jobId The job.
    /// @param slot The slot index.
    /// @param provider The displaced provider.
    event BidDisplaced(uint256 indexed jobId, uint8 slot, address indexed provider);
    /// @notice Every slot of a round is filled: run the job with this seed.
    /// @param jobId The job.
    /// @param round The round.
    /// @param seed The shared seed every replica receives.
    /// @param commitDeadline Commitments are due by then.
    event BiddingClosed(uint256 indexed jobId, Round round, bytes32 seed, uint40 commitDeadline);
    /// @notice A draw is due: an audit decision (`round` Audit while the main round is Running)
    /// or seats of an audit or verification round (`round` Audit or Verify while Open). Anyone
    /// may call `draw` from block `afterBlock + 1` on; the draw uses that block's hash, which did
    /// not exist when the transaction that armed the draw ran.
    /// @param jobId The job.
    /// @param round What is drawn for.
    /// @param afterBlock The block whose hash the draw uses.
    event DrawPending(uint256 indexed jobId, Round round, uint256 afterBlock);
    /// @notice A provider committed to a result.
    /// @param jobId The job.
    /// @param slot The slot index.
    /// @param provider The provider.
    event ResultCommitted(uint256 indexed jobId, uint8 slot, address indexed provider);
    /// @notice Commitments closed. Reveals are due by `revealDeadline`; when an audit was just
    /// drawn, `revealDeadline` is 0: the audit round opens first and every commitment stays
    /// sealed until the auditor has committed too (then this event fires again with a deadline).
    /// @param jobId The job.
    /// @param round The round whose commitments closed.
    /// @param audited Whether an audit was drawn for this job.
    /// @param revealDeadline Reveals are due by then (0: wait for the audit round).
    event CommitsClosed(uint256 indexed jobId, Round round, bool audited, uint40 revealDeadline);
    /// @notice A provider revealed its result.
    /// @param jobId The job.
    /// @param slot The slot index.
    /// @param provider The provider.
    /// @param resultCid CID of the outputs and receipt.
    /// @param usage Metered units used.
    event ResultRevealed(uint256 indexed jobId, uint8 slot, address indexed provider, string resultCid, uint64 usage);
    /// @notice A main or audit slot of a job with verifiers revealed the hash of its result.
    /// @param jobId The job.
    /// @param slot The slot index.
    /// @param provider The provider.
    /// @param resultHash keccak256 of the result CID.
    /// @param usage Metered units used.
    /// @param envelope The CID encrypted to the client's delivery key (empty when the spec names none).
    event ResultSealed(
        uint256 indexed jobId, uint8 slot, address indexed provider, bytes32 resultHash, uint64 usage, bytes envelope
    );
    /// @notice A provider entered a lottery job's draw, its collateral locked until the draw.
    /// @param jobId The job.
    /// @param provider The entrant.
    /// @param weight Its stake (free + locked) when it entered: its weight in the draw.
    event Entered(uint256 indexed jobId, address indexed provider, uint96 weight);
    /// @notice An entrant was not drawn (or was displaced by a heavier one): collateral unlocked.
    /// @param jobId The job.
    /// @param provider The entrant.
    event EntryReleased(uint256 indexed jobId, address indexed provider);
    /// @notice The CID of a finalized job's sealed result, checked against its hash.
    /// @param jobId The job.
    /// @param resultCid The accepted result.
    event ResultPublished(uint256 indexed jobId, string resultCid);
    /// @notice A slot lost its collateral.
    /// @param jobId The job.
    /// @param slot The slot index.
    /// @param provider The provider.
    /// @param amount Collateral taken (one per vote the slot held).
    /// @param reopened Whether the slot was reopened for a fresh provider.
    event SlotSlashed(uint256 indexed jobId, uint8 slot, address indexed provider, uint256 amount, bool reopened);
    /// @notice A verification round opened (an audit, an escalation or a challenge).
    /// @param jobId The job.
    /// @param round The round.
    /// @param slots Slots to fill.
    /// @param fillDeadline Providers must take them by then.
    event RoundOpened(uint256 indexed jobId, Round round, uint8 slots, uint40 fillDeadline);
    /// @notice A result was accepted; payouts are free after the challenge deadline (at once,
    /// in the same transaction, when the job's challenge window is 0).
    /// @param jobId The job.
    /// @param winnerSlot A slot holding the accepted result.
    /// @param resultKey bytes24 result digest | uint64 usage of that slot.
    /// @param challengeDeadline When the result becomes final.
    event JobSucceeded(uint256 indexed jobId, uint8 winnerSlot, bytes32 resultKey, uint40 challengeDeadline);
    /// @notice The client challenged the accepted result.
    /// @param jobId The job.
    /// @param bond The bond posted.
    event JobChallenged(uint256 indexed jobId, uint256 bond, bool unread);
    /// @notice A winning provider was paid.
    /// @param jobId The job.
    /// @param slot The slot index.
    /// @param provider The provider.
    /// @param amount Credited pay (price × units).
    /// @param units Units paid for.
    event ProviderPaid(uint256 indexed jobId, uint8 slot, address indexed provider, uint256 amount, uint64 units);
    /// @notice The job's result is final and its money is settled.
    /// @param jobId The job.
    /// @param winnerSlot A slot holding the final result.
    /// @param paid Total paid to providers from the escrow.
    /// @param refund Escrow returned to the client.
    /// @param challengeUpheld Whether a challenge overturned the first result.
    event JobFinalized(uint256 indexed jobId, uint8 winnerSlot, uint256 paid, uint256 refund, bool challengeUpheld);
    /// @notice The job failed; the escrow went back to the client.
    /// @param jobId The job.
    /// @param reason Why.
    /// @param refund Amount credited to the client.
    event JobFailed(uint256 indexed jobId, FailReason reason, uint256 refund);
    /// @notice The job was cancelled; the escrow went back to the client.
    /// @param jobId The job.
    /// @param refund Amount credited to the client.
    event JobCancelled(uint256 indexed jobId, uint256 refund);
    /// @notice Credit was paid out.
    /// @param account The receiver.
    /// @param amount The amount.
    event Withdrawn(address indexed account, uint256 amount);
}

/// @title The chain-scheduler market's functions (types, errors and events in `IChainSchedulerTypes`).
interface IChainScheduler is IChainSchedulerTypes {
    // -------------------------------------------------------------- functions

    /// @notice Become a provider: deposit stake and declare capabilities (bit 0 Wasm, 1 Docker, 2 GPU…).
    /// @param capabilities Capability bits.
    function register(uint32 capabilities) external payable;

    /// @notice Add stake; ends any unbonding.
    function addStake() external payable;

    /// @notice Change the capability bits.
    /// @param capabilities The new bits.
    function setCapabilities(uint32 capabilities) external;

    /// @notice Stop taking work; free stake may be withdrawn after the unbonding delay.
    function beginUnbonding() external;

    /// @notice Move free stake to withdrawable credit, after unbonding and with nothing locked.
    /// @param amount Amount to unstake.
    function unstake(uint96 amount) external;

    /// @notice Post a job with its worst-case escrow (see `escrowFor`).
    /// @param specCid CID of the JSON job spec.
    /// @param terms The job's terms; `terms.client` must be the sender.
    /// @return jobId The new job's id.
    function postJob(string calldata specCid, JobTerms calldata terms) external payable returns (uint256 jobId);

    /// @notice Bid for a slot of the job's current round.
    /// @param jobId The job.
    /// @param terms The job's terms.
    /// @param price Price per unit asked (at most `terms.maxPrice`).
    function bid(uint256 jobId, JobTerms calldata terms, uint64 price) external;

    /// @notice Leave a slot of a round that has not filled yet and free its collateral, so a
    /// provider never waits out a fill timeout on a job that may never start. Not possible once
    /// the round is full (bidding has closed or the window decides) or once a slot of the job
    /// was reopened (its Slashed records keep the provider that missed the commit out).
    /// @param jobId The job.
    /// @param terms The job's terms.
    /// @param slot The caller's slot index.
    function withdrawBid(uint256 jobId, JobTerms calldata terms, uint8 slot) external;

    /// @notice Anyone: carry out a pending draw (see `DrawPending`). An audit decision reveals
    /// the main results unaudited or opens the audit round and draws its auditor; an audit or
    /// verification round gets its empty seats filled by a stake-weighted draw from the verifier
    /// pool (providers with the `VERIFIER` bit, weighted by their whole stake, as it stood when
    /// the epoch began), skipping the client, anyone who holds or held a slot of an earlier
    /// round of the job or missed its commit in this one, and providers that lack the job's
    /// capabilities or the free stake for its collateral. Each seat is a draw of its own: a
    /// provider already seated in the round gains a vote in its slot (`VoteAdded`, one more
    /// collateral locked). Drawn providers hold their seats at `maxPrice`. Seats the draw could
    /// not fill, a draw armed in an earlier epoch, or one whose block hash has expired (older
    /// than 256 blocks), arm a new draw from the current block.
    /// @param jobId The job.
    /// @param terms The job's terms.
    function draw(uint256 jobId, JobTerms calldata terms) external;

    /// @notice Blocks per pool epoch: seat draws read the pool as it was when the epoch began.
    /// @return The epoch length in blocks.
// slither-disable-next-line naming-convention (named as the constant it reads out)
    function POOL_EPOCH() external view returns (uint256);

    /// @notice Enter a lottery job's draw for its k main replicas (a `bid` on such a job enters
    /// too). Open during the bid window, and after it while fewer than k have entered. The
    /// entrant's collateral is locked until the draw, and its weight is its whole stake then;
    /// with `MAX_ENTRANTS` entered, a heavier entrant displaces the lightest. Drawn replicas are
    /// paid `maxPrice`.
    /// @param jobId The job.
    /// @param terms The job's terms.
    function enter(uint256 jobId, JobTerms calldata terms) external;

    /// @notice A lottery job's entrants with their weights, in entry order (displaced ones replaced).
    /// @param jobId The job.
    /// @return providers The entrants.
    /// @return weights Their weights.
    function entrantsOf(uint256 jobId) external view returns (address[] memory providers, uint96[] memory weights);

    /// @notice Close bidding once the bid window is over and every slot is held. For a lottery
    /// job: once its bid window is over with at least k entrants, arm the draw of its replicas
    /// from the hash of this block (`draw` in a later block carries it out).
    /// @param jobId The job.
    /// @param terms The job's terms.
    function closeBidding(uint256 jobId, JobTerms calldata terms) external;

    /// @notice Commit to a result:
    /// `keccak256(abi.encode(jobId, provider, keccak256(bytes(resultCid)), usage, salt))`.
    /// @param jobId The job.
    /// @param terms The job's terms.
    /// @param slot The caller's slot index.
    /// @param commitment The commitment.
    function commit(uint256 jobId, JobTerms calldata terms, uint8 slot, bytes32 commitment) external;

    /// @notice Reveal the committed result in the open. Slots of jobs without verifiers, and the
    /// verification seats of any job, reveal this way; main and audit slots of a job with
    /// verifiers use `revealSealed` (`RevealKind` otherwise).
    /// @param jobId The job.
    /// @param terms The job's terms.
    /// @param slot The caller's slot index.
    /// @param resultCid CID of the outputs and receipt.
    /// @param usage Metered units used.
    /// @param salt The commitment's salt.
    function reveal(
        uint256 jobId,
        JobTerms calldata terms,
        uint8 slot,
        string calldata resultCid,
        uint64 usage,
        bytes32 salt
    ) external;

    /// @notice Reveal the committed result sealed: only the CID's hash goes on chain, so drawn
    /// verifiers who did not run the job have nothing to copy. Main and audit slots of a job with
    /// verifiers reveal this way; the client learns the CID from the envelope, and anyone holding
    /// it can `publish` it once the job is finalized.
    /// @param jobId The job.
    /// @param terms The job's terms.
    /// @param slot The caller's slot index.
    /// @param resultHash keccak256 of the result CID.
    /// @param usage Metered units used.
    /// @param salt The commitment's salt.
    /// @param envelope The CID encrypted to the client's delivery key (see docs/security.md).
    function revealSealed(
        uint256 jobId,
        JobTerms calldata terms,
        uint8 slot,
        bytes32 resultHash,
        uint64 usage,
        bytes32 salt,
        bytes calldata envelope
    ) external;

    /// @notice Anyone: move a job whose phase deadline passed (unfilled, uncommitted, unrevealed).
    /// @param jobId The job.
    /// @param terms The job's terms.
    function timeout(uint256 jobId, JobTerms calldata terms) external;

    /// @notice Anyone: settle a succeeded job once its challenge window is over.
    /// @param jobId The job.
    /// @param terms The job's terms.
    function finalize(uint256 jobId, JobTerms calldata terms) external;

    /// @notice Client: cancel a job before any work is assigned, for a full refund.
    /// @param jobId The job.
    /// @param terms The job's terms.
    function cancel(uint256 jobId, JobTerms calldata terms) external;

    /// @notice Anyone: cancel an open job whose parent failed or was cancelled, for a refund.
    /// @param jobId The child job.
    /// @param terms The child's terms.
    /// @param parentIndex Index in `terms.parents` of the failed parent.
    function cancelOrphan(uint256 jobId, JobTerms calldata terms, uint256 parentIndex) external;

    /// @notice Anyone: put the CID of a succeeded job's accepted result on chain
    /// (`ResultPublished`) once its challenge window is over, and settle the job as `finalize`
    /// does. The CID must hash to the accepted result. A result revealed sealed is settled only
    /// this way: the providers are paid once the client can read what it paid for.
    /// @param jobId The job.
    /// @param terms The job's terms.
    /// @param resultCid The result CID.
    function publish(uint256 jobId, JobTerms calldata terms, string calldata resultCid) external;

    /// @notice Client: challenge a succeeded job within its challenge window, with a bond equal
    /// to the slot collateral. Fresh verifiers re-run it; the loser pays.
    /// @param jobId The job.
    /// @param terms The job's terms.
    function challenge(uint256 jobId, JobTerms calldata terms) external payable;

    /// @notice Client: challenge a succeeded job whose accepted result was revealed sealed and
    /// whose envelope the client could not open. As `challenge`, except that if the result
    /// stands the bond comes back to the client instead of going to the accused: nobody can
    /// show on chain whether an envelope opens, and a provider must not earn bonds by sending
    /// envelopes that do not. The client still pays the verifiers from its escrow.
    /// @param jobId The job.
    /// @param terms The job's terms.
    function challengeUnread(uint256 jobId, JobTerms calldata terms) external payable;

    /// @notice Pay out the caller's credit.
    function withdraw() external;

    /// @notice The escrow `postJob` requires for these terms.
    /// @param terms The terms.
    /// @return The escrow in wei.
    function escrowFor(JobTerms calldata terms) external pure returns (uint256);

    /// @notice A job's state.
    /// @param jobId The job.
    /// @return The job.
    function getJob(uint256 jobId) external view returns (Job memory);

    /// @notice A slot and its sealed value (commitment, then `bytes24 resultDigest | uint64 usage`).
    /// @param jobId The job.
    /// @param slot The slot index.
    /// @return The slot, and its sealed value.
    function getSlot(uint256 jobId, uint8 slot) external view returns (Slot memory, bytes32);

    /// @notice A provider's stake and reputation.
    /// @param provider The provider.
    /// @return The provider record.
    function getProvider(address provider) external view returns (Provider memory);

    /// @notice Slashed collateral waiting to be shared out when the job ends.
    /// @param jobId The job.
    /// @return The pool in wei.
    function slashPoolOf(uint256 jobId) external view returns (uint256);

    /// @notice The bond of an open challenge (0 when none).
    /// @param jobId The job.
    /// @return The bond in wei.
    function challengeBondOf(uint256 jobId) external view returns (uint256);

    /// @notice The verifier pool: members (leaves used) and their total weight.
    /// @return members Leaves in use (members that left keep a leaf of weight 0).
    /// @return weight Sum of the members' weights.
    function poolOf() external view returns (uint256 members, uint256 weight);

    /// @notice The block whose hash a job's pending draw uses (0 if it never had one).
    /// @param jobId The job.
    /// @return The block number.
    function drawBlockOf(uint256 jobId) external view returns (uint256);

    /// @notice Number of jobs posted; job ids run from 1 to `jobCount`.
    /// @return The count.
    function jobCount() external view returns (uint256);

    /// @notice Seconds between `beginUnbonding` and the first allowed `unstake`.
    /// @return The delay.
    function unbondingDelay() external view returns (uint40);

    /// @notice Capability bit of providers that opted in to be drawn as auditors and verifiers.
    /// @return The bit (1 << 31).
// slither-disable-next-line naming-convention (the public constant VERIFIER of the market)
    function VERIFIER() external view returns (uint32);

    /// @notice Withdrawable credit of an account.
    /// @param account The account.
    /// @return The credit in wei.
    function creditOf(address account) external view returns (uint256);
}
