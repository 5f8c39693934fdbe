"""The run's score stage: comparisons, per-fold values, cohort summary, banners, protocol and the PR plot.

Hand-built predictions and cohort facts; plots are mocked except where the PR figure is under test.
"""

from __future__ import annotations

import base64
import json
import re
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from wsi_pipeline.mil.tasks import BinaryTask
from wsi_pipeline.scoring.banners import DEMO_BANNER, SYNTHETIC_BANNER
from wsi_pipeline.scoring.binary import BINARY_METRICS
from wsi_pipeline.scoring.bootstrap import bootstrap_task_metrics
from wsi_pipeline.scoring.cohort_summary import NO_REASON, CohortSummary
from wsi_pipeline.scoring.comparison import compare_models
from wsi_pipeline.scoring.formatting import format_interval, format_p
from wsi_pipeline.scoring.paired import paired_metric_test
from wsi_pipeline.scoring.permutation import auc_permutation_p
from wsi_pipeline.scoring.predictions import validate_predictions
from wsi_pipeline.scoring.run_comparisons import run_comparisons
from wsi_pipeline.scoring.stage import score_predictions

N = 50  # resamples and permutations: enough to exercise the code, fast
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def table(n_patients: int = 40, repeats: int = 1, models=("abmil", "clam", "meanpool"), seed: int = 0) -> pd.DataFrame:
    """Models on the same patients, 4 folds per repeat; abmil informative, clam less, meanpool barely."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n_patients)
    labels[:2] = [0, 1]
    frames = []
    for repeat in range(repeats):
        folds = rng.permutation(np.arange(n_patients) % 4)
        for model, separation in zip(models, (2.0, 1.0, 0.3), strict=False):
            z = rng.normal(labels * separation - separation / 2, 1.0)
            frames.append(pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n_patients)], "model": model, "repeat": repeat,
                                        "fold": folds, "label": labels, "score": 1 / (1 + np.exp(-z))}))
    return pd.concat(frames, ignore_index=True)


def score(tmp_path, predictions, plots=False, **kwargs):
    kwargs = {"n_resamples": N, "seed": 3, "compare": True, "per_fold": True, **kwargs}
    if plots:
        return score_predictions(predictions, tmp_path / "out", **kwargs)
    with mock.patch("wsi_pipeline.scoring.plots.plot_task"):  # the plots are not under test
        return score_predictions(predictions, tmp_path / "out", **kwargs)


def test_comparisons_equal_the_standalone_functions_on_the_same_table(tmp_path):
    predictions = table()
    result = score(tmp_path, predictions)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == result
    assert [(c["model"], c["reference"]) for c in result["comparisons"]] == [("abmil", "meanpool"), ("clam", "meanpool")]
    rows = {m: r.sort_values("patient_id") for m, r in predictions.groupby("model")}
    for comparison in result["comparisons"]:
        a, b = rows[comparison["model"]], rows[comparison["reference"]]
        expected = compare_models(a["label"].to_numpy(), a["score"].to_numpy(), b["score"].to_numpy(), n_resamples=N, seed=3)
        assert comparison["delong"] == expected["delong"] and comparison["delong"]["p_value"] is not None
        assert comparison["difference"] == expected["auc_difference"]
        assert comparison["difference"]["value"] == pytest.approx(roc_auc_score(a["label"], a["score"]) - roc_auc_score(b["label"], b["score"]))
        assert comparison["n_patients"] == 40
    for model, rows_of in rows.items():
        p = auc_permutation_p(rows_of["label"].to_numpy(), rows_of["score"].to_numpy(), n_permutations=N, seed=3)
        assert result[model]["auc_permutation_p"] == p and result[model]["n_permutations"] == N
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### Comparisons" in report and "| abmil | meanpool | 40 |" in report
    assert f"{N} permutations of the labels among patients): abmil {format_p(result['abmil']['auc_permutation_p'])}, clam" in report


def test_comparisons_with_repeats_are_the_paired_bootstrap_of_the_mean_over_repeats(tmp_path):
    predictions = table(repeats=2, models=("abmil", "meanpool"))
    result = score(tmp_path, predictions)
    [comparison] = result["comparisons"]
    df = validate_predictions(predictions, task=BinaryTask())
    expected = paired_metric_test(df[df["model"] == "abmil"], df[df["model"] == "meanpool"], BinaryTask(), BinaryTask(), "auc",
                                  n_resamples=N, seed=3)
    assert expected.test == "paired bootstrap"
    assert comparison["delong"] is None
    assert comparison["difference"] == {**expected.difference, "p_value": expected.bootstrap_p, "n_resamples": N}
    mean_auc = {m: np.mean([roc_auc_score(r["label"], r["score"]) for _, r in rows.groupby("repeat")])
                for m, rows in predictions.groupby("model")}
    assert comparison["difference"]["value"] == pytest.approx(mean_auc["abmil"] - mean_auc["meanpool"])
    # The permutation p of each repeat's AUC, and their median.
    per_repeat = result["abmil"]["auc_permutation_p_per_repeat"]
    assert len(per_repeat) == 2 and result["abmil"]["auc_permutation_p"] == pytest.approx(np.median(per_repeat))


def test_without_meanpool_every_pair_is_compared():
    df = validate_predictions(table(models=("abmil", "clam", "transmil")), task=BinaryTask())
    comparisons, _ = run_comparisons(df, BinaryTask(), n_resamples=N, seed=3)
    assert [(c["model"], c["reference"]) for c in comparisons] == [("abmil", "clam"), ("abmil", "transmil"), ("clam", "transmil")]


def test_per_fold_values_equal_the_metric_on_each_folds_rows(tmp_path):
    predictions = table(repeats=2, models=("abmil", "meanpool"))
    result = score(tmp_path, predictions)
    entries = result["abmil"]["per_fold"]
    assert [(e["repeat"], e["fold"]) for e in entries] == [(r, f) for r in range(2) for f in range(4)]
    rows = predictions[predictions["model"] == "abmil"]
    for entry in entries:
        part = rows[(rows["repeat"] == entry["repeat"]) & (rows["fold"] == entry["fold"])]
        assert entry["n_patients"] == len(part)
        assert entry["auc"]["value"] == pytest.approx(roc_auc_score(part["label"], part["score"]))
        assert entry["accuracy"]["value"] == pytest.approx(((part["score"] >= 0.5) == part["label"]).mean())
        assert set(entry) >= set(BINARY_METRICS)  # the whole binary set, as pooled
    report = (tmp_path / "out" / "report.md").read_text()
    fold0 = np.mean([e["auc"]["value"] for e in entries if e["fold"] == 0])
    line = next(line for line in report.splitlines() if line.startswith("| abmil | ") and "±" in line)
    assert f"{fold0:.3f}" == line.split(" | ")[1]  # several repeats: the mean of the fold's values


def test_per_fold_intervals_are_each_folds_own_patient_bootstrap(tmp_path):
    predictions = table(n_patients=60)
    result = score(tmp_path, predictions)
    rows = predictions[predictions["model"] == "clam"]  # informative, not perfect
    task = BinaryTask()
    for entry in result["clam"]["per_fold"]:
        part = rows[rows["fold"] == entry["fold"]]
        # Reference: the generic bootstrap, one call of the task's metrics per resample, same seed.
        columns = {c: part[c].to_numpy() for c in ("label", "score")}
        reference = bootstrap_task_metrics([columns], task.metrics, ["auc", "accuracy"], n_resamples=N, seed=3)
        for name in ("auc", "accuracy"):
            assert entry[name] == pytest.approx(reference[name][0].as_dict())
        low, high = entry["auc"]["ci_low"], entry["auc"]["ci_high"]
        assert low < entry["auc"]["value"] < high and high - low > 0.1  # 15 patients: a wide interval
    # One repeat: the report shows each fold's interval.
    first = result["clam"]["per_fold"][0]["auc"]
    line = next(line for line in (tmp_path / "out" / "report.md").read_text().splitlines()
                if line.startswith("| clam | ") and "±" in line)
    assert line.split(" | ")[1] == format_interval(first)
    # The fold intervals follow scoring.ci_level.
    narrow = score(tmp_path / "80", predictions, ci_level=0.8)["clam"]["per_fold"][0]["auc"]
    assert narrow["value"] == first["value"]
    assert narrow["ci_high"] - narrow["ci_low"] < first["ci_high"] - first["ci_low"]


def test_a_fold_of_one_class_has_no_auc_but_keeps_its_accuracy(tmp_path):
    predictions = table(models=("abmil", "meanpool"))
    predictions.loc[predictions["fold"] == 0, "label"] = 0  # every patient of fold 0 a negative
    entry = score(tmp_path, predictions)["abmil"]["per_fold"][0]
    assert entry["fold"] == 0
    assert entry["auc"] == {"value": None, "ci_low": None, "ci_high": None}
    assert entry["accuracy"]["value"] is not None and entry["accuracy"]["ci_low"] is not None


def cohort(synthetic: bool = False) -> CohortSummary:
    """12 patients, 14 slides (P001 and P002 have two); two unreadable slides, one a patient's only slide."""
    slides = pd.DataFrame({"slide_id": [f"S{i:03d}" for i in range(12)] + ["S001b", "S002b"],
                           "patient_id": [f"P{i:03d}" for i in range(12)] + ["P001", "P002"]})
    failures = [("tile", "S010", "OpenSlide cannot read broken.svs"), ("extract", "S001b", "Unsupported TIFF compression"),
                ("train", "0-abmil", "not a slide")]
    return CohortSummary.from_run(slides, {"P010": "no features (every slide failed)"}, failures, synthetic=synthetic)


def test_cohort_summary_lists_each_exclusion_with_its_reason(tmp_path):
    predictions = table(n_patients=10, models=("abmil", "meanpool"))  # P000..P009 scored; P010 excluded, P011 unexplained
    score(tmp_path, predictions, cohort=cohort())
    report = (tmp_path / "out" / "report.md").read_text()
    section = report.split("## Cohort")[1].split("\n## ")[0]
    assert "- **given**: 12 patients, 14 slides" in section
    assert "- **scored**: 10 patients, 11 slides" in section  # P000-P009 with S002b; S001b failed
    assert "- **excluded or failed**: 2 patients, 3 slides" in section
    assert "| S010 | P010 | tile | OpenSlide cannot read broken.svs |" in section
    assert "| S001b | P001 | extract | Unsupported TIFF compression |" in section
    assert "0-abmil" not in section  # a training item is not a slide of the cohort
    assert "| P010 | no features (every slide failed) (S010 failed at tile) |" in section
    assert f"| P011 | {NO_REASON} |" in section
    html = (tmp_path / "out" / "report.html").read_text()
    assert "OpenSlide cannot read broken.svs" in html and "Unsupported TIFF compression" in html


def test_the_synthetic_banner_appears_only_for_synthetic_cohorts(tmp_path):
    predictions = table(n_patients=10, models=("abmil",))
    for synthetic in (True, False):
        out = tmp_path / str(synthetic)
        score(out, predictions, cohort=cohort(synthetic), compare=False)
        report = (out / "out" / "report.md").read_text()
        html = (out / "out" / "report.html").read_text()
        assert (SYNTHETIC_BANNER in report) is synthetic and (SYNTHETIC_BANNER in html) is synthetic
        if synthetic:
            assert report.splitlines()[2] == f"> **{SYNTHETIC_BANNER}**"  # under the title, before anything else
            assert html.count('class="banner"') == 1
    score(tmp_path / "none", predictions, compare=False)
    assert "SYNTHETIC" not in (tmp_path / "none" / "out" / "report.md").read_text()


def test_the_demo_banner_is_in_both_reports_once(tmp_path):
    score(tmp_path, table(n_patients=10, models=("abmil",)), context={"encoder": "demo-x — DEMO encoder, not a pathology model"},
          cohort=cohort(True))
    report = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    assert report.count(DEMO_BANNER) == 1 and html.count(DEMO_BANNER) == 1 and html.count('class="banner"') == 2


def test_protocol_section_lists_the_given_facts_in_order(tmp_path):
    protocol = {"folds": "4-fold cross-validation by patient", "selection split": "20% inner validation", "sampling": "balanced"}
    score(tmp_path, table(n_patients=10, models=("abmil",)), protocol=protocol, compare=False)
    report = (tmp_path / "out" / "report.md").read_text()
    section = report.split("## Protocol\n\n")[1].split("\n\n")[0]
    assert section.splitlines() == [f"- **{k}**: {v}" for k, v in protocol.items()]


def test_pr_and_reliability_plots_are_written_and_embedded_as_pngs(tmp_path):
    result = score(tmp_path, table(n_patients=30, models=("abmil", "meanpool")), plots=True)
    png = (tmp_path / "out" / "plots" / "pr.png").read_bytes()
    reliability = (tmp_path / "out" / "plots" / "reliability.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and reliability.startswith(PNG_SIGNATURE)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "![Precision-recall curves, average precision in the legend](plots/pr.png)" in report
    assert "![Reliability diagram, expected calibration error in the legend](plots/reliability.png)" in report
    html = (tmp_path / "out" / "report.html").read_text()
    embedded = [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]
    assert png in embedded and reliability in embedded  # the very files, decodable
    assert result["abmil"]["average_precision"]["value"] is not None
