// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IChainSchedulerTypes} from "./IChainScheduler.sol";

/// @title ChainSchedulerBase
/// @notice The market's state and the rules both of its code halves apply: the storage layout,
/// the phase machinery, settlement, the verifier pool and the checks.
/// @dev `ChainScheduler` (the deployed market, with the functions of every job's lifecycle)
/// and `ChainSchedulerExtension` (provider management, draws, challenges, cancellations,
/// reached by `delegatecall` from the market) both inherit it, so they read and write the
/// same storage slots. The split keeps each under the 24,576-byte code size limit.
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
abstract contract ChainSchedulerBase is IChainSchedulerTypes {
    uint256 internal constant MAX_K = 16;
    uint256 internal constant MAX_VERIFIERS = 15;
    uint256 internal constant MAX_PARENTS = 8;
    uint256 internal constant BPS = 10_000;

    uint8 internal constant FLAG_AUDIT_DRAWN = 1;
    uint8 internal constant FLAG_AUDIT_OPENED = 2;
    uint8 internal constant FLAG_VERIFY_OPENED = 4;
    uint8 internal constant FLAG_CHALLENGED = 8;
    /// @dev Bits 4-5 of `flags` count the times a main slot was reopened after a missed commit.
    uint8 internal constant REOPEN_SHIFT = 4;
    uint8 internal constant REOPEN_MASK = 3;
    /// @dev Reopenings per job. A griefer who bids and never commits costs the job one commit
    /// window each time; after this many the job goes on with what was committed, or fails
    /// with the griefers' collateral in the client's refund.
    uint8 internal constant MAX_REOPENS = 2;
    /// @dev Bit 6 of `flags`: the audit decision waits for a draw (main commits all in).
    uint8 internal constant FLAG_DRAW_PENDING = 64;
    /// @dev Bit 7 of `flags`: a slot of the job was slashed, so its slash pool may hold
    /// something (settling a job that never slashed skips reading the pool: 2,100 gas).
    uint8 internal constant FLAG_SLASHED = 128;
    /// @notice Capability bit of providers that opted in to be drawn as auditors and verifiers.
    /// (Read through the extension's `VERIFIER()`, like every getter: each public function of
    /// the market adds to its dispatcher, which every lifecycle call pays for.)
    uint32 internal constant VERIFIER_BIT = uint32(1) << 31;
    /// @dev Candidates one seat's draw looks at before it gives up until the next draw. Each
    /// refused candidate leaves the draw's sample space, so with at most this many ineligible
    /// pool members a seat is always filled when anyone eligible exists.
    uint256 internal constant MAX_DRAW_TRIES = 16;
    /// @notice Blocks per pool epoch. Seat draws read the pool as it was at the start of the
    /// current epoch, so stake moved once a draw's hash is known never changes that draw,
    /// and a draw armed in an earlier epoch re-arms.
    /// (Internal, read through the extension's `POOL_EPOCH()`: a public constant would add a
    /// selector to the market's dispatcher, which every lifecycle call pays for.)
    uint256 internal constant EPOCH_BLOCKS = 4; // < 256: an expired hash is always an epoch old
    uint256 internal constant WEIGHT_MASK = (uint256(1) << 112) - 1;

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
        bool unread; // `challengeUnread`: the bond comes back even if the result stands
    }

    /// @notice Seconds between `beginUnbonding` and the first allowed `unstake`.
    uint40 internal immutable _unbondingDelay;

    /// @notice Number of jobs posted; job ids run from 1 to `jobCount()`.
// slither-disable-next-line constable-states,uninitialized-state (ChainScheduler.postJob counts it; the extension only reads it, on the same storage)
    uint256 internal _jobCount;

    mapping(uint256 jobId => Job) internal _jobs;
    mapping(uint256 jobId => mapping(uint256 slot => Slot)) internal _slots;
    /// @dev Per slot: the commitment until revealed, then bytes24 result digest | uint64 usage.
// slither-disable-next-line uninitialized-state (written by ChainScheduler commit and reveal; the extension reads it on the same storage)
    mapping(uint256 jobId => mapping(uint256 slot => bytes32)) internal _sealed;
    mapping(address provider => Provider) internal _providers;
    /// @dev Credit plus one once an account has ever been credited: withdrawing leaves
    /// the slot at 1 instead of 0, so the next credit is a 5,000-gas update rather than
    /// a 22,100-gas new slot. Read and written only through `_credit` and `creditOf`.
    mapping(address account => uint256) internal _credits;
    mapping(uint256 jobId => uint256) internal _slashPool;
    mapping(uint256 jobId => Challenge) internal _challenges;
    /// @dev The verifier pool: a Fenwick (binary indexed) tree over members' weights, so that
    /// a weight update and a weighted draw each cost O(log n) in the number of members.
    /// `_tree[i]` sums the weights of leaves (i - lowbit(i), i]; `_members[i]` is leaf i's provider.
    mapping(uint256 node => uint256) internal _tree;
    mapping(uint256 leaf => address) internal _members;
    /// @dev Leaves in use and the tree's capacity (a power of two, doubled as members join).
    uint128 internal _poolSize;
    uint128 internal _poolCap;
    /// @dev The block whose hash a job's pending draw uses (see `DrawPending`).
    mapping(uint256 jobId => uint256) internal _drawBlock;
    /// @dev A lottery job's entrants: weight 96 | provider 160, one word each.
// slither-disable-next-line uninitialized-state (written by ChainSchedulerExtension.enter on the market's storage, by delegatecall)
    mapping(uint256 jobId => uint256[]) internal _entrants;
    /// @dev EIP-1153 transient storage: the guard costs 200 gas instead of two SSTOREs.
    bool internal transient _entered;

    /// @param unbondingDelay_ Seconds a provider waits between `beginUnbonding` and `unstake`.
    constructor(uint40 unbondingDelay_) {
        _unbondingDelay = unbondingDelay_;
    }

    modifier nonReentrant() {
        if (_entered) revert ChainSchedulerReentrantCall();
        _entered = true;
        _;
        _entered = false;
    }

    // ========================================================= phase machinery

    function _closeBidding(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
        job.status = JobStatus.Running;
        job.revealed = 0;
        job.deadline = _after(terms.execTimeout);
        emit BiddingClosed(jobId, job.round, _seed(jobId, job), job.deadline);
    }

    function _closeCommits(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
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

    function _beginReveals(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
        job.status = JobStatus.Revealing;
        job.deadline = _after(terms.revealWindow);
        emit CommitsClosed(jobId, job.round, job.flags & FLAG_AUDIT_DRAWN != 0, job.deadline);
    }

    function _tally(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
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

    function _timeoutFill(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
        (uint256 first, uint256 count) = _range(job.round, terms);
        if (job.filled == count) {
            // Window mode: every slot is held and the window is long over.
            _closeBidding(jobId, job, terms);
        } else if (job.round == Round.Main) {
            _releaseEntrants(jobId, terms);
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

    function _timeoutCommits(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
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
            _slash(jobId, job, i, terms.collateral, reopen);
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

    function _timeoutReveals(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
        // Main and audit slots reveal together, so scan every slot opened so far.
        uint256 end = _usedEnd(job, terms);
        for (uint256 i = 0; i < end; ++i) {
            if (_slots[jobId][i].state == SlotState.Committed) _slash(jobId, job, i, terms.collateral, false);
        }
        _tally(jobId, job, terms);
    }

    function _openRound(uint256 jobId, Job memory job, JobTerms calldata terms, Round round) internal {
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

    function _armDraw(uint256 jobId, Round round) internal {
        _drawBlock[jobId] = block.number;
        emit DrawPending(jobId, round, block.number);
    }

    /// @dev Carry out a pending draw (see `draw`). The randomness is the hash of the block the
    /// draw was armed in: unknown to the transaction that armed it, fixed before anyone draws.
    function _draw(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
        uint256 base = _drawBlock[jobId];
        if (block.number <= base) revert ChainSchedulerDrawTooEarly(jobId, base);
        bytes32 hash = blockhash(base);
        bool decision = job.flags & FLAG_DRAW_PENDING != 0;
        bytes32 random = keccak256(abi.encode(hash, jobId, job.flags));
        if (job.round == Round.Main && !decision) {
            // A lottery: the entrants and their weights were fixed before the hash existed.
            // A hash older than 256 blocks reads 0, a value anyone knows: draw from a block
            // that does not exist yet instead.
            if (hash == 0) _armDraw(jobId, Round.Main);
            else _drawEntrants(jobId, job, terms, random);
            return;
        }
        if (decision) {
            job.flags &= ~FLAG_DRAW_PENDING;
            // An expired decision audits: everyone could read its coin for 256 blocks, and a
            // provider that saw "audit" coming must not win a fresh toss by waiting.
            // slither-disable-next-line weak-prng (the hash of a block mined after the decision was armed: only its proposer could bias it, at the cost of its block; docs/security.md)
            if (hash != 0 && uint256(keccak256(abi.encode(random, "audit"))) % BPS >= terms.auditBps) {
                _beginReveals(jobId, job, terms);
                return;
            }
            // The auditor runs and commits before anyone reveals, so it has nothing to copy;
            // the main commitments wait sealed until then. Its seat uses the same randomness.
            job.flags |= FLAG_AUDIT_DRAWN;
            emit CommitsClosed(jobId, Round.Main, true, 0);
            _openRound(jobId, job, terms, Round.Audit);
        }
        // Seats are drawn from the pool as it stood when the epoch began, before the hash
        // existed: whoever knows the hash could otherwise move stake until the draw suits it.
        // A draw armed in an earlier epoch re-arms, and so does every draw whose hash has
        // expired (256 blocks are many epochs): its hash would read 0, a value anyone knows.
        if (base / EPOCH_BLOCKS != _epoch()) _armDraw(jobId, job.round);
        else _fillSeats(jobId, job, terms, random);
    }

    /// @dev Fill the empty seats of the current (audit or verification) round by draw; close
    /// bidding when every seat is held, or arm another draw for the rest. Each seat is a
    /// weighted draw over the whole eligible pool: a member already seated in the round that
    /// is drawn again gains a vote in its slot (`job.filled` counts slots, not votes). With
    /// one seat per account at most, splitting stake over accounts would win more seats.
    function _fillSeats(uint256 jobId, Job memory job, JobTerms calldata terms, bytes32 random) internal {
        (uint256 first, uint256 count) = _range(job.round, terms);
        uint256 end = first + count;
        // Seats whose holder missed its commit: those holders stay out of the whole draw,
        // not only of the seat they held (filling a seat overwrites its record).
        address[] memory missed = new address[](count);
        uint256 votes = 0;
        for (uint256 i = first; i < end; ++i) {
            Slot memory s = _slots[jobId][i];
            if (s.state == SlotState.Slashed) missed[i - first] = s.provider;
            else if (s.state != SlotState.Empty) votes += 1 + uint256(s.extraVotes);
        }
        while (votes < count) {
            address drawn = _drawSeat(jobId, terms, keccak256(abi.encode(random, votes)), first, missed);
            if (drawn == address(0)) break;
            Provider storage p = _providers[drawn];
            p.free -= terms.collateral;
            p.locked += terms.collateral;
            uint256 i = _seatFor(jobId, drawn, first, end);
            Slot storage s = _slots[jobId][i];
            if (s.provider == drawn) {
                s.extraVotes += 1;
                emit VoteAdded(jobId, uint8(i), drawn, s.extraVotes + 1);
            } else {
                // Field by field: cheaper than a struct literal, which goes through memory.
                s.provider = drawn;
                s.price = terms.maxPrice;
                s.state = SlotState.Assigned;
                s.extraVotes = 0;
                job.filled += 1;
                emit SlotAssigned(jobId, job.round, uint8(i), drawn, terms.maxPrice);
            }
            ++votes;
        }
        if (votes < count) {
            _armDraw(jobId, job.round);
            return;
        }
        _closeBidding(jobId, job, terms);
        // A redraw whose votes all went to verifiers that have committed leaves nobody to
        // commit: the reveals begin now, not at the commit deadline.
        if (job.round == Round.Verify && job.committed == job.filled) _closeCommits(jobId, job, terms);
    }

    /// @dev The live slot `member` holds in [first, end), else the first seat nobody holds
    /// (empty, or slashed for a missed commit: a drawn member never held one of those). One
    /// exists while the round's votes are short of its seats.
    function _seatFor(uint256 jobId, address member, uint256 first, uint256 end) private view returns (uint256 free) {
        free = end;
        for (uint256 i = first; i < end; ++i) {
            Slot memory s = _slots[jobId][i];
            if (s.state == SlotState.Empty || s.state == SlotState.Slashed) {
                if (free == end) free = i;
            } else if (s.provider == member) {
                return i;
            }
        }
    }

    /// @dev A lottery: draw the k main replicas from the entrants, weighted by the stake each
    /// had when it entered, without replacement; release the others.
    function _drawEntrants(uint256 jobId, Job memory job, JobTerms calldata terms, bytes32 random) internal {
        uint256[] storage list = _entrants[jobId];
        uint256 n = list.length;
        uint256[] memory entry = new uint256[](n);
        uint256 total = 0;
        for (uint256 i = 0; i < n; ++i) {
            entry[i] = list[i];
            total += entry[i] >> 160;
        }
        for (uint256 seat = 0; seat < terms.k; ++seat) {
            // slither-disable-next-line weak-prng (the hash of a block mined after the entries closed; docs/security.md)
            uint256 r = uint256(keccak256(abi.encode(random, seat))) % total;
            uint256 i = 0;
            // Drawn entries weigh 0 from here on (without replacement).
            while (r >= entry[i] >> 160) {
                r -= entry[i] >> 160;
                ++i;
            }
            address drawn = address(uint160(entry[i]));
            total -= entry[i] >> 160;
            entry[i] = 0;
            Slot storage s = _slots[jobId][seat];
            s.provider = drawn;
            s.price = terms.maxPrice;
            s.state = SlotState.Assigned;
            emit SlotAssigned(jobId, Round.Main, uint8(seat), drawn, terms.maxPrice);
        }
        _releaseEntries(jobId, entry, terms.collateral);
        job.filled = terms.k;
        _closeBidding(jobId, job, terms);
    }

    /// @dev Unlock the collateral of the entrants in `entry` (packed as in `_entrants`; 0 skipped).
    function _releaseEntries(uint256 jobId, uint256[] memory entry, uint96 collateral) internal {
        for (uint256 i = 0; i < entry.length; ++i) {
            if (entry[i] == 0) continue;
            address entrant = address(uint160(entry[i]));
            _unlock(_providers[entrant], collateral);
            emit EntryReleased(jobId, entrant);
        }
    }

    /// @dev A lottery job ends before its draw (fill timeout or cancel): release every entrant.
    function _releaseEntrants(uint256 jobId, JobTerms calldata terms) internal {
        if (!terms.lottery || _slots[jobId][0].state != SlotState.Empty) return;
        uint256[] storage list = _entrants[jobId];
        uint256[] memory entry = new uint256[](list.length);
        for (uint256 i = 0; i < entry.length; ++i) {
            entry[i] = list[i];
        }
        _releaseEntries(jobId, entry, terms.collateral);
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
    function _drawSeat(uint256 jobId, JobTerms calldata terms, bytes32 random, uint256 first, address[] memory missed)
        private
        view
        returns (address)
    {
        uint256 total = _poolCap == 0 ? 0 : _snapshot(_tree[_poolCap]);
        Refused memory refused = Refused({
            leaf: new uint256[](MAX_DRAW_TRIES),
            start: new uint256[](MAX_DRAW_TRIES),
            weight: new uint256[](MAX_DRAW_TRIES),
            count: 0,
            total: 0
        });
        for (uint256 t = 0; t < MAX_DRAW_TRIES && total > refused.total; ++t) {
            // slither-disable-next-line weak-prng (the hash of a block mined after the draw was armed, from a pool that has not moved since; docs/security.md)
            uint256 r = uint256(keccak256(abi.encode(random, t))) % (total - refused.total);
            // Step over each refused interval that starts at or before r.
            for (uint256 e = 0; e < refused.count && r >= refused.start[e]; ++e) {
                r += refused.weight[e];
            }
            uint256 index = _treeFind(r);
            address candidate = _members[index];
            if (_mayVerify(jobId, terms, candidate, first) && !_listed(missed, candidate)) return candidate;
            _refuse(refused, index);
        }
        return address(0);
    }

    function _refuse(Refused memory refused, uint256 index) internal view {
        uint256 start = _treePrefix(index - 1);
        uint256 weight = _treePrefix(index) - start;
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

    function _listed(address[] memory list, address account) internal pure returns (bool) {
        for (uint256 i = 0; i < list.length; ++i) {
            if (list[i] == account) return true;
        }
        return false;
    }

    /// @dev Whether a drawn pool member may take a seat of this job's round starting at slot
    /// `first`: not the client, holding or having held no slot of an earlier round (a seat of
    /// this one adds a vote), able to run it, and with the free stake for its collateral.
    function _mayVerify(uint256 jobId, JobTerms calldata terms, address candidate, uint256 first)
        private
        view
        returns (bool)
    {
        if (candidate == terms.client) return false;
        Provider storage p = _providers[candidate];
        // Drawn from the epoch's start: it may have left the pool since.
        if (p.capabilities & VERIFIER_BIT == 0 || p.unbondingAt != 0) return false;
        uint32 required = (uint32(1) << uint8(terms.executor)) | terms.capabilities;
        if (p.capabilities & required != required || p.free < terms.collateral) return false;
        for (uint256 i = 0; i < first; ++i) {
            if (_slots[jobId][i].provider == candidate) return false;
        }
        return true;
    }

    function _succeed(uint256 jobId, Job memory job, JobTerms calldata terms, uint32 challengeWindow) internal {
        job.status = JobStatus.Succeeded;
        job.deadline = _after(challengeWindow);
        emit JobSucceeded(jobId, job.winner, _sealed[jobId][job.winner], job.deadline);
        // Without a challenge window nothing can change the result any more: settle in this
        // transaction instead of asking a keeper for a separate finalize. A sealed result is
        // settled by its publication instead (`publish`).
        if (terms.challengeWindow == 0 && !_sealedWinner(job, terms)) _settle(jobId, job, terms);
    }

    /// @dev Whether the accepted result was revealed sealed (a main or audit slot of a job
    /// with verifiers): its CID is on chain only once published.
    function _sealedWinner(Job memory job, JobTerms calldata terms) internal pure returns (bool) {
        return terms.verifiers != 0 && job.winner <= terms.k;
    }

    /// @dev A challenge nobody could resolve (no verifiers came, or they disagreed): the
    /// original result stands and is final; the client gets its bond back.
    function _voidChallenge(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
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
    function _settle(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
        bytes32 accepted = _sealed[jobId][job.winner];
        // An audit counts for the main replicas only if the auditor actually revealed.
        Bonus memory bonus = Bonus({
            poolShare: 0,
            bondShare: 0,
            audited: job.flags & FLAG_AUDIT_OPENED != 0 && _slots[jobId][terms.k].state == SlotState.Revealed
        });
        (uint256[] memory winners, uint256 n, uint256 votes, uint64 units) = _judge(jobId, job, terms, accepted);
        // The slash pool is shared by the client and each winning vote; the client keeps the dust.
        uint256 pool = _takeSlashPool(jobId, job);
        bonus.poolShare = pool / (votes + 1);
        bool upheld;
        (bonus.bondShare, upheld) = _settleChallenge(jobId, job, terms, accepted, winners, n);
        uint256 paid = _payWinners(jobId, terms, winners, n, units, bonus);
        uint256 refund = _escrow(terms) - paid;
        _credit(terms.client, refund + pool - bonus.poolShare * votes);
        job.status = JobStatus.Finalized;
        emit JobFinalized(jobId, job.winner, paid, refund, upheld);
    }

    /// @dev Sort the revealed slots into winners (same result as `accepted`) and losers
    /// (slashed now), count the winners' votes, and work out the units each winner is paid for.
    function _judge(uint256 jobId, Job memory job, JobTerms calldata terms, bytes32 accepted)
        private
        returns (uint256[] memory winners, uint256 n, uint256 votes, uint64 units)
    {
        bool deterministic = terms.safety == SafetyClass.Deterministic;
        uint256 end = _usedEnd(job, terms);
        winners = new uint256[](end);
        // A round's votes never outnumber its seats.
        uint64[] memory usages = new uint64[](end);
        for (uint256 i = 0; i < end; ++i) {
            Slot storage s = _slots[jobId][i];
            if (s.state != SlotState.Revealed) continue;
            bytes32 key = _sealed[jobId][i];
            if (_matches(key, accepted, deterministic)) {
                winners[n] = i;
                ++n;
                uint256 weight = 1 + uint256(s.extraVotes);
                // Deterministic winners agree on usage; otherwise all are paid the median vote.
                for (uint256 v = 0; v < weight && !deterministic; ++v) {
                    usages[votes + v] = uint64(uint256(key));
                }
                votes += weight;
            } else {
                _slash(jobId, job, i, terms.collateral, false);
            }
        }
        units = deterministic ? uint64(uint256(accepted)) : _lowerMedian(usages, votes);
        // The floor pays a replica's fixed costs even for a failure result of no work.
        if (units < terms.minUnits) units = terms.minUnits;
        if (units > terms.maxUnits) units = terms.maxUnits;
    }

    /// @dev Credit each winner `price × units` and a pool share per vote (and, for the
    /// providers a rejected challenge accused, its bond share); release its collateral and
    /// count its success. Returns the total paid from escrow.
    function _payWinners(
        uint256 jobId,
        JobTerms calldata terms,
        uint256[] memory winners,
        uint256 n,
        uint64 units,
        Bonus memory bonus
    ) internal returns (uint256 paid) {
        for (uint256 w = 0; w < n; ++w) {
            uint256 i = winners[w];
            Slot storage s = _slots[jobId][i];
            address provider = s.provider;
            uint256 votes = 1 + uint256(s.extraVotes);
            uint256 amount = uint256(s.price) * units * votes;
            paid += amount;
            s.state = SlotState.Settled;
            Provider storage p = _providers[provider];
            // At most 16 votes of a collateral that was locked for each: within 96 bits.
            _unlock(p, uint96(terms.collateral * votes));
            p.succeeded += 1;
            if (bonus.audited && i < terms.k) p.audited += 1;
            _credit(provider, amount + bonus.poolShare * votes + (i <= terms.k ? bonus.bondShare : 0));
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
    ) internal returns (uint256 bondShare, bool upheld) {
        if (job.flags & FLAG_CHALLENGED == 0) return (0, false);
        Challenge memory c = _challenges[jobId];
        delete _challenges[jobId];
        upheld = !_matches(_sealed[jobId][c.originalWinner], accepted, terms.safety == SafetyClass.Deterministic);
        // An unread challenge's bond comes back even when the result stands: whether the
        // envelope opened cannot be shown on chain.
        if (upheld || c.unread) {
            _credit(terms.client, c.bond);
            return (0, upheld);
        }
        uint256 accused = 0;
        for (uint256 w = 0; w < n; ++w) {
            if (winners[w] <= terms.k) ++accused;
        }
        // slither-disable-next-line divide-before-multiply (intended: the client takes the dust)
        bondShare = c.bond / accused;
        _credit(terms.client, c.bond - bondShare * accused);
    }

    /// @dev Nobody published a sealed accepted result within a reveal window after the
    /// challenge window: the client never got what it paid for, perhaps because the envelope
    /// it was sent does not open. Each sealed slot that revealed is slashed (one that agreed
    /// could have published, one that disagreed was wrong); every other collateral is released
    /// unpaid; the client gets back its escrow and the slash pool. (No challenge is pending: a
    /// decided one makes a verifier's open result the winner, a void one returned its bond.)
    function _failUnpublished(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
        uint256 end = _usedEnd(job, terms);
        for (uint256 i = 0; i <= terms.k && i < end; ++i) {
            if (_slots[jobId][i].state == SlotState.Revealed) _slash(jobId, job, i, terms.collateral, false);
        }
        _releaseRange(jobId, 0, end, terms.collateral);
        uint256 refund = _escrow(terms) + _takeSlashPool(jobId, job);
        _credit(terms.client, refund);
        job.status = JobStatus.Failed;
        emit JobFailed(jobId, FailReason.Unpublished, refund);
    }

    function _fail(uint256 jobId, Job memory job, JobTerms calldata terms, FailReason reason) internal {
        uint256 end = _usedEnd(job, terms);
        (uint256 paid, uint256 rest) = _payRevealers(jobId, terms, end, _takeSlashPool(jobId, job));
        // Nobody can be shown wrong without a quorum: live collateral is released.
        _releaseRange(jobId, 0, end, terms.collateral);
        uint256 refund = _escrow(terms) - paid + rest;
        _credit(terms.client, refund);
        job.status = JobStatus.Failed;
        emit JobFailed(jobId, reason, refund);
    }

    /// @dev A job that failed after some replicas revealed on time: nobody can be shown wrong,
    /// and each result is on chain for the client to read, so each revealer is paid its
    /// price for the lower median of the revealed usages (floored at minUnits, capped at
    /// maxUnits), and the collateral of the slots that missed a commit or a reveal is shared
    /// among the revealers. Otherwise a client holding a slot of a k = m job through another
    /// account could withhold its reveal, or reveal garbage, read the honest replicas' result,
    /// and be refunded everything: the result for free. Returns what was paid from escrow and
    /// what is left of the pool for the client (the dust, or all of it when nobody revealed).
    function _payRevealers(uint256 jobId, JobTerms calldata terms, uint256 end, uint256 pool)
        internal
        returns (uint256 paid, uint256 rest)
    {
        uint256[] memory revealed = new uint256[](end);
        uint64[] memory usages = new uint64[](end);
        uint256 n = 0;
        uint256 votes = 0;
        for (uint256 i = 0; i < end; ++i) {
            Slot memory s = _slots[jobId][i];
            if (s.state != SlotState.Revealed) continue;
            revealed[n] = i;
            ++n;
            for (uint256 v = 0; v <= s.extraVotes; ++v) {
                usages[votes++] = uint64(uint256(_sealed[jobId][i]));
            }
        }
        if (n == 0) return (0, pool);
        uint64 units = _lowerMedian(usages, votes);
        if (units < terms.minUnits) units = terms.minUnits;
        if (units > terms.maxUnits) units = terms.maxUnits;
// slither-disable-next-line divide-before-multiply (intended: the client takes the dust)
        uint256 share = pool / votes;
        for (uint256 w = 0; w < n; ++w) {
            Slot storage s = _slots[jobId][revealed[w]];
            uint256 weight = 1 + uint256(s.extraVotes);
            uint256 amount = uint256(s.price) * units * weight;
            paid += amount;
            _credit(s.provider, amount + share * weight);
            emit ProviderPaid(jobId, uint8(revealed[w]), s.provider, amount, units);
        }
        rest = pool - share * votes;
    }

    function _cancel(uint256 jobId, Job memory job, JobTerms calldata terms) internal {
        _requireStatus(jobId, job, JobStatus.Open);
        // Cancellable while no provider can have started: nothing committed, and either no
        // slot held or only provisional bids inside a bid window.
        if (job.round != Round.Main || job.committed != 0 || (terms.bidWindow == 0 && job.filled != 0)) {
            revert ChainSchedulerNotCancellable(jobId);
        }
        _releaseRange(jobId, 0, terms.k, terms.collateral);
        _releaseEntrants(jobId, terms);
        uint256 refund = _escrow(terms) + _takeSlashPool(jobId, job);
        _credit(terms.client, refund);
        job.status = JobStatus.Cancelled;
        emit JobCancelled(jobId, refund);
    }

    /// @dev Unlock, unpaid, every slot in [first, first+count) still holding collateral.
    function _releaseRange(uint256 jobId, uint256 first, uint256 count, uint96 collateral) internal {
        for (uint256 i = first; i < first + count; ++i) {
            Slot storage s = _slots[jobId][i];
            SlotState state = s.state;
            if (state == SlotState.Assigned || state == SlotState.Committed || state == SlotState.Revealed) {
                s.state = SlotState.Settled;
                _unlock(_providers[s.provider], collateral * (1 + s.extraVotes));
            }
        }
    }

    function _slash(uint256 jobId, Job memory job, uint256 index, uint96 collateral, bool reopened) internal {
        job.flags |= FLAG_SLASHED;
        Slot storage s = _slots[jobId][index];
        s.state = SlotState.Slashed;
        uint96 amount = collateral * (1 + s.extraVotes);
        Provider storage p = _providers[s.provider];
        p.locked -= amount;
        p.slashed += 1;
        _syncPool(s.provider, p);
        _slashPool[jobId] += amount;
        emit SlotSlashed(jobId, uint8(index), s.provider, amount, reopened);
    }

    function _takeSlashPool(uint256 jobId, Job memory job) internal returns (uint256 pool) {
        if (job.flags & FLAG_SLASHED == 0) return 0;
        pool = _slashPool[jobId];
        if (pool != 0) delete _slashPool[jobId];
    }

    function _credit(address account, uint256 amount) internal {
        if (amount == 0) return;
        uint256 stored = _credits[account];
        _credits[account] = (stored == 0 ? 1 : stored) + amount;
    }

    function _unlock(Provider storage p, uint96 collateral) internal {
        p.locked -= collateral;
        p.free += collateral;
    }

    // =========================================================== verifier pool

    /// @dev Bring the pool's weight for a provider in line with its record: its whole stake
    /// (free + locked, which bids and unlocks leave unchanged) while it has the VERIFIER bit
    /// and is not unbonding, else 0. Stake-weighted: an operator that splits its stake over
    /// many accounts has the same total weight.
    function _syncPool(address provider, Provider storage p) internal {
        uint256 want = p.capabilities & VERIFIER_BIT != 0 && p.unbondingAt == 0 ? uint256(p.free) + p.locked : 0;
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
    function _joinPool(address provider) internal returns (uint256 index) {
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

    /// @dev Tree nodes are epoch 32 | weight at the epoch's start 112 | weight now 112.
    function _treeAdd(uint256 index, uint256 delta, bool up) internal {
        uint256 cap = _poolCap;
        uint256 epoch = _epoch();
        for (uint256 i = index; i <= cap; i += i & (~i + 1)) {
            uint256 node = _tree[i];
            uint256 current = node & WEIGHT_MASK;
            uint256 start = node >> 224 < epoch ? current : (node >> 112) & WEIGHT_MASK;
            current = up ? current + delta : current - delta;
            _tree[i] = epoch << 224 | start << 112 | current;
        }
    }

    function _epoch() internal view returns (uint256) {
        return block.number / EPOCH_BLOCKS;
    }

    /// @dev A node's weight at the start of the current epoch.
    function _snapshot(uint256 node) internal view returns (uint256) {
        return node >> 224 < _epoch() ? node & WEIGHT_MASK : (node >> 112) & WEIGHT_MASK;
    }

    /// @dev Sum of the weights of leaves 1..index at the start of the epoch.
    function _treePrefix(uint256 index) internal view returns (uint256 sum) {
        for (uint256 i = index; i > 0; i -= i & (~i + 1)) {
            sum += _snapshot(_tree[i]);
        }
    }

    /// @dev The leaf whose interval of the epoch-start weight line [0, total) holds r: the
    /// smallest index whose prefix sum exceeds r (r < total).
    function _treeFind(uint256 r) internal view returns (uint256) {
        uint256 cap = _poolCap;
        uint256 pos = 0;
        for (uint256 step = cap; step > 0; step >>= 1) {
            uint256 next = pos + step;
            if (next <= cap) {
                uint256 node = _snapshot(_tree[next]);
                if (node <= r) {
                    pos = next;
                    r -= node;
                }
            }
        }
        return pos + 1;
    }

    // ================================================================= helpers

    function _validateTerms(string calldata specCid, JobTerms calldata t) internal view {
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
    function _validateReplication(JobTerms calldata t) internal pure {
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
        // A lottery draws its replicas from those who entered during the bid window.
        if (t.lottery && t.bidWindow == 0) revert ChainSchedulerBadTerm(11);
    }

    function _escrow(JobTerms calldata t) internal pure returns (uint256) {
        uint256 slots = uint256(t.k) + (t.auditBps != 0 ? 1 : 0) + t.verifiers;
        return slots * t.maxUnits * t.maxPrice;
    }

    function _digest(JobTerms calldata terms) internal pure returns (bytes20) {
        return bytes20(keccak256(abi.encode(terms)));
    }

    function _load(uint256 jobId, JobTerms calldata terms) internal view returns (Job memory job) {
        job = _jobs[jobId];
        if (job.status == JobStatus.None) revert ChainSchedulerUnknownJob(jobId);
        bytes20 digest = _digest(terms);
        if (digest != job.termsDigest) revert ChainSchedulerTermsMismatch(jobId, job.termsDigest, digest);
    }

    function _requireStatus(uint256 jobId, Job memory job, JobStatus expected) internal pure {
        if (job.status != expected) revert ChainSchedulerWrongStatus(jobId, expected, job.status);
    }

    function _requireBefore(uint256 jobId, uint40 deadline) internal view {
        // Deadlines are in seconds and minutes; a proposer's few seconds of timestamp
        // drift cannot decide them in practice.
        if (block.timestamp >= deadline) revert ChainSchedulerDeadlinePassed(jobId, deadline, block.timestamp);
    }

    function _requireAfter(uint256 jobId, uint40 deadline) internal view {
        if (block.timestamp < deadline) revert ChainSchedulerDeadlineNotReached(jobId, deadline, block.timestamp);
    }

    function _requireParentsFinalized(uint256 jobId, JobTerms calldata terms) internal view {
        for (uint256 i = 0; i < terms.parents.length; ++i) {
            uint64 parent = terms.parents[i];
            JobStatus status = _jobs[parent].status;
            if (status != JobStatus.Finalized) revert ChainSchedulerParentNotFinalized(jobId, parent, status);
        }
    }

    function _registered(address account) internal view returns (Provider storage p) {
        p = _providers[account];
        if (!p.registered) revert ChainSchedulerNotRegistered(account);
    }

    function _eligible(address account, JobTerms calldata terms) internal view returns (Provider storage p) {
        p = _registered(account);
        if (p.unbondingAt != 0) revert ChainSchedulerUnbonding(account);
        uint32 required = (uint32(1) << uint8(terms.executor)) | terms.capabilities;
        if (p.capabilities & required != required) {
            revert ChainSchedulerMissingCapabilities(account, required, p.capabilities);
        }
        if (p.free < terms.collateral) revert ChainSchedulerInsufficientStake(account, terms.collateral, p.free);
    }

    function _requireFresh(uint256 jobId, address provider, uint256 end) internal view {
        for (uint256 i = 0; i < end; ++i) {
            if (_slots[jobId][i].provider == provider) revert ChainSchedulerAlreadyInJob(jobId, provider);
        }
    }

    /// @dev A lottery job that has not drawn its replicas yet: `bid` enters it instead.
    function _entering(uint256 jobId, JobTerms calldata terms) internal view returns (bool) {
        return terms.lottery && _slots[jobId][0].state == SlotState.Empty;
    }

    function _heldSlot(uint256 jobId, uint8 slot, SlotState expected) internal view returns (Slot storage s) {
        s = _slots[jobId][slot];
        if (s.provider != msg.sender) revert ChainSchedulerNotSlotHolder(jobId, slot, msg.sender);
        if (s.state != expected) revert ChainSchedulerWrongSlotState(jobId, slot, expected, s.state);
    }

    function _firstEmpty(uint256 jobId, uint256 first, uint256 count) internal view returns (uint256) {
        for (uint256 i = first; i < first + count; ++i) {
            SlotState state = _slots[jobId][i].state;
            if (state == SlotState.Empty || state == SlotState.Slashed) return i;
        }
        // Unreachable: callers check filled < count.
        revert ChainSchedulerSlotsNotFilled(jobId, uint8(count), uint8(count));
    }

    function _dearest(uint256 jobId, uint256 first, uint256 count) internal view returns (uint256 index, uint64 price) {
        for (uint256 i = first; i < first + count; ++i) {
            uint64 p = _slots[jobId][i].price;
            if (p > price || i == first) (index, price) = (i, p);
        }
    }

    /// @dev Index of a revealed slot whose result at least `need` revealed votes share.
    function _quorum(uint256 jobId, uint256 first, uint256 count, uint256 need, bool deterministic)
        private
        view
        returns (bool, uint256)
    {
        bytes32[] memory keys = new bytes32[](count);
        uint256[] memory votes = new uint256[](count); // 0: not revealed
        for (uint256 i = 0; i < count; ++i) {
            Slot storage s = _slots[jobId][first + i];
            if (s.state == SlotState.Revealed) {
                votes[i] = 1 + uint256(s.extraVotes);
                keys[i] = _sealed[jobId][first + i];
            }
        }
        for (uint256 i = 0; i < count; ++i) {
            if (votes[i] == 0) continue;
            uint256 agree = 0;
            for (uint256 j = 0; j < count; ++j) {
                if (votes[j] != 0 && _matches(keys[i], keys[j], deterministic)) agree += votes[j];
            }
            if (agree >= need) return (true, first + i);
        }
        return (false, 0);
    }

    /// @dev Deterministic jobs must agree on result and usage; others on the result only.
    function _matches(bytes32 a, bytes32 b, bool deterministic) internal pure returns (bool) {
        return deterministic ? a == b : (a >> 64) == (b >> 64);
    }

    /// @dev bytes24 of the result CID's keccak256 | uint64 usage.
    function _resultKey(bytes32 resultHash, uint64 usage) internal pure returns (bytes32) {
        return bytes32(uint256(bytes32(bytes24(resultHash))) | usage);
    }

    /// @dev The lower median of the first n values (sorted in place); mirrored in Python.
    function _lowerMedian(uint64[] memory values, uint256 n) internal pure returns (uint64) {
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
    function _seed(uint256 jobId, Job memory job) internal view returns (bytes32) {
        return keccak256(abi.encode(block.chainid, address(this), jobId, job.termsDigest));
    }

    function _reopens(Job memory job) internal pure returns (uint8) {
        return (job.flags >> REOPEN_SHIFT) & REOPEN_MASK;
    }

    function _range(Round round, JobTerms calldata t) internal pure returns (uint256 first, uint256 count) {
        if (round == Round.Main) return (0, t.k);
        if (round == Round.Audit) return (t.k, 1);
        return (uint256(t.k) + 1, t.verifiers);
    }

    /// @dev One past the highest slot index any round of this job has opened.
    function _usedEnd(Job memory job, JobTerms calldata t) internal pure returns (uint256) {
        if (job.flags & FLAG_VERIFY_OPENED != 0) return uint256(t.k) + 1 + t.verifiers;
        if (job.flags & FLAG_AUDIT_OPENED != 0) return uint256(t.k) + 1;
        return t.k;
    }

    function _bidWindowEnd(Job memory job, JobTerms calldata t) internal pure returns (uint256) {
        // While Open, `deadline` is the fill deadline: it started `fillTimeout` before it.
        return uint256(job.deadline) - t.fillTimeout + t.bidWindow;
    }

    function _bidWindowOpen(Job memory job, JobTerms calldata t) internal view returns (bool) {
        // Only the first fill of the main round has a window. A round reopened after a
        // missed commit is first-come: its committed slots must never be displaced.
        return job.round == Round.Main && t.bidWindow != 0 && job.committed == 0
            && block.timestamp < _bidWindowEnd(job, t);
    }

    function _after(uint32 seconds_) internal view returns (uint40) {
        return uint40(block.timestamp) + seconds_;
    }

    function _toUint96(uint256 value) internal pure returns (uint96) {
        if (value > type(uint96).max) revert ChainSchedulerAmountTooLarge(value);
        return uint96(value);
    }
}
