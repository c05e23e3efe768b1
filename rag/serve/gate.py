"""The LLM gate: a few generations at once, a bounded queue behind them, and ``Busy`` (HTTP 429) past it."""

from __future__ import annotations

import threading


class Busy(Exception):
    """The LLM queue is full, or a queued request waited too long; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the LLM is busy answering other questions; retry in {retry_after} s")
        self.retry_after = retry_after


class LLMGate:
    def __init__(self, slots: int = 1, queue: int = 8, wait_s: float = 120.0) -> None:
        self._slots = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self._waiting = 0
        self._queue, self._wait_s = queue, wait_s
        self.active = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    def acquire(self) -> None:
        if self._slots.acquire(blocking=False):
            with self._lock:
                self.active += 1
            return
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
        with self._lock:
            self.active += 1

    def release(self) -> None:
        with self._lock:
            self.active -= 1
        self._slots.release()


class ReleasingIterator:
    """Iterates a streamed body and calls ``release`` exactly once: when it ends, is closed, or is dropped unread
    (a client that disconnects before the first byte must not keep an LLM slot)."""

    def __init__(self, inner, release) -> None:
        self._inner, self._release, self._done = inner, release, False

    def __iter__(self) -> "ReleasingIterator":
        return self

    def __next__(self):
        try:
            return next(self._inner)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if not self._done:
            self._done = True
            try:
                self._inner.close()
            finally:
                self._release()

    def __del__(self) -> None:
        self.close()


_END = object()


def _next(iterator):
    return next(iterator, _END)


def answer_stream(request, events, release):
    """A server-sent event response over ``events`` that frees the LLM slot as soon as the client goes away: the
    next token is not generated once a stop button closed the connection (the ASGI server does not tell a
    synchronous body iterator, so each token waits on a disconnect check first)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import StreamingResponse

    body = ReleasingIterator(events, release)

    async def pull():
        try:
            while not await request.is_disconnected():
                item = await run_in_threadpool(_next, body)
                if item is _END:
                    return
                yield item
        finally:
            body.close()

    return StreamingResponse(pull(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
