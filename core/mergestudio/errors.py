"""Errors the engine raises. Every message names the file, tensor or key at fault."""

from __future__ import annotations


class MergeStudioError(Exception):
    """Base class: an error a user can act on. The CLI prints it without a traceback."""


class SourceError(MergeStudioError):
    """A model reference could not be resolved or its files are unreadable."""


class RecipeError(MergeStudioError):
    """A recipe is malformed or names something unknown."""


class PlanError(MergeStudioError):
    """The models of a recipe cannot be merged as asked (shapes, missing tensors)."""


class MergeError(MergeStudioError):
    """A merge failed while running."""


class Cancelled(MergeStudioError):
    """A job stopped because its cancel token was set."""


class ExportError(MergeStudioError):
    """A model cannot be exported (GGUF, Hub upload): unsupported family, bad tokenizer,
    the Hub refused."""
