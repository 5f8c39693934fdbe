"""The Markdown report on its own."""

import pandas as pd

from wsi_pipeline.scoring.report import write_report


def entry(auc: float) -> dict:
    interval = {"value": auc, "ci_low": auc - 0.1, "ci_high": auc + 0.05}
    return {"auc": interval, "accuracy": interval, "balanced_accuracy": interval,
            "n_patients": 10, "n_positive": 4}


def test_report_table_context_and_escaping(tmp_path):
    preds = pd.DataFrame({"patient_id": ["a", "b"], "model": ["x|y", "x|y"], "fold": [0, 1],
                          "label": [0, 1], "score": [0.2, 0.7]})
    path = write_report({"x|y": entry(0.8)}, preds, tmp_path, title="T",
                        context={"encoder": "demo-encoder (demo)"}, notes=["careful"])
    text = path.read_text()
    assert path == tmp_path / "report.md"
    assert "| x\\|y | 0.800 [0.700, 0.850] |" in text  # a '|' in a name must not split the row
    assert "- **encoder**: demo-encoder (demo)" in text
    assert "ROC plot not available" in text  # no plots/roc.png was written
    assert "- careful" in text


def test_report_links_existing_plots_only(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "roc.png").write_bytes(b"png")
    (tmp_path / "plots" / "km_a.png").write_bytes(b"png")
    preds = pd.DataFrame({"patient_id": ["p", "q"] * 2, "model": ["a", "a", "b", "b"], "fold": 0,
                          "label": [0, 1] * 2, "score": [0.1, 0.9] * 2,
                          "pfs_months": [3.0, 9.0] * 2, "event": [1, 0] * 2})
    metrics = {"a": {**entry(0.9), "logrank_p": {"value": 0.0004, "ci_low": None, "ci_high": None}},
               "b": {**entry(0.6), "logrank_p": {"value": None, "ci_low": None, "ci_high": None}}}
    text = write_report(metrics, preds, tmp_path, title="T", context=None).read_text()
    assert "(plots/roc.png)" in text and "(plots/km_a.png)" in text
    assert "km_b.png" not in text
    assert "0.0004" in text
