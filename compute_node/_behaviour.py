"""How a provider node behaves: honestly, or as one of the cheats the devnet shows being caught.

Only :attr:`Behaviour.HONEST` belongs outside a devnet. The others exist so tests
and the demo can show every kind of cheater slashed while the client still gets
the right answer.
"""

from __future__ import annotations

import enum

__all__ = ["Behaviour"]


class Behaviour(enum.StrEnum):
    """A provider's conduct (``compute-node run --behaviour``).

    The job runner handles ``HONEST``, ``LAZY`` and ``WRONG``; the daemon handles
    ``COPYCAT``, ``SILENT`` and ``SLOW``, for which the runner runs the job honestly.

    Attributes:
        HONEST: Run the job and report what it produced and cost.
        LAZY: Skip the work: report a made-up result and a small made-up usage.
        WRONG: Run the job, then alter one byte of one output before storing it.
        COPYCAT: Try to reuse a result another provider revealed (daemon).
        SILENT: Commit, then never reveal (daemon).
        SLOW: Miss the commit deadline (daemon).
    """

    HONEST = "honest"
    LAZY = "lazy"
    WRONG = "wrong"
    COPYCAT = "copycat"
    SILENT = "silent"
    SLOW = "slow"
