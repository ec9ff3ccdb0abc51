"""Vocabulary alignment: from tokenizer files alone, the output vocabulary of a merge
and, for every input, which of its embedding rows lands on which output row. The plan
carries the result, so a dry run reports tokenizer problems before a tensor is read."""

from mergestudio.vocab.align import RowMap, VocabPlan, plan_vocabulary
from mergestudio.vocab.tokenizer_files import TokenizerFiles, read_tokenizer

__all__ = ["RowMap", "TokenizerFiles", "VocabPlan", "plan_vocabulary", "read_tokenizer"]
