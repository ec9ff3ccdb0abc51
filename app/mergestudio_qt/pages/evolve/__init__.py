"""The Evolve page's parts. ``pages/evolve_page.py`` builds the page and mixes these in;
each holds one job of the page and reads or writes the page's shared run state (``run_dir``,
``spec``, ``history``, ``baselines``, ``selected`` and the jobs), which ``EvolvePage.__init__``
sets up. None imports another part or the page, so the imports stay a tree:

- ``studio_link``: the Setup tab follows the studio (its recipe, the demo project's spec);
- ``run_control``: the setup check, Start / Pause / Resume / Stop, and the events of the
  search the page runs (one process, or N local workers);
- ``follow_live``: opening a run folder, and following read-only a run another process controls;
- ``workers_view``: the run's workers (who runs which trial, heartbeats), read from its study;
- ``redraw``: which plots are out of date, redrawn one per timer tick;
- ``baselines``: the parents and default merges every trial is compared with;
- ``trial_details``: the selected trial in every plot, the table and the details;
- ``trial_actions``: export, open in the Recipe editor, try it, score on the full set.
"""
