"""The LLM gate: a few generations at once, a bounded queue behind them, and ``Busy`` (HTTP 429) past it.

Each admitted answer holds a ``Slot`` until its stream ends, fails, is closed by a client that went away, or is
dropped; the slot is given back exactly once whichever comes first. A slot that makes no progress for
``stall_s`` is a stalled LLM: ``/readyz`` says so, and the watchdog closes a stream stuck on a client that stopped
reading (recovered), or ends the process for its supervisor when the LLM itself is stuck in native code.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


class Busy(Exception):
    """The LLM queue is full, or a queued request waited too long; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the LLM is busy answering other questions; retry in {retry_after} s")
        self.retry_after = retry_after


class Slot:
    """One admitted answer's hold on the LLM: ``tick()`` at each piece of progress, ``release()`` once (more calls
    are no-ops, from any thread)."""

    def __init__(self, gate: "LLMGate") -> None:
        self._gate = gate
        self.last_progress = time.monotonic()
        self.released = False
        # the streamed body that owns the slot, weakly: a body dropped by its server must still be collected (and so
        # give the slot back) although the gate keeps the slot
        self.stream: weakref.ref[ReleasingIterator] | None = None

    def tick(self) -> None:
        self.last_progress = time.monotonic()

    def idle_s(self) -> float:
        return time.monotonic() - self.last_progress

    def release(self) -> None:
        with self._gate._lock:
            if self.released:
                return
            self.released = True
            self._gate._held.discard(self)
        self._gate._slots.release()


class LLMGate:
    def __init__(self, slots: int = 1, queue: int = 8, wait_s: float = 120.0, stall_s: float = 300.0) -> None:
        self._slots = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self._waiting = 0
        self._held: set[Slot] = set()
        self._queue, self._wait_s, self.stall_s = queue, wait_s, stall_s

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._held)

    def acquire(self) -> Slot:
        """A slot now, or after waiting in the queue (at most ``wait_s``); ``Busy`` when the queue is full or the wait
        runs out."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self._queue:
                    raise Busy(retry_after=10)
                self._waiting += 1
            try:
                got = self._slots.acquire(timeout=self._wait_s)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not got:
                raise Busy(retry_after=30)
        slot = Slot(self)
        with self._lock:
            self._held.add(slot)
        return slot


    def stream(self, request, events):
        """``events`` as a server-sent event response holding one slot of this gate until it ends or the client goes."""
        return answer_stream(request, events, self.acquire())
    def stalled(self) -> list[Slot]:
        """The slots that made no progress for ``stall_s``."""
        with self._lock:
            return [s for s in self._held if s.idle_s() > self.stall_s]

    def recover(self, exit_process: Callable[[], None]) -> int:
        """Free every stalled slot that can be freed (a stream waiting on its client: closed, its LLM context given
        back); when a stalled slot is inside the LLM itself, nothing in the process can free it: ``exit_process``.
        Returns how many slots were recovered."""
        recovered = 0
        for slot in self.stalled():
            stream = slot.stream() if slot.stream is not None else None
            if stream is not None and stream.close_if_idle():
                log.warning(
                    "closed an answer stream that made no progress for %.0f s (its client stopped reading)",
                    slot.idle_s(),
                )
                recovered += 1
            elif not slot.released:
                log.critical(
                    "the LLM made no progress for %.0f s and cannot be freed: exiting so a supervisor restarts "
                    "the server",
                    slot.idle_s(),
                )
                exit_process()
                break
        return recovered


class ReleasingIterator:
    """Iterates a streamed body for one ``Slot``, ticking it at each item, and gives the slot back exactly once: when
    the body ends, fails, is closed, or is dropped unread (a client gone before the first byte keeps no slot).

    Safe across threads: a server pulls each item on whichever worker thread is free and may close the body from
    another; a close that arrives while an item is being made is carried out by the thread making it, as soon as
    that item is done (so the LLM is free within one token, and the body is never closed while it runs)."""

    def __init__(self, inner: Iterator, slot: Slot) -> None:
        self._inner, self._slot = inner, slot
        self._state = threading.Lock()
        self._running = self._close_asked = self._done = False
        slot.stream = weakref.ref(self)

    def __iter__(self) -> "ReleasingIterator":
        return self

    def __next__(self):
        with self._state:
            if self._done or self._close_asked:
                raise StopIteration
            self._running = True
        try:
            item = next(self._inner)
        except BaseException:
            self._finish()
            raise
        finally:
            with self._state:
                self._running = False
                close_now = self._close_asked
        if close_now:
            self._finish()
            raise StopIteration
        self._slot.tick()
        return item

    def close(self) -> None:
        """Close now, or, while an item is being made, as soon as it is done."""
        with self._state:
            if self._running:
                self._close_asked = True
                return
        self._finish()

    def close_if_idle(self) -> bool:
        """Close unless an item is being made right now; whether it closed."""
        with self._state:
            if self._running:
                return False
        self._finish()
        return True

    def _finish(self) -> None:
        with self._state:
            if self._done:
                return
            self._done = True
        try:
            self._inner.close()
        except Exception:  # a body that fails to close must still give its slot back
            log.exception("closing an answer stream failed")
        finally:
            self._slot.release()

    def __del__(self) -> None:
        self._finish()


_END = object()


def _next(iterator):
    return next(iterator, _END)


def answer_stream(request, events, slot: Slot):
    """A server-sent event response over ``events`` that frees the LLM slot as soon as the client goes away: the
    next token is not generated once a stop button closed the connection (the ASGI server does not tell a
    synchronous body iterator, so each token waits on a disconnect check first)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import StreamingResponse

    body = ReleasingIterator(events, slot)

    async def pull():
        try:
            while not await request.is_disconnected():
                item = await run_in_threadpool(_next, body)
                if item is _END:
                    return
                yield item
        finally:
            body.close()

    return StreamingResponse(
        pull(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
