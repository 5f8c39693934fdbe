"""ROC and Kaplan-Meier plots on their own."""

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.layout import km_plot_name, safe_name
from wsi_pipeline.scoring.plots import plot_km, plot_roc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def predictions(survival: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 15)
    df = pd.DataFrame({
        "patient_id": [f"p{i}" for i in range(30)],
        "model": "abmil",
        "fold": 0,
        "label": labels,
        "score": np.clip(labels * 0.4 + rng.random(30) * 0.6, 0, 1),
    })
    if survival:
        df["pfs_months"] = rng.exponential(10.0, 30)
        df["event"] = 1
        df.loc[0, ["pfs_months", "event"]] = np.nan  # a patient without follow-up
    return df


def test_plot_roc_without_metrics_bootstraps_itself(tmp_path):
    path = plot_roc(predictions(), tmp_path / "nested" / "roc.png", n_resamples=50)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_roc_tolerates_a_single_class_model(tmp_path):
    df = predictions(survival=False)
    other = df.assign(model="allpositive", label=1, patient_id=df["patient_id"] + "b")
    path = plot_roc(pd.concat([df, other], ignore_index=True), tmp_path / "roc.png", n_resamples=20)
    assert path.stat().st_size > 0


def test_plot_km_writes_png(tmp_path):
    path = plot_km(predictions(), tmp_path / "km.png", "abmil", threshold=0.5)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_km_with_one_predicted_group(tmp_path):
    df = predictions().assign(score=0.9)
    assert plot_km(df, tmp_path / "km.png", "abmil").exists()


def test_plot_km_errors(tmp_path):
    with pytest.raises(WSIPipelineError, match="survival"):
        plot_km(predictions(survival=False), tmp_path / "km.png", "abmil")
    with pytest.raises(WSIPipelineError, match="abmil"):
        plot_km(predictions(), tmp_path / "km.png", "transmil")


def test_plot_file_names_are_safe():
    assert safe_name("abmil/uni v2") == "abmil_uni_v2"
    assert km_plot_name("abmil") == "km_abmil.png"
