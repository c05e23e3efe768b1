"""An answer streamed piece by piece, with its citations mapped once the reply is complete."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from collections.abc import Generator as Gen

from rag.answer.generation import build_answer, may_say_not_found, says_not_found
from rag.answer.prompts import answer_messages, language_of
from rag.types import Answer, Generator, Hit


class AnswerStream:
    """Iterable of text pieces; the ``Answer`` (with citations mapped to sources) is ready once exhausted.

    When the shortened (compressed) prompt gets NOT_FOUND, the question is asked again over the whole passages
    before the user is told there is no answer: what compression cut may be what the answer needed, and that second
    prompt costs time only where the first found nothing. A reply that is only NOT_FOUND is streamed as the
    plain no-answer sentence in the question's language."""

    def __init__(self, question: str, hits: list[Hit], generator: Generator, max_new_tokens: int, check: bool = True,
                 language: str | None = None, shown: list[Hit] | None = None, embedder=None) -> None:
        """``shown``: the passages as the prompt gives them (compressed); citations still map to ``hits``.
        ``embedder``: the store's, for the citation check across languages."""
        self.question, self.hits, self._generator, self._max, self._check = (
            question,
            hits,
            generator,
            max_new_tokens,
            check,
        )
        self.language = language or language_of(question)
        self._embedder = embedder
        self.shown = hits if shown is None else shown
        self.reply = ""  # the model's own words, once exhausted
        self.asked_again = False  # whether the shortened prompt's NOT_FOUND was asked again over the whole passages
        self.answer: Answer | None = None
        self.on_done: Callable[[Answer], None] | None = None  # e.g. a conversation recording the turn

    @property
    def max_new_tokens(self) -> int:
        return self._max

    def messages(self) -> list[dict]:
        return answer_messages(self.question, self.shown, self.language)

    def __iter__(self) -> Iterator[str]:
        streamed = False  # whether any of the model's words reached the reader
        if self.hits and self.shown:
            self.reply, streamed = yield from self._generate()
            if not streamed and says_not_found(self.reply) and self.shown != self.hits:
                self.shown, self.asked_again = self.hits, True
                self.reply, streamed = yield from self._generate()
        self.answer = build_answer(self.question, self.reply, self.hits, self._check, self.language, self._embedder)
        if not streamed:
            yield self.answer.text  # the no-answer sentence
        if self.on_done is not None:
            self.on_done(self.answer)

    def _generate(self) -> Gen[str, None, tuple[str, bool]]:
        """Stream the reply to ``messages()``, holding it back while it may still be only NOT_FOUND; return the reply
        and whether any of it was streamed."""
        parts: list[str] = []
        streamed = False
        for piece in self._generator.stream(self.messages(), self._max):
            parts.append(piece)
            if streamed:
                yield piece
            elif not may_say_not_found("".join(parts)):
                streamed = True
                yield "".join(parts)
        reply = "".join(parts)
        if not streamed and reply.strip() and not says_not_found(reply):
            streamed = True
            yield reply  # cut short while it still looked like NOT_FOUND
        return reply, streamed
