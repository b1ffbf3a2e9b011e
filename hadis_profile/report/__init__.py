"""Human-facing reports of runs, tables and plans.

* :mod:`.terminal`  Rich views for the command line (tables, plan panels, command summaries)
* :mod:`.runs`      Rich views of a profiling run (summary, dry-run plan)
* :mod:`.plots`     matplotlib figures (the Pareto plot)
* :mod:`.documents` command results as JSON documents (``--json``)
* :mod:`.data`      the numbers behind ``hadis-profile report`` (``report.json``)
* :mod:`.figures`   the report's figures, drawn from those numbers
* :mod:`.html`      the report's offline HTML page and folder (:func:`~.html.write_report`)

Importing this package (or either module) imports neither Rich nor matplotlib:
each function imports what it draws with, so the serving path and ``--help``
never pay for them. The most used names are re-exported here.
"""

from hadis_profile.report.plots import plot_pareto
from hadis_profile.report.terminal import plan_panel, render_calibration, render_table

__all__ = ["plan_panel", "plot_pareto", "render_calibration", "render_table"]
