"""``wsi-pipeline score --predictions P.csv --truth T.csv ...``: score any predictions file.

Parsing and printing only: the work is done by :mod:`wsi_pipeline.scoring.standalone`,
imported when the command runs. ``wsi-pipeline score MANIFEST`` (the run's stage) is parsed by
the same subcommand; these options are what tell the two apart.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from wsi_pipeline.errors import WSIPipelineError

TASKS = ("binary", "multiclass", "survival", "regression")


def add_standalone_options(score: argparse.ArgumentParser) -> None:
    """Add the standalone options to the ``score`` subcommand."""
    group = score.add_argument_group("standalone scoring (instead of a manifest)")
    group.add_argument("--predictions", help="predictions CSV: the id column, the score column(s), optionally 'model' and --group-column")
    group.add_argument("--truth", help="truth CSV: the id column and the target column(s)")
    group.add_argument("--task", choices=TASKS, help="what the predictions are for")
    group.add_argument("--id-column", default="patient_id", help="id column of both files (default patient_id)")
    group.add_argument("--score-column", default="score",
                       help="binary: probability of label 1; survival: risk (higher = earlier event); regression: the prediction "
                       "(default score)")
    group.add_argument("--class-prefix", default="prob_", help="multiclass: class c's probability is column <prefix><c> (default prob_)")
    group.add_argument("--label-column", default="label", help="truth: binary 0/1, multiclass class, regression target (default label)")
    group.add_argument("--time-column", default="time", help="truth of survival: follow-up time >= 0 (default time)")
    group.add_argument("--event-column", default="event", help="truth of survival: 1 = event, 0 = censored (default event)")
    group.add_argument("--group-column", help="the patient of each row when a patient has several rows (slides): the bootstrap draws patients")
    group.add_argument("--split-column", default="split",
                       help="predictions column marking 'validation' rows (fix the binary threshold or the survival risk cut-off) and "
                       "'test' rows (scored) (default split)")
    group.add_argument("--fold-column", default="fold",
                       help="optional predictions column with each row's cross-validation fold: binary metrics per fold too (default fold)")
    group.add_argument("--subgroup-column", action="append", default=[], metavar="COLUMN",
                       help="a column of either file to break the headline metrics down by (repeatable); 'site' is used "
                       "whenever a file has it")
    group.add_argument("--time-auc", action="append", type=float, default=[], metavar="T",
                       help="survival: also the time-dependent (cumulative/dynamic) AUC at time T, in the time column's unit "
                       "(repeatable)")
    group.add_argument("--threshold-method", default="fixed", choices=("fixed", "youden", "sensitivity"),
                       help="binary decision threshold: fixed (--threshold), or chosen on the validation rows (default fixed)")
    group.add_argument("--threshold", type=float, default=0.5, help="the fixed threshold (default 0.5)")
    group.add_argument("--target-sensitivity", type=float, help="the sensitivity method's target, e.g. 0.9")
    group.add_argument("--ci-level", type=float, default=0.95, help="confidence level of every interval (default 0.95)")
    group.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    group.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutations (default 0)")


def is_standalone(args: argparse.Namespace) -> bool:
    """Whether ``score`` was called with a predictions file rather than a manifest."""
    return args.command == "score" and any(getattr(args, name, None) for name in ("predictions", "truth", "task"))


def standalone_score_command(args: argparse.Namespace, console: Console) -> int:
    """Score ``--predictions`` against ``--truth``; the headline metric per model on stderr."""
    if args.manifest:
        raise WSIPipelineError(f"both a manifest ({args.manifest}) and --predictions/--truth/--task were given",
                               where="wsi-pipeline score", fix="score a run with a manifest, or a file with --predictions, --truth, --task")
    missing = [f"--{name}" for name in ("predictions", "truth", "task", "output") if not getattr(args, name)]
    if missing:
        raise WSIPipelineError(f"standalone scoring needs {', '.join(missing)}", where="wsi-pipeline score",
                               fix="pass --predictions P.csv --truth T.csv --task binary|multiclass|survival|regression --output DIR")
    from wsi_pipeline.scoring.formatting import format_interval
    from wsi_pipeline.scoring.inputs import Columns
    from wsi_pipeline.scoring.standalone import (
        COMPARISONS_KEY,
        ScoringSettings,
        score_files,
    )

    columns = Columns(id=args.id_column, score=args.score_column, label=args.label_column, time=args.time_column,
                      event=args.event_column, class_prefix=args.class_prefix, group=args.group_column, split=args.split_column,
                      fold=args.fold_column, subgroups=tuple(args.subgroup_column))
    settings = ScoringSettings(n_resamples=args.n_resamples, ci_level=args.ci_level, seed=args.seed,
                               threshold_method=args.threshold_method, threshold=args.threshold,
                               target_sensitivity=args.target_sensitivity, time_auc_horizons=tuple(args.time_auc))
    metrics = score_files(args.predictions, args.truth, args.task, args.output, columns=columns, settings=settings)
    level = f"{args.ci_level * 100:g}% CI"
    for model, values in metrics.items():
        if model == COMPARISONS_KEY:
            continue
        headline = next(name for name, value in values.items() if isinstance(value, dict) and "ci_low" in value)
        console.print(f"  score: {model:<10} {headline} {format_interval(values[headline])} ({level})", highlight=False)
    console.print(f"  metrics.json, report.md and plots in {args.output}", highlight=False)
    return 0
