"""Stopping a long job from outside: `kill` (SIGTERM) reads as Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def sigterm_as_sigint(received: list[int]) -> Iterator[None]:
    """SIGTERM stops a long job as Ctrl-C does (a search: Tune stops its trials and saves its
    state on SIGINT; a study: its runs in flight stop at their last epoch). A search enters it
    after Ray starts, as `ray.init` installs a SIGTERM handler of its own."""

    def on_term(signum: int, frame: Any) -> None:
        received.append(signum)
        if callable(signal.getsignal(signal.SIGINT)):  # Python's Ctrl-C handler, or Tune's
            signal.raise_signal(signal.SIGINT)
        else:
            # No Python handler: SIGINT ignored (a script's background job, `cmd &`, inherits
            # that), where raising it would do nothing while the job trains on, or left to the
            # OS, where it would kill the process before any cleanup.
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        # Ray's handler is native code, which Python cannot put back: the default then.
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
