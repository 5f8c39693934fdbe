"""Scoring: the shared, once-per-run stage that turns predictions into metrics, plots and a report.

Modules (one idea each):

- ``predictions`` -- the predictions table: its columns, validation and loading.
- ``metrics`` -- point estimates of binary metrics (scikit-learn).
- ``bootstrap`` -- patient-level bootstrap confidence intervals.
- ``survival`` -- Kaplan-Meier curves and the log-rank test between groups (lifelines).
- ``plots`` -- ROC and Kaplan-Meier figures (matplotlib, Agg canvas per figure).
- ``report`` -- the Markdown report.
- ``atomic`` -- write-then-rename helpers so no half-written file is ever visible.
- ``stage`` -- ``score_predictions``: the stage itself, chaining the above.
- ``context`` -- what a run's report says about the run (title, plot caption, facts).

Nothing is imported here on purpose: importing the package must stay cheap and must not
import matplotlib (the engine imports ``stage`` only when it runs the stage).
"""
