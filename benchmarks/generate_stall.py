"""How long the studio's event loop stalls while the generation panel streams tokens.

The panel tries a recipe merged in memory (a linear merge of two models) beside one of
its parents, sampled, the way "Try it…" does. A 5 ms heartbeat on the GUI thread
records every gap; stalls are reported separately for loading (models loaded and the
recipe merged, before the first token) and for streaming (first token to the end), the
phase the studio promises stays under 100 ms.

Shapes: ``demo`` is the demo zoo's 4-layer Llama (0.8M parameters); ``wide`` a random
8-layer Llama, hidden 512 (25M parameters), with the demo's tokenizer. Both get room
for long generations and an end token they do not write, so every run streams
``--tokens`` tokens per column.

    QT_QPA_PLATFORM=offscreen python benchmarks/generate_stall.py --shape wide
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from benchmarks.ui_stall import BUDGET_MS, HEARTBEAT_MS, IDLE_MS, Heartbeat, percentile

SHAPES = {
    "demo": None,  # the zoo's own weights
    "wide": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
             "num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": 64},
}
# An end token the models cannot write (its id is past their 77 logits), so every
# generation runs to --tokens: the tokenizer adds it as id 77.
END_TOKEN, END_ID = "<|end-never|>", 77


def write_models(shape: str, work: Path) -> list[Path]:
    """Two models of ``shape`` with the demo's tokenizer, long context, and an end token
    they never write."""
    import torch
    from mergestudio.demo.paths import default_zoo_dir, models_dir
    from transformers import AutoConfig, AutoModelForCausalLM

    zoo = models_dir(default_zoo_dir())
    folders = []
    for index, source in enumerate(("base", "last")):
        folder = work / f"{shape}-{index}"
        shutil.copytree(zoo / source, folder, dirs_exist_ok=True)
        if SHAPES[shape] is not None:
            config = AutoConfig.from_pretrained(folder)
            for key, value in SHAPES[shape].items():  # type: ignore[union-attr]
                setattr(config, key, value)
            torch.manual_seed(index)
            from transformers.utils import logging

            logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        for name, values in (
            ("config.json", {"max_position_embeddings": 4096, "eos_token_id": END_ID}),
            ("generation_config.json", {"eos_token_id": END_ID}),
            ("tokenizer_config.json", {"model_max_length": 4096, "eos_token": END_TOKEN}),
        ):
            data = json.loads((folder / name).read_text())
            data.update(values)
            (folder / name).write_text(json.dumps(data))
        folders.append(folder)
    return folders


def run(shape: str, tokens: int, work: Path) -> dict[str, object]:
    from mergestudio_qt.app import create_app, preload_engine, warm_up_search
    from mergestudio_qt.context import Studio
    from mergestudio_qt.preferences import Preferences
    from mergestudio_qt.state import StudioState
    from mergestudio_qt.widgets.generate_panel import Candidate, GenerateDialog
    from PySide6.QtCore import QEventLoop, QTimer

    folders = write_models(shape, work)
    scratch = Path(tempfile.mkdtemp(prefix="generate_stall_"))
    os.environ["MERGESTUDIO_CONFIG_DIR"] = str(scratch / "config")
    app = create_app(["generate_stall"])
    preload_engine()  # as the studio does before its window shows
    warm_up_search().join()  # and in the background once it shows (transformers among them)
    dialog = GenerateDialog(Studio(StudioState(), Preferences(device="cpu", demo_opened=True)))
    dialog.resize(1280, 800)
    dialog.show()
    panel = dialog.panel
    recipe = {"merge_method": "linear", "models": [{"model": str(f), "parameters": {"weight": 1.0}} for f in folders]}
    panel.set_subject([Candidate("linear (in memory)", recipe)], {"parent": str(folders[1])})
    panel.set_parent_checked("parent", True)
    panel.prompt_edit.setPlainText("the")
    panel.mode_combo.setCurrentIndex(1)
    panel.max_tokens_spin.setValue(tokens)

    # The same heartbeat with nothing running: how much of a stall is the machine's own
    # scheduling (other processes on a busy CPU), not the generation.
    idle = Heartbeat(HEARTBEAT_MS)
    pause = QEventLoop()
    idle.start()
    QTimer.singleShot(IDLE_MS, pause.quit)
    pause.exec()
    idle.stop()

    first_token: list[float] = []
    panel.generate_button.clicked.connect(lambda: panel.job.token.connect(  # type: ignore[union-attr]
        lambda *_: first_token.append(time.perf_counter()) if not first_token else None))
    heartbeat = Heartbeat(HEARTBEAT_MS)
    done = QEventLoop()
    outcome: list[str] = []
    panel.generation_finished.connect(lambda status: (outcome.append(status), done.quit()))
    heartbeat.start()
    started = time.perf_counter()
    QTimer.singleShot(0, panel.generate_button.click)
    done.exec()
    ended = time.perf_counter()
    heartbeat.stop()
    stalls = heartbeat.stalls_ms()
    streaming_from = first_token[0] if first_token else ended
    loading = [s for s, t in zip(stalls, heartbeat.times, strict=True) if t <= streaming_from]
    streaming = [s for s, t in zip(stalls, heartbeat.times, strict=True) if t > streaming_from]
    results = panel.last_results
    produced = sum(len(g.token_ids) for g in results)
    dialog.close()
    shutil.rmtree(scratch, ignore_errors=True)
    del app
    return {
        "shape": shape,
        "status": outcome[0] if outcome else "none",
        "columns": len(results),
        "tokens": produced,
        "load_and_merge_s": round(streaming_from - started, 2),
        "streaming_s": round(ended - streaming_from, 2),
        "tokens_per_s": round(produced / max(ended - streaming_from, 1e-9), 1),
        "redraws": panel.redraws,
        "loading_worst_stall_ms": round(max(loading, default=0.0), 1),
        "streaming_worst_stall_ms": round(max(streaming, default=0.0), 1),
        "streaming_p99_stall_ms": round(percentile(streaming, 99), 1),
        "worst_stalls_at": heartbeat.worst(started),
        "beats": len(stalls),
        "idle_worst_stall_ms": round(max(idle.stalls_ms(), default=0.0), 1),
        "budget_ms": BUDGET_MS,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="wide", choices=sorted(SHAPES))
    parser.add_argument("--tokens", type=int, default=300, help="new tokens per column")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="generate_stall_models_"))
    try:
        result = run(args.shape, args.tokens, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    ok = result["status"] == "succeeded" and float(result["streaming_worst_stall_ms"]) <= BUDGET_MS  # type: ignore[arg-type]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
