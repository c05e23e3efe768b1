"""The llama-cpp-python state this project reads and writes beyond its documented API, in one place.

Scoring continuations without decoding (the LLM judge) and starting a context from a saved prompt state need the
count of evaluated tokens, the token buffer and the "must decode before sampling" flag, which the library keeps as
plain attributes of ``Llama`` (checked with llama-cpp-python 0.3.36, the pinned version). Everything else goes
through the public ``Llama`` methods and the C API (``llama_get_logits``, ``llama_state_*``). ``check`` fails loudly,
naming what is missing, when another version has moved these; ``tests/test_llama_cpp.py`` runs it on a real model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexes.errors import RagError

ATTRIBUTES = ("n_tokens", "input_ids", "_requires_eval", "ctx")


def check(llm) -> None:
    """Raise if ``llm`` (a loaded ``llama_cpp.Llama``) lacks the state this module relies on."""
    missing = [name for name in ATTRIBUTES if not hasattr(llm, name)]
    if missing:
        import llama_cpp

        raise RagError(f"llama-cpp-python {llama_cpp.__version__} has no Llama.{', Llama.'.join(missing)}, which "
                       "rag.llm.llama_internals relies on: install the pinned version (pip install "
                       "'llama-cpp-python==0.3.36')")


def evaluated_tokens(llm) -> Sequence[int]:
    """The tokens whose keys and values the context holds, in order."""
    return llm.input_ids[: llm.n_tokens]


def keep_tokens(llm, n: int) -> None:
    """Cut the context back to its first ``n`` tokens: the next ``eval`` continues from there."""
    llm.n_tokens = n


def restored(llm, tokens: Sequence[int]) -> None:
    """Record that the context now holds ``tokens`` (its state was set from a file): the next call reads on from
    there, since the logits are not those of a live decode."""
    llm.input_ids[: len(tokens)] = tokens
    llm.n_tokens = len(tokens)
    llm._requires_eval = True


def last_logits(llm) -> np.ndarray:
    """The logits after the last evaluated token, as float64."""
    import llama_cpp

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),)).astype(np.float64)
