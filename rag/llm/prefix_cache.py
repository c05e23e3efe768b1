"""The llama.cpp state after a prompt's fixed opening (every message but the last), kept on disk.

On a CPU the first token waits for the whole prompt to be read, and a new process (a one-off ``rag ask``) would
read the same opening every time: the answer prompt's system message, about 95 tokens with the template (2 s on
2 cores), or a chat's rewrite prompt with its example turn. The KV cache of those tokens is saved once, a few MB,
and a fresh context starts from it; llama-cpp-python's own prefix match then reads only the rest. Within one
process the context keeps its last prompt, so this helps where the opening changed since: a new process, a chat
that rewrote a follow-up in between, the other language's system message.

Files are keyed by the tokens, the model file, the adapter and the llama.cpp build, and written atomically: a
crash leaves no half-written state, and a state that does not load is deleted and rebuilt.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from indexes.files import atomic_write, cache_dir
from rag.llm import llama_internals

log = logging.getLogger(__name__)

MIN_TOKENS = 32  # a shorter opening is read in under a second: not worth a file


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def state_path(model: Path, adapter: Path | None, tokens: Sequence[int]) -> Path:
    """Where the state after ``tokens`` lives for this model file, adapter and llama.cpp build."""
    import llama_cpp

    h = hashlib.sha256()
    for f in (model, adapter):
        if f is not None:
            st = f.stat()
            h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    h.update(llama_cpp.__version__.encode() + llama_cpp.llama_print_system_info())
    h.update(",".join(map(str, tokens)).encode())
    return cache_dir() / "llama-prefix" / f"{h.hexdigest()[:24]}.state"


def start_from_prefix(llm, tokens: Sequence[int], path: Path) -> bool:
    """Put ``llm`` (a fresh llama_cpp.Llama) in the state after ``tokens``: read from ``path`` when it is there,
    else evaluated now and saved there. Whether the state was read from disk."""
    import llama_cpp

    ctx = llm.ctx
    if path.is_file():
        data = path.read_bytes()
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_set_data(ctx, buf, len(data)) == len(data):
            llama_internals.restored(llm, tokens)
            return True
        log.warning("prompt state %s does not load: rebuilding it", path)
        path.unlink(missing_ok=True)
        llm.reset()
    llm.eval(list(tokens))
    size = llama_cpp.llama_state_get_size(ctx)
    buf = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_get_data(ctx, buf, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(bytes(buf)[:written]))
    return False
