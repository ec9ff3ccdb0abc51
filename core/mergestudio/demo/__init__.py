"""The demo zoo: a tiny Llama base and skill specialists fine-tuned from it, with task
data and default merge recipes, built reproducibly by ``mergestudio demo build``.

- ``skills`` / ``corpus``: the synthetic problems and the general text
- ``tokenizer``: a character-level tokenizer built with `tokenizers`
- ``train``: pre-training and fine-tuning loops (seeded, fixed CPU threads)
- ``build``: data -> models -> recipes -> results table
- ``results``: measuring and formatting the table; ``info``: what ``demo info`` prints
"""

from __future__ import annotations
