"""Scoring: the shared, once-per-run stage that turns predictions into metrics, plots and a report.

Modules (one idea each):

- ``predictions`` -- the predictions table: its columns (per task), validation and loading.
- ``metrics`` -- point estimates of binary metrics (scikit-learn), which the binary task reports;
  every task's metrics are its own (``wsi_pipeline.mil.tasks``).
- ``bootstrap`` -- patient-level bootstrap confidence intervals, of one metric or of a task's
  metrics averaged over the repeats of a cross-validation.
- ``survival`` -- Kaplan-Meier curves and the log-rank test between groups (lifelines).
- ``plots`` -- the task's figure (ROC, one-vs-rest ROC, predicted against true) and Kaplan-Meier
  figures of predicted groups (matplotlib, Agg canvas per figure).
- ``report`` -- the Markdown report, naming the task and its metrics.
- ``atomic`` -- write-then-rename helpers so no half-written file is ever visible.
- ``stage`` -- ``score_predictions``: the stage itself, chaining the above.
- ``context`` -- what a run's report says about the run (title, plot caption, facts).
- ``resample`` -- bootstrap resamples as row weights (patients drawn, a patient's rows together),
  so a metric is computed for every resample at once.
- ``binary``, ``calibration`` -- the eleven binary metrics (AUC ... Brier, ECE) as weighted sums;
  ``binary_intervals`` -- their patient-bootstrap intervals over CV repeats.
- ``threshold`` -- a binary decision threshold, fixed or chosen on validation rows (Youden, target
  sensitivity), never on the scored ones.
- ``delong``, ``permutation``, ``comparison`` -- DeLong's test (Sun and Xu's midranks), the
  label-permutation p of an AUC, paired model comparisons (DeLong and a paired bootstrap).
- ``inputs``, ``standalone``, ``standalone_report``, ``reliability_plot`` -- scoring any predictions
  file against a truth file (``wsi-pipeline score --predictions ... --truth ...``).
- ``document``, ``markdown_html`` -- reports as blocks rendered to Markdown and self-contained HTML.
- ``compare`` -- the leaderboard of several scored runs (``wsi-pipeline compare``).
- ``multiclass_metrics``, ``regression_metrics`` -- the multiclass set (macro and per-class) with
  the confusion matrix, and the regression set, as weighted sums; ``task_intervals`` -- a task's
  intervals by the fastest route; ``confusion_plot`` -- counts beside row-normalised.
- ``survival_metrics``, ``time_auc`` -- the risk-group cut-off and Cox hazard ratio; the
  censoring-weighted time-dependent AUC. ``task_extras`` -- what metrics.json gets beyond a task's
  own metrics; ``subgroups`` -- headline metrics per site or subgroup; ``task_report`` -- the
  report's per-class, risk-group and subgroup sections.
- ``run_comparisons``, ``per_fold`` -- a run's models tested against mean-pool (or pairwise) and each
  binary AUC's permutation p; the task's metrics per (repeat, fold).
- ``cohort_summary``, ``banners``, ``protocol``, ``pr_plot`` -- the run report's Cohort section
  (given, scored, left out and why), its synthetic-cohort and demo-encoder banners, its Protocol
  section, and the binary precision-recall figure.

Nothing is imported here on purpose: importing the package must stay cheap and must not
import matplotlib (the engine imports ``stage`` only when it runs the stage).
"""
