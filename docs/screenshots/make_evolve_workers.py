"""The Evolve page running the demo search with two local workers (the Workers box on the
Setup tab), its Workers tab listing both while they run (offscreen).

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make_evolve_workers.py [OUT_DIR]

Writes evolve-workers-1280.png and evolve-workers-1024.png (the window at 1280x800 and
1024x700) into this folder, or OUT_DIR. The search is stopped once the shots are taken.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
OUT = Path(__file__).resolve().parent
TRIALS_BEFORE_SHOTS = 6  # finished by the two workers together


def main() -> int:
    from make_screenshots import _settle, _wait, demo_window  # type: ignore[import-not-found]

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="workers_shots_"))
    app, window = demo_window(scratch)
    window.state.set_search_workers(2)
    window.go_to("evolve")
    page = window.page("evolve")
    page.setup.run_edit.setText(str(scratch / "run"))
    outcome: list[str] = []
    page.search_finished.connect(outcome.append)
    page.start_search()
    inspector = page.inspector
    _wait(
        lambda: bool(outcome)
        or (
            sum(w.complete for w in inspector.workers_table.workers) >= TRIALS_BEFORE_SHOTS
            and inspector.workers_table.running() == 2
        ),
        timeout_s=900.0,
    )
    if outcome:
        print(f"the search ended ({outcome[0]}) before the shots:\n{inspector.log_view.toPlainText()}")
        return 1
    inspector.detail_tabs.setCurrentWidget(inspector.workers_table)
    for size, name in (((1280, 800), "evolve-workers-1280"), ((1024, 700), "evolve-workers-1024")):
        window.resize(*size)
        _settle(1500)
        path = out / f"{name}.png"
        window.grab().save(str(path), "PNG", 9)
        print(f"{path} {path.stat().st_size // 1024} KB")
    page.stop()
    _wait(lambda: bool(outcome), timeout_s=300.0)
    window.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
