"""Bags from an instance table (CSV, Parquet) or a folder of .h5 files, and the manifest's cohort sources.

The toy tables are built here by hand, so what the sources read is compared with arrays known
in advance; the config errors each name what is wrong and how to fix it.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from wsi_pipeline.config.manifest import CohortConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.cohort_bags import load_bags
from wsi_pipeline.mil.external_bags import (
    H5Bags,
    InstanceTableBags,
    load_h5_cohort,
    load_instance_table,
)

#: Three bags, two of them one patient's; instances 2, 3 and 1.
BAGS = {"b1": [[1.0, 2.0], [3.0, 4.0]], "b2": [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]], "b3": [[-1.0, 0.5]]}
PATIENT = {"b1": "p1", "b2": "p2", "b3": "p2"}
LABEL = {"b1": 1, "b2": 0, "b3": 0}


def toy_table() -> pd.DataFrame:
    rows = [
        {"bag_id": bag, "patient_id": PATIENT[bag], "label": LABEL[bag], "f0": x[0], "f1": x[1]}
        for bag, xs in BAGS.items()
        for x in xs
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_instance_table_bags_equal_those_built_by_hand(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    path = tmp_path / f"instances{suffix}"
    frame = toy_table()
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)

    cohort, source, notes = load_instance_table(path)
    assert isinstance(source, InstanceTableBags) and notes == []
    assert source.feature_columns == ("f0", "f1")
    assert source.patient_slides == (("p1", ("b1",)), ("p2", ("b2", "b3")))
    assert cohort.targets == {"p1": 1, "p2": 0}
    assert list(cohort.slides["slide_id"]) == ["b1", "b2", "b3"]

    bags = load_bags(source, ["p1", "p2"])
    np.testing.assert_array_equal(bags["p1"], np.array(BAGS["b1"], dtype=np.float32))
    np.testing.assert_array_equal(bags["p2"], np.array(BAGS["b2"] + BAGS["b3"], dtype=np.float32))
    # Only the patients asked for; the mean-pooled bag is what a hand computation gives.
    assert set(load_bags(source, ["p1"])) == {"p1"}
    np.testing.assert_allclose(bags["p2"].mean(axis=0), [5.0, 6.125])
    # Late fusion reads each bag of a patient on its own.
    parts = load_bags(source, ["p2"], by_slide=True)["p2"]
    assert [part.tolist() for part in parts] == [BAGS["b2"], BAGS["b3"]]
    # Slide-level rows name a bag by its bag_id, in the order of its patient's parts.
    assert source.slide_names() == (("p1", ("b1",)), ("p2", ("b2", "b3")))


def test_instance_table_patient_defaults_to_bag(tmp_path):
    path = tmp_path / "instances.csv"
    toy_table().drop(columns="patient_id").to_csv(path, index=False)
    cohort, source, _ = load_instance_table(path)
    assert source.patients == ("b1", "b2", "b3")
    assert cohort.targets == {"b1": 1, "b2": 0, "b3": 0}


def test_non_numeric_feature_columns_are_named(tmp_path):
    path = tmp_path / "instances.csv"
    frame = toy_table()
    frame["scanner"] = "A"
    frame.to_csv(path, index=False)
    with pytest.raises(WSIPipelineError) as caught:
        load_instance_table(path)
    assert "scanner" in caught.value.what and "drop those columns" in caught.value.fix


def test_bag_with_mixed_labels_is_named(tmp_path):
    path = tmp_path / "instances.csv"
    frame = toy_table()
    frame.loc[frame.index[frame["bag_id"] == "b2"][0], "label"] = 1
    frame.to_csv(path, index=False)
    with pytest.raises(WSIPipelineError) as caught:
        load_instance_table(path)
    assert "b2" in caught.value.what and "'label'" in caught.value.what


def test_h5_dir_bags_match_their_files(tmp_path):
    folder = tmp_path / "h5"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    features = {"s1": rng.normal(size=(4, 3)).astype(np.float32), "s2": rng.normal(size=(2, 3)).astype(np.float32)}
    for name, values in features.items():
        target = folder / ("sub" if name == "s2" else "") / f"{name}.h5"
        with h5py.File(target, "w") as h5:
            h5["features"] = values
            if name == "s1":  # coords are optional
                h5["coords"] = np.zeros((len(values), 2), dtype=np.int64)
    table = tmp_path / "labels.csv"
    pd.DataFrame(
        {"patient_id": ["p1", "p2", "p2"], "slide_id": ["s1", "s2", "s3"], "label": [1, 0, 0]}
    ).to_csv(table, index=False)

    cohort, source, notes = load_h5_cohort(folder, table)
    assert isinstance(source, H5Bags)
    assert [patient for patient, _ in source.patient_slides] == ["p1", "p2"]
    assert notes == ["patient p2: trained without slide(s) s3 (no .h5 file)"]
    bags = load_bags(source, ["p1", "p2"])
    np.testing.assert_array_equal(bags["p1"], features["s1"])
    np.testing.assert_array_equal(bags["p2"], features["s2"])
    assert cohort.targets == {"p1": 1, "p2": 0}
    # Slide-level rows name a file by the table's slide_id it was matched by, not its path.
    assert source.slide_names() == (("p1", ("s1",)), ("p2", ("s2",)))


@pytest.mark.parametrize(
    ("cohort", "message"),
    [
        ({"table": "a.csv", "instances": "b.csv"}, "got table and instances"),
        ({"h5_dir": "h5"}, "'h5_dir' needs 'table'"),
        ({}, "got none"),
        ({"instances": "b.csv", "slide_root": "x"}, "'slide_root' is for a 'table' of slides"),
    ],
)
def test_cohort_sources_exclusive(cohort, message):
    with pytest.raises(ValidationError, match=message):
        CohortConfig.model_validate(cohort)
    assert CohortConfig.model_validate({"h5_dir": "h5", "table": "labels.csv"}).features_given


def test_dry_run_says_tile_and_extract_are_not_run(tmp_path):
    from rich.console import Console

    from wsi_pipeline.config import load_run_config
    from wsi_pipeline.engine.plan import dry_run

    toy_table().to_csv(tmp_path / "instances.csv", index=False)
    manifest = {
        "workflow": "mil_benchmark",
        "cohort": {"instances": "instances.csv"},
        "output": "out",
        "overrides": {"validation": {"n_folds": 2, "n_repeats": 1}},
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(manifest))
    console = Console(record=True, width=200)
    dry_run(load_run_config(tmp_path / "m.yaml"), ("tile", "extract", "train", "score"), console)
    text = console.export_text()
    assert "train → score" in text and "tile and extract not run" in text


def test_tile_alone_is_refused_for_a_cohort_with_features(tmp_path):
    from wsi_pipeline.config import load_run_config
    from wsi_pipeline.engine.runner import stages_for

    toy_table().to_csv(tmp_path / "instances.csv", index=False)
    (tmp_path / "m.yaml").write_text(
        yaml.safe_dump({"workflow": "mil_benchmark", "cohort": {"instances": "instances.csv"}, "output": "out"})
    )
    config = load_run_config(tmp_path / "m.yaml")
    assert stages_for(config, ("tile", "extract", "train", "score")) == ("train", "score")
    with pytest.raises(WSIPipelineError, match="nothing to tile"):
        stages_for(config, ("tile",))
