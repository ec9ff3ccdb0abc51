"""How long the studio's event loop stalls while a search runs on the Evolve page.

The window opens the bundled demo project (the zoo's base and specialists, their
evaluation tasks), the Evolve page sets up a search from it with the Setup tab's
defaults (population, estimator, objectives) and a small evaluation budget, and Start
is pressed from inside the running event loop. A heartbeat timer on the GUI thread
records the longest gap between beats while the search's child process scores the
baselines and runs the trials, and the page redraws its plots as each one lands. Before
Start the benchmark waits as a person would: for the window's background imports
(``warm_up_search``) and a moment on the Setup tab (the page renders its hidden
dashboard ahead then). The worst stalls are listed with when they came, beside when the
baselines and the first trials reached the page.

    QT_QPA_PLATFORM=offscreen python benchmarks/evolve_stall.py --evaluations 24
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

from benchmarks.ui_stall import BUDGET_MS, stall_summary, time_with_heartbeat

SETUP_READ_MS = 1500


def run(evaluations: int) -> dict[str, object]:
    from mergestudio_qt.app import create_app, preload_engine, warm_up_search
    from mergestudio_qt.main_window import MainWindow
    from mergestudio_qt.preferences import Preferences
    from PySide6.QtCore import QEventLoop, QTimer

    scratch = Path(tempfile.mkdtemp(prefix="evolve_stall_"))
    os.environ["MERGESTUDIO_CONFIG_DIR"] = str(scratch / "config")
    app = create_app(["evolve_stall"])
    preload_engine()
    window = MainWindow(Preferences(demo_opened=True, cache_dir=str(scratch / "cache")))
    window.prompt_on_close = False
    window.resize(1280, 800)
    window.show()
    warm_up = warm_up_search()  # as the studio does once its window shows
    opened = QEventLoop()
    window.project_loaded.connect(lambda _ok: opened.quit())
    window.open_demo()
    opened.exec()
    warm_up.join()  # a person reads the window for a few seconds before pressing Start
    window.go_to("evolve")
    page = window.page("evolve")
    reading = QEventLoop()  # and looks at the Setup tab a moment (the page renders ahead)
    QTimer.singleShot(SETUP_READ_MS, reading.quit)
    reading.exec()
    page.setup.evaluations.setValue(evaluations)
    page.setup.run_edit.setText(str(scratch / "run"))
    if page.check_setup() is None:
        raise SystemExit(f"the demo search does not set up: {page.setup.check_label.text()}")

    trials: list[float] = []  # perf_counter() of each trial's arrival on the page
    baselines: list[float] = []
    page.trial_added.connect(lambda _number: trials.append(time.perf_counter()))
    page.baselines_changed.connect(lambda: baselines.append(time.perf_counter()))
    status, seconds, heartbeat, pressed = time_with_heartbeat(page.start_search, page.search_finished)
    window.close()
    result = {
        "evaluations": evaluations,
        "status": status,
        "trials_drawn": len(trials),
        "search_s": round(seconds, 1),
        **stall_summary(heartbeat, pressed),
        # When the page got them (seconds after Start), to place the stalls in the search.
        "baselines_at_s": [round(t - pressed, 2) for t in baselines],
        "first_trials_at_s": [round(t - pressed, 2) for t in trials[:3]],
    }
    shutil.rmtree(scratch, ignore_errors=True)
    del app
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=24)
    args = parser.parse_args()
    result = run(args.evaluations)
    print(json.dumps(result))
    ok = result["status"] == "finished" and float(result["worst_stall_ms"]) <= BUDGET_MS  # type: ignore[arg-type]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
