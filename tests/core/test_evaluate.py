"""Evaluation: task files, metrics, and the model queries, checked against a hand-built
bigram Llama whose log-likelihoods and generations are computed independently here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from mergestudio.errors import Cancelled
from mergestudio.evaluate import (
    CausalLM,
    ChoiceItem,
    EvalReport,
    GenerationItem,
    GenerationOptions,
    TaskFormatError,
    TextItem,
    evaluate_tasks,
    load_task,
    metrics,
    write_task,
)
from mergestudio.evaluate.lm import _windows
from mergestudio.evaluate.tasks import parse_task_lines
from mergestudio.events import CancelToken, Progress

from .evalfixtures import log_softmax_row, write_bigram_model

# a -> b -> c -> </s>; x -> newline; <s> -> a.  Everything else: uniform.
SUCCESSORS = {"<s>": "a", "a": "b", "b": "c", "c": "</s>", "x": "\n", "q": "a"}


@pytest.fixture(scope="module")
def bigram(tmp_path_factory: pytest.TempPathFactory) -> tuple[CausalLM, torch.Tensor]:
    folder = tmp_path_factory.mktemp("bigram")
    table = write_bigram_model(folder, SUCCESSORS, max_len=16)
    return CausalLM.load(folder, device="cpu"), table


def _expected_logprob(lm: CausalLM, table: torch.Tensor, context_last: str, continuation: str) -> float:
    """Sum of bigram log-probabilities, token by token, computed from the table."""
    tok = lm.tokenizer
    prev = tok.convert_tokens_to_ids(context_last)
    total = 0.0
    for ch in continuation:
        cur = tok.convert_tokens_to_ids(ch)
        total += float(log_softmax_row(table, prev)[cur])
        prev = cur
    return total


def _lines(*objs: object) -> list[str]:
    return [json.dumps(o) for o in objs]


# -- task files ------------------------------------------------------------------------


def test_each_kind_is_read_from_its_keys(tmp_path: Path) -> None:
    mc = parse_task_lines(_lines({"prompt": "p", "choices": ["a", "b"], "answer": "b"}), "f", "mc")
    assert mc.kind == "multiple_choice"
    assert mc.items == (ChoiceItem("0", "p", ("a", "b"), 1),)
    gen = parse_task_lines(_lines({"id": "k", "prompt": "p", "target": ["x", "y"]}), "f", "g")
    assert gen.kind == "generation" and gen.items == (GenerationItem("k", "p", ("x", "y")),)
    ppl = parse_task_lines(_lines({"text": "hello"}), "f", "t")
    assert ppl.kind == "perplexity" and ppl.items == (TextItem("0", "hello"),)


def test_header_sets_name_and_generation_options() -> None:
    task = parse_task_lines(
        _lines(
            {"task": {"name": "sums", "max_new_tokens": 5, "stop": [";"], "normalize": ["lower"]}},
            {"prompt": "1+1=", "target": "2"},
        ),
        "f",
        "default",
    )
    assert task.name == "sums"
    assert task.generation == GenerationOptions(max_new_tokens=5, stop=(";",), normalize=("lower",))


@pytest.mark.parametrize(
    ("lines", "line_no", "fragment"),
    [
        (['{"prompt": "a", "target": "b"}', "{not json"], 2, "not valid JSON"),
        (['{"prompt": "a", "target": "b", "extra": 1}'], 1, "unknown key 'extra'"),
        (['{"prompt": "a", "target": "b"}', '{"text": "t"}'], 2, "one kind per file"),
        (['{"prompt": "a", "choices": ["x", "y"], "answer": 2}'], 1, "out of range"),
        (['{"prompt": "a", "choices": ["x"], "answer": 0}'], 1, "at least two"),
        (['{"prompt": "a", "choices": ["x", "y"], "answer": "z"}'], 1, "not one of the choices"),
        (['{"id": 1, "text": "t"}', "", '{"id": 1, "text": "u"}'], 3, "duplicate id"),
        (['{"text": "t"}', '{"task": {"name": "n"}}'], 2, "first line"),
        (['{"task": {"stop": "x"}}', '{"text": "t"}'], 1, "task.stop"),
        (['{"task": {"normalize": ["upper"]}}', '{"text": "t"}'], 1, "unknown normalisation 'upper'"),
        (['{"task": {"colour": 1}}'], 1, "task.colour"),
        (['{"prompt": "a"}'], 1, "cannot tell the item kind"),
        (["[1, 2]"], 1, "expected a JSON object"),
        (['{"prompt": 3, "target": "b"}'], 1, "'prompt' must be a string"),
    ],
)
def test_malformed_lines_name_file_and_line(
    tmp_path: Path, lines: list[str], line_no: int, fragment: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskFormatError) as info:
        load_task(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_no}: "), message
    assert fragment in message


def test_empty_and_missing_files_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(TaskFormatError, match="no items"):
        load_task(tmp_path / "empty.jsonl")
    with pytest.raises(TaskFormatError, match="cannot read"):
        load_task(tmp_path / "missing.jsonl")


def test_write_task_round_trips(tmp_path: Path) -> None:
    items = [GenerationItem("a", "p1", ("t1",)), GenerationItem("b", "p2", ("t2", "t3"))]
    options = GenerationOptions(max_new_tokens=7, stop=("\n", "."), normalize=("strip", "lower"))
    write_task(tmp_path / "t.jsonl", items, name="named", generation=options)
    task = load_task(tmp_path / "t.jsonl")
    assert task.name == "named" and task.items == tuple(items) and task.generation == options
    assert task.limited(1).items == (items[0],)


def test_a_task_file_is_parsed_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_task(path, [GenerationItem("a", "p1", ("t1",))])
    first = load_task(path)
    assert load_task(path) is first  # unchanged: the parsed task is shared
    write_task(path, [GenerationItem("a", "p1", ("t1",)), GenerationItem("b", "p2", ("t2",))])
    changed = load_task(path)
    assert [i.id for i in changed.items] == ["a", "b"]
    path.write_text("not json\n")
    with pytest.raises(TaskFormatError, match="expected a JSON object|not valid JSON"):
        load_task(path)  # a broken file is an error again, never the old task


# -- metrics ---------------------------------------------------------------------------


def test_normalisation_and_exact_match() -> None:
    assert metrics.normalize("  Hello,  World! ", ["strip", "lower"]) == "hello,  world!"
    assert metrics.normalize(" A  b\tc ", ["collapse_whitespace"]) == "A b c"
    assert metrics.normalize("a.b,c!", ["remove_punctuation"]) == "abc"
    assert metrics.exact_match(" 82 ", ["82"], ["strip"])
    assert not metrics.exact_match(" 82 ", ["82"], [])
    assert metrics.exact_match("Paris", ["london", "paris"], ["lower"])
    with pytest.raises(ValueError, match="unknown"):
        metrics.normalize("x", ["nope"])


def test_stop_strings_cut_at_the_earliest() -> None:
    assert metrics.truncate_at_stop("abc\ndef.", ["\n", "."]) == "abc"
    assert metrics.truncate_at_stop("ab.c\nd", ["\n", "."]) == "ab"
    assert metrics.truncate_at_stop("abc", ["\n"]) == "abc"


def test_choice_selection() -> None:
    assert metrics.choice_index([-3.0, -1.0, -2.0]) == 1
    assert metrics.choice_index([-1.0, -1.0]) == 0  # ties: first
    # Raw log-likelihood prefers the short choice; per byte, the long one wins.
    assert metrics.choice_index([-2.0, -3.0]) == 0
    assert metrics.choice_index_normalized([-2.0, -3.0], ["ab", "abcdef"]) == 1


def test_perplexity_arithmetic() -> None:
    assert metrics.perplexity(0.0, 10) == 1.0
    assert metrics.perplexity(10 * math.log(4), 10) == pytest.approx(4.0)
    assert metrics.perplexity(1.0, 0) == math.inf
    assert metrics.bits_per_byte(8 * math.log(2), 4) == pytest.approx(2.0)


def test_windows_score_every_token_once_within_the_context() -> None:
    for n in range(1, 30):
        windows = _windows(list(range(n)), 8)
        scored = [t for _, first, end in windows for t in range(first, end)]
        assert scored == list(range(1, n))
        for start, first, end in windows:
            assert end - start <= 8 and start < first


# -- the model queries -------------------------------------------------------------------


def test_loglikelihood_matches_the_bigram_table(bigram: tuple[CausalLM, torch.Tensor]) -> None:
    lm, table = bigram
    requests = [("qa", "bc"), ("qa", "bd"), ("", "ab"), ("xyz", "c")]
    results = lm.loglikelihood(requests, batch_size=3)
    expected = [
        _expected_logprob(lm, table, "a", "bc"),
        _expected_logprob(lm, table, "a", "bd"),
        _expected_logprob(lm, table, "<s>", "ab"),
        _expected_logprob(lm, table, "z", "c"),
    ]
    for got, want in zip(results, expected, strict=True):
        assert got.logprob == pytest.approx(want, abs=1e-4)
    assert [r.is_greedy for r in results] == [True, False, True, False]
    assert [r.n_tokens for r in results] == [2, 2, 2, 1]
    # Batching and order do not change anything.
    single = lm.loglikelihood(requests[::-1], batch_size=1)[::-1]
    assert [r.logprob for r in single] == pytest.approx([r.logprob for r in results], abs=1e-5)


def test_greedy_generation_follows_the_chain_and_stops(bigram: tuple[CausalLM, torch.Tensor]) -> None:
    lm, _ = bigram
    # "q" -> a -> b -> c -> </s>: stops at eos; "x" -> newline: cut by the stop string.
    out = lm.generate(["q", "", "xq", "x"], max_new_tokens=6, stop=["\n"], batch_size=4)
    assert out == ["abc", "abc", "abc", ""]
    assert lm.generate(["q"], max_new_tokens=2, stop=[], batch_size=1) == ["ab"]
    assert lm.generate(["q"], max_new_tokens=6, stop=["b"], batch_size=1) == ["a"]


def test_text_nll_matches_the_table_also_across_windows(bigram: tuple[CausalLM, torch.Tensor]) -> None:
    lm, table = bigram
    long_text = "abcab" * 7  # 35 characters, longer than the 16-token context
    (short, long) = lm.text_nll(["abc", long_text], batch_size=2)
    assert short.n_tokens == 3
    assert short.nll == pytest.approx(-_expected_logprob(lm, table, "<s>", "abc"), abs=1e-4)
    # A bigram model ignores context beyond one token, so windowing must not change the sum.
    assert long.n_tokens == len(long_text)
    assert long.nll == pytest.approx(-_expected_logprob(lm, table, "<s>", long_text), abs=1e-3)


# -- the evaluator ---------------------------------------------------------------------------


def _tasks(tmp_path: Path) -> list[Path]:
    mc = tmp_path / "mc.jsonl"
    mc.write_text(
        "\n".join(
            _lines(
                {"id": "m1", "prompt": "qa", "choices": ["bd", "bc", "zz"], "answer": 1},
                {"id": "m2", "prompt": "q", "choices": ["ab", "x"], "answer": 1},
            )
        )
    )
    gen = tmp_path / "gen.jsonl"
    gen.write_text(
        "\n".join(
            _lines(
                {"task": {"max_new_tokens": 5, "normalize": ["strip", "lower"]}},
                {"id": "g1", "prompt": "q", "target": "ABC"},
                {"id": "g2", "prompt": "a", "target": "bc"},
                {"id": "g3", "prompt": "b", "target": "cd"},
            )
        )
    )
    ppl = tmp_path / "ppl.jsonl"
    ppl.write_text("\n".join(_lines({"text": "abc"}, {"text": "abcabc"})))
    return [mc, gen, ppl]


def test_evaluate_keeps_item_results_and_reports_progress(
    bigram: tuple[CausalLM, torch.Tensor], tmp_path: Path
) -> None:
    lm, table = bigram
    tasks = [load_task(p) for p in _tasks(tmp_path)]
    events: list[object] = []
    report = evaluate_tasks(lm, tasks, batch_size=2, events=events.append)

    mc = report.task("mc")
    assert mc.correct == [True, False]  # m2: "ab" is far likelier after "q" than "x"
    assert mc.value == 0.5 and mc.items[0].prediction == "1"
    assert mc.items[0].logprobs is not None and len(mc.items[0].logprobs) == 3

    gen = report.task("gen")
    assert [i.prediction for i in gen.items] == ["abc", "bc", "c"]
    assert gen.correct == [True, True, False]
    assert gen.value == pytest.approx(2 / 3)

    ppl = report.task("ppl")
    nll = -_expected_logprob(lm, table, "<s>", "abc") - _expected_logprob(lm, table, "<s>", "abcabc")
    assert ppl.value == pytest.approx(math.exp(nll / 9), rel=1e-4)
    assert ppl.items[1].n_tokens == 6 and not ppl.higher_is_better
    assert report.mean_accuracy == pytest.approx((0.5 + 2 / 3) / 2)

    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == 2 + 3 + 2
    assert [p.done for p in progress] == sorted(p.done for p in progress)

    # Plain data: a JSON round trip gives the same report.
    path = tmp_path / "report.json"
    report.save_json(path)
    assert EvalReport.load_json(path) == report


def test_limit_and_cancel(bigram: tuple[CausalLM, torch.Tensor], tmp_path: Path) -> None:
    lm, _ = bigram
    tasks = [load_task(p) for p in _tasks(tmp_path)]
    report = evaluate_tasks(lm, tasks, limit=1, batch_size=8)
    assert [len(t.items) for t in report.tasks] == [1, 1, 1]
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        evaluate_tasks(lm, tasks, cancel=cancel)


def test_cli_eval_writes_json(bigram: tuple[CausalLM, torch.Tensor], tmp_path: Path, capsys) -> None:
    from mergestudio.cli.main import main

    lm, _ = bigram
    out = tmp_path / "out.json"
    files = _tasks(tmp_path)
    code = main(
        [
            "eval",
            lm.name,
            "--task",
            str(files[1]),
            "--task",
            str(files[0]),
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--json",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "exact_match" in printed and "gen" in printed
    data = json.loads(out.read_text())
    assert [t["task"] for t in data["tasks"]] == ["gen", "mc"]
    assert [i["correct"] for i in data["tasks"][0]["items"]] == [True, True, False]


def test_cli_eval_reports_a_bad_task_file(
    bigram: tuple[CausalLM, torch.Tensor], tmp_path: Path, capsys
) -> None:
    from mergestudio.cli.main import main

    lm, _ = bigram
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "target": "b"}\n{"prompt": "a"}\n')
    assert main(["eval", lm.name, "--task", str(bad), "-q"]) == 1
    assert f"{bad}:2:" in capsys.readouterr().err


# -- graded scores -------------------------------------------------------------------------


def test_graded_score_is_the_reference_logprob_of_a_direct_forward_pass(tmp_path: Path) -> None:
    """A random tiny Llama (real transformers classes): an item's graded score is the mean
    per-token log-probability of its reference after its prompt, as one plain forward pass
    of the model gives it; multiple-choice items get the right choice's log share."""
    from mergestudio.demo.tokenizer import save_tokenizer
    from transformers import AutoTokenizer

    from tests.checkpoints import tiny_llama_model

    folder = tmp_path / "tiny"
    save_tokenizer(folder, model_max_length=64)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = tiny_llama_model(len(tokenizer), hidden=32, intermediate=64, seed=5).eval()
    model.save_pretrained(folder)
    gen = tmp_path / "gen.jsonl"
    gen.write_text(
        "\n".join(
            _lines(
                {"task": {"max_new_tokens": 3}},
                {"id": "g1", "prompt": "end abc=", "target": "c"},
                {"id": "g2", "prompt": "max 381=", "target": "8x!"},
            )
        )
    )
    mc = tmp_path / "mc.jsonl"
    mc.write_text("\n".join(_lines({"id": "m1", "prompt": "qa", "choices": ["bd", "c"], "answer": 1})))
    lm = CausalLM.load(folder, device="cpu")
    tasks = [load_task(gen), load_task(mc)]
    report = evaluate_tasks(lm, tasks, batch_size=2, graded=True)
    for item, (prompt, target) in zip(report.task("gen").items, [("end abc=", "c"), ("max 381=", "8x!")], strict=True):
        context = tokenizer(prompt)["input_ids"]
        reference = tokenizer(target, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([context + reference])).logits[0]  # (T, V)
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        # Position t predicts token t + 1: the reference's k-th token from position len(context) - 1 + k.
        direct = sum(float(logprobs[len(context) - 1 + k, t]) for k, t in enumerate(reference)) / len(reference)
        assert item.graded == pytest.approx(direct, abs=1e-5)
    choice = report.task("mc").items[0]
    assert choice.logprobs is not None and choice.graded == pytest.approx(
        float(torch.log_softmax(torch.tensor(choice.logprobs, dtype=torch.float64), dim=0)[1])
    )
    plain = evaluate_tasks(lm, tasks, batch_size=2)
    assert all(i.graded is None for i in plain.task("gen").items)  # the extra pass only when asked
    assert [i.score for i in plain.task("gen").items] == [i.score for i in report.task("gen").items]
