"""The generation panel's job: load (or merge in memory) each column's model, then stream
the same prompt through all of them, one token of each in turn. Tokens leave as signals
carrying plain strings; the panel draws them on a timer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Signal

from mergestudio_qt.jobs import Job

if TYPE_CHECKING:
    from mergestudio.evaluate.generate import Generation, LoadedModels, SamplingOptions, Token


@dataclass(frozen=True)
class Column:
    """One model to generate from: its label over the column and what it is (a model
    folder, or a recipe dict merged in memory)."""

    label: str
    reference: str | dict[str, Any]

    @property
    def in_memory(self) -> bool:
        return isinstance(self.reference, dict)


def generation_threads(preferred: int) -> int:
    """Torch threads for generating in the window: the preference when set; otherwise
    every core but one, so the GUI thread always finds a free core while tokens stream."""
    return preferred if preferred > 0 else max(1, (os.cpu_count() or 2) - 1)


class GenerateJob(Job):
    """``token(column, text)`` for each new piece of text, ``loading(column)`` before a
    column's model is loaded or merged, and ``results(list[Generation])`` once every
    stream has ended, also when stopped (the stop reason says so)."""

    token = Signal(int, str)
    loading = Signal(int)
    results = Signal(object)

    def __init__(
        self,
        models: LoadedModels,
        columns: Sequence[Column],
        prompt: str,
        options: SamplingOptions,
        threads: int,
    ) -> None:
        super().__init__()
        self.models = models
        self.columns = list(columns)
        self.prompt = prompt
        self.options = options
        self.threads = threads

    def work(self) -> list[Generation]:
        from mergestudio.engine.device import torch_threads
        from mergestudio.evaluate.generate import generate_side_by_side
        from mergestudio.evaluate.lm import quiet_transformers

        quiet_transformers()
        with torch_threads(self.threads):
            lms = []
            for index, column in enumerate(self.columns):
                self.cancel_token.raise_if_cancelled()
                self.loading.emit(index)
                lms.append(self.models.model(column.reference, self.cancel_token))
            generations = generate_side_by_side(lms, self.prompt, self.options, self._relay, self.cancel_token)
        self.results.emit(generations)
        return generations

    def _relay(self, index: int, token: Token) -> None:
        if token.text:
            self.token.emit(index, token.text)
