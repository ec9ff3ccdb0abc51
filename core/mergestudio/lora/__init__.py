"""LoRA outputs: adapters written as PEFT folders, extracted from fine-tunes or merged
from other adapters. Reading adapters as inputs lives in ``io.adapters``."""
