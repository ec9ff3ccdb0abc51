"""``mergestudio demo build``: generate the data, train the base and the specialists, write
the merge recipes, and measure the results table.

Layout of a zoo folder::

    models/base, models/<skill>     Hugging Face folders, fp16 safetensors + tokenizer
    tasks/<skill>.train.jsonl       fine-tuning split (generation items)
    tasks/<skill>.eval.jsonl        held-out evaluation split (exact match)
    tasks/general.eval.jsonl        held-out general text (perplexity)
    recipes/<method>.yml            the default merges of the table
    results.json                    the measured table and how the build ran

Everything derives from ``ZooConfig.seed``; training runs on a fixed number of CPU
threads, so the same machine and library versions give bit-identical files.
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mergestudio.demo import paths
from mergestudio.demo.corpus import sentences
from mergestudio.demo.recipes import DEFAULT_MERGE_NAMES, write_recipes
from mergestudio.demo.results import evaluate_zoo, json_safe, write_readme
from mergestudio.demo.skills import BASE_TASKS, COPY_TASKS, SKILLS, Example, unknown_command_line
from mergestudio.demo.tokenizer import save_tokenizer
from mergestudio.demo.train import ModelSpec, Schedule, finetune, make_model, pretrain, set_determinism
from mergestudio.evaluate.tasks import GenerationItem, GenerationOptions, TextItem, write_task

Log = Callable[[str], None]

# Answers are one character; the margin lets a wrong answer run a little long (and be marked
# wrong) without costing much time.
GENERATION = GenerationOptions(max_new_tokens=4, stop=("\n",), normalize=("strip",))


@dataclass(frozen=True)
class ZooConfig:
    """Everything that decides the zoo's contents."""

    seed: int = 0
    threads: int = 1
    skills: tuple[str, ...] = ("last", "cipher", "max", "symbol")
    model: ModelSpec = field(default_factory=ModelSpec)
    pretrain: Schedule = field(
        default_factory=lambda: Schedule(steps=1200, batch_size=32, lr=3e-3, warmup=100, weight_decay=0.01)
    )
    finetune: Schedule = field(default_factory=lambda: Schedule(steps=150, batch_size=64, lr=3e-4, warmup=20))
    # Skills that need another schedule than ``finetune``.
    finetune_by_skill: dict[str, Schedule] = field(
        default_factory=dict
    )
    base_sentences: int = 40_000  # general text
    base_task_lines: int = 10_000  # per operation the base follows (the skills' under their long names, BASE_TASKS)
    base_copy_lines: int = 5_000  # per copy task (letters, digits)
    base_unknown_lines: int = 10_000  # commands the base was not taught, answered "?"
    replay_rows: int = 16  # of every fine-tuning batch: lines of the base's corpus
    replay_lines: int = 5_000  # the pool they are drawn from
    train_items: int = 5_000  # per skill: the specialists' fine-tuning split
    dev_items: int = 200  # per skill: for searches and cheap fitness
    test_items: int = 200  # per skill: for the reported tables
    general_eval_texts: int = 200  # per split (dev and test)
    merges: tuple[str, ...] = DEFAULT_MERGE_NAMES

    def finetune_schedule(self, skill: str) -> Schedule:
        return self.finetune_by_skill.get(skill, self.finetune)

    @classmethod
    def miniature(cls) -> ZooConfig:
        """A zoo in seconds, for tests: same pipeline, toy sizes, a few steps."""
        return cls(
            skills=("last", "max", "cipher"),
            model=ModelSpec(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
            ),
            pretrain=Schedule(steps=4, batch_size=4, lr=1e-3, seq_len=32),
            finetune=Schedule(steps=3, batch_size=4, lr=1e-3),
            finetune_by_skill={"last": Schedule(steps=4, batch_size=4, lr=2e-3)},
            base_sentences=200,
            base_task_lines=50,
            base_copy_lines=20,
            base_unknown_lines=20,
            replay_rows=1,
            replay_lines=20,
            train_items=40,
            dev_items=8,
            test_items=8,
            general_eval_texts=5,
        )


# -- data ---------------------------------------------------------------------------------

SPLITS = ("train", "dev", "test")


@dataclass
class ZooData:
    """``items[split][skill]``: the instruction examples of each split. ``base_lines``:
    the pre-training corpus. ``general[split]``: held-out general text (dev, test)."""

    items: dict[str, dict[str, list[Example]]]
    base_lines: list[str]
    general: dict[str, list[str]]


def _distinct_inputs(
    draw: Callable[[random.Random], str], rng: random.Random, n: int, banned: set[str], skill: str
) -> list[str]:
    """``n`` distinct inputs from ``draw`` not in ``banned`` (adding them to it)."""
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise RuntimeError(f"skill {skill}: cannot find {n} distinct inputs")
        x = draw(rng)
        if x not in banned:
            banned.add(x)
            out.append(x)
    return out


def _inputs(draw: Callable[[random.Random], str], rng: random.Random, n: int, banned: set[str]) -> list[str]:
    """``n`` inputs from ``draw`` (repeats allowed) not in ``banned``."""
    out: list[str] = []
    while len(out) < n:
        x = draw(rng)
        if x not in banned:
            out.append(x)
    return out


def make_data(config: ZooConfig) -> ZooData:
    """All data of the zoo, from ``config.seed``.

    Test, then dev inputs are drawn first, distinct, and banned from the fine-tuning split
    and from the base's lines of the same operation. General-text dev/test sentences never
    occur in the pre-training corpus."""
    rng = random.Random(config.seed)
    skills = [SKILLS[name] for name in config.skills]
    held_out: dict[str, set[str]] = {s.name: set() for s in skills}
    items: dict[str, dict[str, list[Example]]] = {split: {} for split in SPLITS}
    for split, n in (("test", config.test_items), ("dev", config.dev_items)):
        for s in skills:
            inputs = _distinct_inputs(s.draw, rng, n, held_out[s.name], s.name)
            items[split][s.name] = [s.example(x) for x in inputs]
    for s in skills:
        items["train"][s.name] = [
            s.example(x) for x in _inputs(s.draw, rng, config.train_items, held_out[s.name])
        ]
    base_lines = sentences(rng, config.base_sentences)
    for s in skills:
        inputs = _inputs(s.draw, rng, config.base_task_lines, held_out[s.name])
        base_lines += [s.base_line(x) for x in inputs]
    for task in BASE_TASKS:
        base_lines += [task.base_line(x) for x in _inputs(task.draw, rng, config.base_task_lines, set())]
    for task in COPY_TASKS:
        base_lines += [task.example(x).text for x in _inputs(task.draw, rng, config.base_copy_lines, set())]
    # Every keyword of every skill, also those this build leaves out: none is ever "unknown".
    keywords = {t.keyword for t in (*SKILLS.values(), *BASE_TASKS, *COPY_TASKS)} | {s.base_keyword for s in SKILLS.values()}
    base_lines += [unknown_command_line(rng, keywords) for _ in range(config.base_unknown_lines)]
    seen = set(base_lines)
    general: dict[str, list[str]] = {}
    eval_rng = random.Random(config.seed + 1)
    for split in ("test", "dev"):
        general[split] = []
        while len(general[split]) < config.general_eval_texts:
            text = sentences(eval_rng, 1)[0]
            if text not in seen:
                seen.add(text)
                general[split].append(text)
    return ZooData(items, base_lines, general)


def write_tasks(folder: Path, data: ZooData) -> None:
    """``<skill>.{train,dev,test}.jsonl`` (exact-match generation items) and
    ``general.{dev,test}.jsonl`` (perplexity)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, by_skill in data.items.items():
        for skill, items in by_skill.items():
            write_task(
                paths.task_file(folder.parent, skill, split),
                [GenerationItem(f"{skill}-{split}-{i}", e.prompt, (e.answer,)) for i, e in enumerate(items)],
                name=skill,
                generation=GENERATION,
            )
    for split, texts in data.general.items():
        write_task(
            paths.task_file(folder.parent, "general", split),
            [TextItem(f"general-{split}-{i}", t) for i, t in enumerate(texts)],
            name="general",
        )


# -- models ---------------------------------------------------------------------------------


def _save_fp16(model: Any, tokenizer_dir: Path, folder: Path) -> None:
    """Save ``model`` as fp16 safetensors with the tokenizer files next to it. fp16 keeps
    3 more mantissa bits than bf16, which matters for small task vectors."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(str(folder), safe_serialization=True)
    model.to(torch.float32)
    for file in tokenizer_dir.iterdir():
        shutil.copy2(file, folder / file.name)


def _load_fp32(folder: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)


def train_zoo(staging: Path, config: ZooConfig, data: ZooData, log: Log) -> dict[str, float]:
    """Train the base and one specialist per skill into ``staging/models``. Returns the
    seconds spent per stage."""
    from transformers import AutoTokenizer

    timings: dict[str, float] = {}
    tokenizer_dir = staging / "tokenizer"
    save_tokenizer(tokenizer_dir, model_max_length=config.model.max_position_embeddings)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    models = paths.models_dir(staging)

    start = time.perf_counter()
    set_determinism(config.seed, config.threads)
    base = make_model(config.model, tokenizer, config.seed)
    log(f"base: {sum(p.numel() for p in base.parameters()):,} parameters, {len(data.base_lines):,} lines")
    pretrain(base, tokenizer, data.base_lines, config.pretrain, config.seed, log)
    _save_fp16(base, tokenizer_dir, models / "base")
    timings["pretrain_s"] = time.perf_counter() - start

    # The replay pool: a fixed sample of the base's own corpus, the same for every skill.
    replay = random.Random(config.seed + 2).sample(
        data.base_lines, min(config.replay_lines, len(data.base_lines))
    )
    for index, skill in enumerate(config.skills):
        start = time.perf_counter()
        set_determinism(config.seed + 100 + index, config.threads)
        # Start from the saved (fp16-rounded) base, so task vectors are exact differences
        # of the shipped files.
        model = _load_fp32(models / "base")
        pairs = [(e.prompt, e.answer) for e in data.items["train"][skill]]
        finetune(
            model,
            tokenizer,
            pairs,
            config.finetune_schedule(skill),
            config.seed + index,
            log,
            label=skill,
            replay=replay,
            replay_rows=config.replay_rows,
        )
        _save_fp16(model, tokenizer_dir, models / skill)
        timings[f"finetune_{skill}_s"] = time.perf_counter() - start
    shutil.rmtree(tokenizer_dir)
    return timings


# -- the whole build ------------------------------------------------------------------------


def build_zoo(
    out: Path,
    config: ZooConfig | None = None,
    log: Log = print,
    evaluate: bool = True,
    batch_size: int = 100,
) -> dict[str, Any]:
    """Build the zoo into ``out`` (replacing what a previous build wrote there) and, with
    ``evaluate``, measure the results table. Returns what results.json holds."""

    config = config or ZooConfig()
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".build"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()

    data = make_data(config)
    write_tasks(paths.tasks_dir(staging), data)
    timings = train_zoo(staging, config, data, log)

    for name in ("models", "tasks"):
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        (staging / name).rename(target)
    shutil.rmtree(staging)
    if paths.recipes_dir(out).exists():
        shutil.rmtree(paths.recipes_dir(out))
    write_recipes(out, config.skills, config.merges)
    timings["train_total_s"] = time.perf_counter() - started

    results: dict[str, Any] = {
        "config": _config_dict(config),
        "build": {"timings": timings, **_environment()},
        "rows": [],
    }
    if evaluate:
        start = time.perf_counter()
        rows = evaluate_zoo(out, config.skills, config.merges, batch_size=batch_size, log=log)
        results["rows"] = json_safe(rows)
        timings["evaluate_s"] = time.perf_counter() - start
    timings["total_s"] = time.perf_counter() - started
    paths.results_file(out).write_text(json.dumps(results, indent=1) + "\n")
    write_readme(out, results)
    log(f"built {out} in {timings['total_s']:.0f}s")
    return results


def remeasure_zoo(out: Path, config: ZooConfig, log: Log = print, batch_size: int = 100) -> dict[str, Any]:
    """Rewrite the default recipes of ``config.merges`` and measure the table again for
    the models already in ``out`` (after a change to the default merges; the models and
    their build record stay as they are). Returns what results.json then holds."""
    from mergestudio.demo.info import load_results

    results = load_results(out)
    if results is None:
        raise FileNotFoundError(f"{paths.results_file(out)}: no build record; run a full build first")
    if tuple(results["config"]["skills"]) != config.skills:
        raise ValueError(f"{out}: built for skills {results['config']['skills']}, not {list(config.skills)}")
    if paths.recipes_dir(out).exists():
        shutil.rmtree(paths.recipes_dir(out))
    write_recipes(out, config.skills, config.merges)
    start = time.perf_counter()
    rows = evaluate_zoo(out, config.skills, config.merges, batch_size=batch_size, log=log)
    results["rows"] = json_safe(rows)
    results["config"]["merges"] = list(config.merges)
    results["build"]["timings"]["evaluate_s"] = time.perf_counter() - start
    paths.results_file(out).write_text(json.dumps(results, indent=1) + "\n")
    write_readme(out, results)
    return results


def _config_dict(config: ZooConfig) -> dict[str, Any]:
    return asdict(config)


def _environment() -> dict[str, Any]:
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def with_steps(config: ZooConfig, pretrain_steps: int, finetune_steps: int) -> ZooConfig:
    """A copy with other step counts (for quick experiments from the CLI)."""
    return replace(
        config,
        pretrain=replace(config.pretrain, steps=pretrain_steps),
        finetune=replace(config.finetune, steps=finetune_steps),
    )
