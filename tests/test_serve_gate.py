"""The LLM gate and the streamed body that holds a slot: released exactly once whichever thread ends it, stalls
seen by readiness and recovered."""

from __future__ import annotations

import threading

import pytest

from rag.serve.gate import Busy, LLMGate, ReleasingIterator


def pieces(n: int, started: threading.Event | None = None, go: threading.Event | None = None, log: list | None = None):
    try:
        for i in range(n):
            if started is not None:
                started.set()
                go.wait(10)
            yield i
    finally:
        if log is not None:
            log.append("closed")


def test_a_slot_is_released_once_when_the_stream_ends_fails_or_is_closed():
    gate = LLMGate(slots=1, queue=0)
    body = ReleasingIterator(pieces(3), gate.acquire())
    assert list(body) == [0, 1, 2] and gate.active == 0
    body.close()  # again: nothing more to give back
    slot = gate.acquire()
    slot.release()
    slot.release()
    assert gate.active == 0 and gate.acquire() is not None  # one slot, not two

    def failing():
        yield 1
        raise RuntimeError("the model failed mid-answer")

    gate = LLMGate(slots=1, queue=0)
    body = ReleasingIterator(failing(), gate.acquire())
    assert next(body) == 1
    with pytest.raises(RuntimeError):
        next(body)
    assert gate.active == 0
    log: list[str] = []
    body = ReleasingIterator(pieces(5, log=log), gate.acquire())
    next(body)
    del body  # dropped unread by a client that went away
    assert gate.active == 0 and log == ["closed"]


def test_a_close_from_another_thread_while_a_piece_is_made_waits_for_that_piece():
    gate = LLMGate(slots=1, queue=0)
    started, go, log = threading.Event(), threading.Event(), []
    body = ReleasingIterator(pieces(100, started, go, log), gate.acquire())
    got: list = []
    worker = threading.Thread(target=lambda: got.extend(body))
    worker.start()
    assert started.wait(10)
    body.close()  # the stop button, on the event loop's thread, while a worker thread makes the next piece
    assert gate.active == 1 and log == []  # not closed under the running piece
    go.set()
    worker.join(10)
    assert not worker.is_alive() and gate.active == 0 and log == ["closed"] and len(got) <= 1


def test_a_full_queue_is_busy_and_a_stalled_slot_is_recovered_or_ends_the_process():
    gate = LLMGate(slots=1, queue=0, stall_s=0.0)
    body = ReleasingIterator(pieces(5), gate.acquire())
    next(body)
    with pytest.raises(Busy):
        gate.acquire()
    assert gate.stalled()  # a client that stopped reading: nothing pulls the next piece
    exits: list[str] = []
    assert gate.recover(lambda: exits.append("exit")) == 1 and gate.active == 0 and not exits

    started, go = threading.Event(), threading.Event()
    body = ReleasingIterator(pieces(5, started, go), gate.acquire())
    worker = threading.Thread(target=lambda: list(body))
    worker.start()
    assert started.wait(10)  # stuck inside the model: nothing in the process can free it
    assert gate.recover(lambda: exits.append("exit")) == 0 and exits == ["exit"]
    go.set()
    worker.join(10)
    assert gate.active == 0
