"""The one vocabulary of trial statuses, used by the terminal, the report, Optuna and exports.

A trial that has ended is `finished` (ran its full budget), `stopped early` (the scheduler
stopped it), `diverged` (NaN loss) or `errored` (raised, and its retries ran out). A search
that was interrupted leaves the trials that had done an epoch `interrupted` and the others
`pending`; `--resume` continues both. `running` is only ever said of a search still going.
"""

from __future__ import annotations

FINISHED = "finished"
STOPPED = "stopped early"
DIVERGED = "diverged"
ERRORED = "errored"
INTERRUPTED = "interrupted"
PENDING = "pending"
RUNNING = "running"

ENDED = (FINISHED, STOPPED, DIVERGED, ERRORED)
STATUSES = (*ENDED, INTERRUPTED, PENDING, RUNNING)


def ended_status(epochs: int, max_epochs: int, *, diverged: bool = False) -> str:
    """How a trial that returned (or was stopped) ended: by its last result."""
    if diverged:
        return DIVERGED
    return FINISHED if epochs >= max_epochs else STOPPED


def tune_status(
    state: str, epochs: int, max_epochs: int, *, diverged: bool, search_ended: bool
) -> str:
    """A Ray Tune trial state (PENDING, RUNNING, PAUSED, TERMINATED, ERROR) in our words."""
    if state == "ERROR":
        return ERRORED
    if state == "TERMINATED":
        return ended_status(epochs, max_epochs, diverged=diverged)
    if state == "PENDING" and epochs == 0:
        return PENDING
    # Started (or restarted after a crash) and not ended.
    return INTERRUPTED if search_ended else RUNNING
