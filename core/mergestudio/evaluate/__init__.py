"""Evaluation: fitness of a causal language model on JSONL tasks.

- ``tasks``: reading and validating task files (multiple choice, generation, perplexity)
- ``metrics``: pure metric arithmetic
- ``lm``: a loaded model answering log-likelihood, generation and perplexity queries
- ``evaluator``: running tasks and keeping every item's result
- ``resident``: one loaded model whose weights are overwritten per merge candidate

Importing this package does not import torch or transformers; they load on first use.
"""

from __future__ import annotations

from mergestudio.evaluate.evaluator import evaluate_path, evaluate_tasks
from mergestudio.evaluate.lm import CausalLM, ModelLoadError
from mergestudio.evaluate.results import EvalReport, ItemResult, TaskResult
from mergestudio.evaluate.tasks import (
    ChoiceItem,
    GenerationItem,
    GenerationOptions,
    Task,
    TaskFormatError,
    TextItem,
    load_task,
    write_task,
)

__all__ = [
    "CausalLM",
    "ChoiceItem",
    "EvalReport",
    "GenerationItem",
    "GenerationOptions",
    "ItemResult",
    "ModelLoadError",
    "Task",
    "TaskFormatError",
    "TaskResult",
    "TextItem",
    "evaluate_path",
    "evaluate_tasks",
    "load_task",
    "write_task",
]
