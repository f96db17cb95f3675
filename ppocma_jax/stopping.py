"""Stopping a run on request: SIGINT (Ctrl-C) and SIGTERM (a scheduler, `kill`) end it cleanly.

The first signal during training only sets a flag: the loop ends at the next boundary (the end of the compiled
chunk that is running: one iteration, see compiled_train.CHUNK; one iteration of a gymnasium run), saves a
checkpoint of the state reached and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). Why the
chunk end: the chunk is one compiled program, and asking the host whether to stop inside it would be a host
round-trip inside the compiled loop.

A second signal (or one before training started, when there is nothing to save yet) raises `Interrupted` at once:
an in-flight checkpoint write is abandoned (checkpoint.Checkpointer keeps the previous ones intact) and the run
directory resumes from its newest checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Stop now (a second SIGINT / SIGTERM). A BaseException, like KeyboardInterrupt: `except Exception` blocks do
    not swallow it, and Checkpointer.save abandons its write on it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopRequests:
    """Context manager owning SIGINT / SIGTERM while a run is active (main thread only; elsewhere a no-op).

    `deferring` False (setup, compiling): a signal raises Interrupted at once. True (the training loop): the first
    signal sets `signum` and calls `on_first(signum)` (one line to the user); a second raises Interrupted."""

    def __init__(self, on_first: Callable[[int], None] | None = None):
        self.on_first = on_first
        self.deferring = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.deferring and self.signum is None:
            self.signum = signum
            if self.on_first is not None:
                self.on_first(signum)
            return
        self.signum = signum
        raise Interrupted(signum)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def announce_stop(signum: int, boundary: str) -> None:
    """The first signal's line: what happens next, and how to stop at once."""
    start = "\n" if sys.stderr.isatty() else ""  # after the terminal's ^C
    print(f"{start}{signal_name(signum)}: stopping at {boundary} and saving a checkpoint (send it again to stop at "
          "once, keeping the previous checkpoint)", file=sys.stderr, flush=True)


class Background:
    """`work()` on a daemon thread, started at once; `result()` waits for it and returns its value or re-raises its
    error. The wait goes in slices, so that a signal handler's exception reaches a waiting main thread at once (a
    compiled call blocks in C++, where no Python signal handler runs); on such an exception the worker is left to
    finish on its own, and the caller is expected to exit."""

    def __init__(self, work: Callable[[], object], name: str):
        self._done = threading.Event()
        self._box: dict[str, object] = {}
        self._t0 = time.perf_counter()
        self.seconds: float | None = None  # wall seconds from the start to the value (or error), once done
        self._thread = threading.Thread(target=self._target, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _target(self, work: Callable[[], object]) -> None:
        try:
            self._box["value"] = work()
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            self._box["error"] = err
        finally:
            self.seconds = time.perf_counter() - self._t0
            self._done.set()

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the work to end (no result, no error)."""
        self._done.wait(timeout)

    def result(self) -> object:
        while not self._done.wait(0.2):
            pass
        if "error" in self._box:
            raise self._box["error"]  # type: ignore[misc]
        return self._box["value"]


def wait_interruptibly(work: Callable[[], object]) -> object:
    """`work()` (a compiled call that blocks in C++) run in a worker thread and waited for so that a signal
    handler's exception reaches the caller at once (see Background)."""
    return Background(work, "compiled-chunk").result()
