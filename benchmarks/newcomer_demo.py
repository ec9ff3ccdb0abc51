"""How long a newcomer waits: the studio opens the demo on its first run, Merge is
pressed, then quick eval scores the merged model next to its parents. The studio's promise
is under a minute on a 2-core CPU (this was an assert inside tests/e2e/test_gui_demo.py,
where a loaded machine made it flaky; it is a measurement, so it lives here).

    QT_QPA_PLATFORM=offscreen python benchmarks/newcomer_demo.py [--zoo resources/demo]

Without ``--zoo`` it uses the built demo zoo, or builds the miniature one in a temp folder.
Prints one JSON line: seconds to open, to merge, to evaluate, the total, and the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

BUDGET_S = 60.0  # demo opened to merged model and scores


def _zoo(given: str | None, scratch: Path) -> Path:
    from mergestudio.demo.paths import default_zoo_dir

    if given:
        return Path(given)
    real = default_zoo_dir()
    if (real / "models" / "base" / "config.json").exists():
        return real
    from mergestudio.demo.build import ZooConfig, build_zoo

    build_zoo(scratch / "zoo", ZooConfig.miniature(), log=lambda _line: None, evaluate=False)
    return scratch / "zoo"


def _wait(signal: object, timeout_s: float) -> list[object]:
    """Run the Qt event loop until ``signal`` fires; its arguments."""
    from PySide6.QtCore import QEventLoop, QTimer

    received: list[object] = []
    loop = QEventLoop()

    def done(*args: object) -> None:
        received.extend(args)
        loop.quit()

    signal.connect(done)  # type: ignore[attr-defined]
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(done)  # type: ignore[attr-defined]
    if not received:
        raise TimeoutError(f"no signal within {timeout_s} s")
    return received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", help="a built demo zoo folder (default: resources/demo or a miniature)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        zoo = _zoo(args.zoo, scratch)
        os.environ["MERGESTUDIO_CONFIG_DIR"] = str(scratch / "config")
        os.environ["MERGESTUDIO_DEMO_DIR"] = str(zoo)
        from mergestudio_qt.app import open_window
        from PySide6.QtWidgets import QApplication

        _app = QApplication.instance() or QApplication([])  # before any widget
        started = time.perf_counter()
        window = open_window(demo=False)  # the first run opens the demo by itself
        window.prompt_on_close = False
        # A fresh config folder is a first run: the demo opens in the background.
        assert _wait(window.project_loaded, 120) == [True]
        opened = time.perf_counter()
        print(f"demo opened in {opened - started:.1f} s", file=sys.stderr, flush=True)
        page = window.page("merge")
        page.out_edit.setText(str(scratch / "merged"))
        page.out_edit.editingFinished.emit()
        page.merge_button.click()
        assert _wait(page.merge_finished, 300) == ["succeeded"]
        merged = time.perf_counter()
        print(f"merged in {merged - opened:.1f} s; evaluating…", file=sys.stderr, flush=True)
        page.eval_button.click()
        if _wait(page.eval_finished, 600) != [True]:
            raise SystemExit(f"quick eval failed: {page.log_view.toPlainText()[-2000:]}")
        evaluated = time.perf_counter()
        window.close()
        total = evaluated - started
        print(
            json.dumps(
                {
                    "zoo": str(zoo),
                    "open_s": round(opened - started, 2),
                    "merge_s": round(merged - opened, 2),
                    "eval_s": round(evaluated - merged, 2),
                    "total_s": round(total, 2),
                    "budget_s": BUDGET_S,
                    "within_budget": total < BUDGET_S,
                }
            )
        )


if __name__ == "__main__":
    main()
