"""Training, early stopping on the inner validation set, inference and cross-validation."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.cv import cross_validate, prediction_columns, train_fold
from wsi_pipeline.mil.registry import available_aggregators, resolve_params
from wsi_pipeline.mil.splits import FoldPlan, LeakageError, plan_folds
from wsi_pipeline.mil.tasks import BinaryTask
from wsi_pipeline.mil.train import (
    LOSS_TIE_TOLERANCE,
    TrainConfig,
    attention_weights,
    bag_outputs,
    fit_aggregator,
    predict_bags,
    resolve_device,
    validation_scores,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Train single-threaded, as the engine's workers do.

    Bags this small gain nothing from intra-op threads, and on a busy 2-core machine
    OpenMP threads spin against each other and make training several times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_config(**settings) -> TrainConfig:
    """Training settings as a workflow's model section gives them (checked there)."""
    return TrainConfig.from_model(ModelConfig(**settings))


FAST = train_config(lr=1e-3, max_epochs=30, patience=6, hidden_dim=32, max_instances=64)


def synthetic_mil(n_bags: int = 60, dim: int = 64, seed: int = 0, witness_fraction: float = 0.15):
    """Positive bags hide a minority of instances shifted along one direction; negative bags none."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    bags, labels = {}, {}
    for i in range(n_bags):
        pid, label = f"pt-{i:03d}", i % 2
        bag = rng.normal(size=(int(rng.integers(40, 120)), dim))
        if label:
            witnesses = rng.choice(len(bag), size=max(1, round(witness_fraction * len(bag))), replace=False)
            bag[witnesses] += 3.0 * direction
        bags[pid] = bag.astype(np.float16)  # as the feature store keeps them
        labels[pid] = label
    return bags, labels


def noise_bags(n_bags: int = 30, seed: int = 0):
    """Bags with random labels: anything learned is memorisation, so validation loss turns up."""
    rng = np.random.default_rng(seed)
    bags = {f"r{i:02d}": rng.normal(size=(30, 64)).astype(np.float32) for i in range(n_bags)}
    labels = {pid: i % 2 for i, pid in enumerate(bags)}
    return bags, labels


class RecordingMapping(Mapping):
    """A read-only mapping that remembers which keys were read."""

    def __init__(self, data: Mapping) -> None:
        self.data, self.read = dict(data), set()

    def __getitem__(self, key):
        self.read.add(key)
        return self.data[key]

    def __iter__(self) -> Iterator:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_abmil_learns_a_synthetic_mil_problem_out_of_fold():
    bags, labels = synthetic_mil()
    predictions = cross_validate(bags, labels, ["abmil"], n_folds=5, config=FAST, seed=0)
    assert list(predictions.columns) == list(prediction_columns(BinaryTask()))
    assert list(predictions.columns) == ["patient_id", "model", "repeat", "fold", "label", "score"]
    assert sorted(predictions["patient_id"]) == sorted(bags)  # one out-of-fold row per patient
    assert roc_auc_score(predictions["label"], predictions["score"]) >= 0.9


def test_cross_validate_gives_one_row_per_patient_and_aggregator():
    bags, labels = synthetic_mil(n_bags=20, dim=16, seed=3)
    config = train_config(max_epochs=2, patience=1, hidden_dim=8)
    predictions = cross_validate(bags, labels, ["abmil", "meanpool"], n_folds=4, config=config)
    assert len(predictions) == 2 * len(bags)
    for model, rows in predictions.groupby("model"):
        assert rows["patient_id"].is_unique and set(rows["patient_id"]) == set(bags)
        assert rows["label"].tolist() == [labels[p] for p in rows["patient_id"]]
        assert rows["score"].between(0, 1).all()
    # Both aggregators were scored on the same folds, so their predictions pair up by patient.
    folds = predictions.pivot(index="patient_id", columns="model", values="fold")
    assert (folds["abmil"] == folds["meanpool"]).all()
    assert set(predictions.attrs["histories"]) == {(m, f) for m in ("abmil", "meanpool") for f in range(4)}


def test_unknown_aggregator_fails_before_any_training():
    bags, labels = synthetic_mil(n_bags=20, dim=16)
    with pytest.raises(WSIPipelineError, match="unknown aggregator 'clam'; did you mean") as error:
        cross_validate(bags, labels, ["meanpool", "clam"], n_folds=4)
    assert all(name in str(error.value) for name in available_aggregators())


def test_early_stopping_restores_the_best_validation_epoch():
    bags, labels = noise_bags()
    ids = list(bags)
    fit_ids, val_ids = ids[:20], ids[20:]
    config = train_config(lr=3e-3, max_epochs=40, patience=5, dropout=0.0, max_instances=None)
    model, history = fit_aggregator("abmil", bags, labels, fit_ids, val_ids, config, seed=0)

    val_losses = history["val_loss"]
    best = history["best_epoch"]
    assert len(history["train_loss"]) == len(val_losses) == len(history["val_score"]) == history["epochs_run"]
    assert history["stopped_early"] and history["epochs_run"] == best + 1 + config.patience
    assert val_losses[best] <= min(val_losses) + LOSS_TIE_TOLERANCE
    # The test only means something if the last epoch is clearly worse than the best one.
    assert val_losses[-1] > val_losses[best] + 0.05

    y_val = np.array([labels[p] for p in val_ids])
    loss, _ = validation_scores(history["task"], bag_outputs(model, bags, val_ids), y_val)
    assert loss == pytest.approx(val_losses[best], abs=1e-6)
    assert loss == pytest.approx(history["best_val_loss"], abs=1e-6)
    assert not model.training


def test_training_touches_only_fit_and_validation_patients():
    bags, labels = synthetic_mil(n_bags=24, dim=16)
    plan = plan_folds(list(labels), list(labels.values()), n_folds=4)[0]
    recorded_bags, recorded_labels = RecordingMapping(bags), RecordingMapping(labels)
    fit_aggregator("abmil", recorded_bags, recorded_labels, plan.fit_ids, plan.val_ids, train_config(max_epochs=3), seed=0)
    allowed = set(plan.fit_ids) | set(plan.val_ids)
    assert recorded_bags.read <= allowed and recorded_labels.read <= allowed
    assert not recorded_bags.read & set(plan.test_ids)


def test_train_fold_refuses_a_plan_that_tests_on_training_patients():
    bags, labels = synthetic_mil(n_bags=20, dim=16)
    ids = list(bags)
    leaky = FoldPlan(fold=0, fit_ids=tuple(ids[:12]), val_ids=tuple(ids[12:16]), test_ids=tuple(ids[10:20]))
    with pytest.raises(LeakageError, match="fold 0 test vs fit"):
        train_fold(leaky, "abmil", bags, labels, train_config(max_epochs=1), seed=0)


def test_train_fold_predicts_exactly_the_test_patients():
    bags, labels = synthetic_mil(n_bags=20, dim=16)
    plan = plan_folds(list(labels), list(labels.values()), n_folds=4, seed=1)[2]
    rows = train_fold(plan, "meanpool", bags, labels, train_config(max_epochs=2), seed=0)
    assert isinstance(rows, pd.DataFrame)
    assert tuple(rows["patient_id"]) == plan.test_ids
    assert set(rows["model"]) == {"meanpool"} and set(rows["fold"]) == {2}
    assert "best_epoch" in rows.attrs["history"]


def test_training_is_deterministic_by_seed_and_leaves_the_global_rng_alone():
    bags, labels = synthetic_mil(n_bags=20, dim=16)
    ids = list(bags)
    config = train_config(max_epochs=3, max_instances=16)

    def run(seed):
        return fit_aggregator("abmil", bags, labels, ids[:14], ids[14:], config, seed=seed)

    torch.manual_seed(1234)
    expected_draw = torch.rand(3)
    torch.manual_seed(1234)
    model_a, history_a = run(5)
    assert torch.equal(torch.rand(3), expected_draw)

    model_b, history_b = run(5)
    _, history_c = run(6)
    assert history_a["train_loss"] == history_b["train_loss"]
    assert history_a["val_loss"] == history_b["val_loss"]
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[key])
    assert history_a["train_loss"] != history_c["train_loss"]


def test_predictions_and_attention_use_whole_bags_in_eval_mode():
    bags, labels = synthetic_mil(n_bags=20, dim=16)
    ids = list(bags)
    model, _ = fit_aggregator("abmil", bags, labels, ids[:14], ids[14:], train_config(max_epochs=2, max_instances=8), seed=0)
    model.train()  # the helpers must switch to eval themselves and give the mode back
    probabilities = predict_bags(model, bags, ids[:3], BinaryTask().fit(np.array([0.0, 1.0])))["score"]
    assert model.training
    assert probabilities.shape == (3,) and np.all((probabilities > 0) & (probabilities < 1))
    model.eval()
    bag = torch.as_tensor(bags[ids[0]], dtype=torch.float32)
    with torch.no_grad():
        outputs, weights = model(bag.unsqueeze(0), torch.ones(1, len(bag), dtype=torch.bool))
    assert probabilities[0] == pytest.approx(torch.sigmoid(outputs[0, 0]).item(), abs=1e-6)
    exported = attention_weights(model, bags[ids[0]])
    assert exported.shape == (len(bags[ids[0]]),)
    np.testing.assert_allclose(exported, weights[0].numpy(), atol=1e-6)


def test_bad_inputs_are_user_errors_naming_the_patient():
    bags, labels = synthetic_mil(n_bags=12, dim=8)
    ids = list(bags)
    config = train_config(max_epochs=1)
    broken = dict(bags)
    broken[ids[1]] = np.full((5, 8), np.inf, dtype=np.float16)
    with pytest.raises(WSIPipelineError, match=f"patient {ids[1]}.*NaN or infinite"):
        fit_aggregator("abmil", broken, labels, ids[:8], ids[8:], config, seed=0)
    with pytest.raises(WSIPipelineError, match=f"patient {ids[2]}.*no feature bag"):
        fit_aggregator("abmil", {k: v for k, v in bags.items() if k != ids[2]}, labels, ids[:8], ids[8:], config, seed=0)
    with pytest.raises(WSIPipelineError, match=f"'label' is not 0 or 1.*patient {ids[0]}"):
        fit_aggregator("abmil", bags, {**labels, ids[0]: 2}, ids[:8], ids[8:], config, seed=0)
    with pytest.raises(WSIPipelineError, match="both classes"):
        fit_aggregator("abmil", bags, labels, ids[0:8:2], ids[8:], config, seed=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="'auto' is the CPU only where CUDA is absent")
def test_auto_device_trains_exactly_as_the_cpu_without_a_gpu():
    bags, labels = synthetic_mil(n_bags=20, dim=16)
    plan = plan_folds(list(labels), list(labels.values()), n_folds=4, seed=1)[0]
    config = train_config(max_epochs=3, max_instances=16)
    on_cpu = train_fold(plan, "abmil", bags, labels, config, seed=2, device="cpu")
    on_auto = train_fold(plan, "abmil", bags, labels, config, seed=2, device="auto")
    assert resolve_device("auto") == torch.device("cpu")
    assert on_auto["score"].tolist() == on_cpu["score"].tolist()
    assert on_auto.attrs["history"]["val_loss"] == on_cpu.attrs["history"]["val_loss"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_without_cuda_is_a_user_error_naming_the_setting():
    bags, labels = synthetic_mil(n_bags=12, dim=8)
    ids = list(bags)
    with pytest.raises(WSIPipelineError, match="cuda:1.*0 CUDA device") as error:
        fit_aggregator("abmil", bags, labels, ids[:8], ids[8:], train_config(max_epochs=1), seed=0, device="cuda:1")
    assert error.value.where == "model.device"


@pytest.mark.parametrize("name", available_aggregators())
def test_every_aggregator_trains_and_predicts_through_the_fold_api(name):
    bags, labels = synthetic_mil(n_bags=16, dim=8, seed=4)
    plan = plan_folds(list(labels), list(labels.values()), n_folds=4, seed=0)[0]
    small = {"transmil": {"heads": 2, "landmarks": 8}, "dsmil": {"q_dim": 8}}
    config = train_config(
        aggregators=[name], max_epochs=2, patience=1, hidden_dim=16, max_instances=32,
        aggregator_params={name: small[name]} if name in small else {},
    )
    rows = train_fold(plan, name, bags, labels, config, seed=0)
    assert tuple(rows["patient_id"]) == plan.test_ids
    assert rows["score"].between(0, 1).all() and rows["score"].nunique() > 1
    history = rows.attrs["history"]
    assert history["epochs_run"] == 2 and np.isfinite(history["train_loss"]).all()
    assert history["aggregator_params"] == resolve_params(name, config.params_for(name))
    if "hidden_dim" in history["aggregator_params"]:
        assert history["aggregator_params"]["hidden_dim"] == 16


GOLDEN = Path(__file__).parent / "data" / "binary_cv_golden.json"


def test_binary_cross_validation_matches_the_run_before_tasks_were_wired_in():
    """Golden: computed with the training code of commit b668436 (binary BCE hard-coded, no tasks).

    The task-aware path must give the same folds, validation losses and scores, bit for bit.
    """
    golden = json.loads(GOLDEN.read_text())
    bags, labels = synthetic_mil(n_bags=24, dim=16, seed=7)
    # Standardisation and the cosine schedule (on by default since) did not exist then.
    config = train_config(
        max_epochs=6, patience=3, hidden_dim=16, max_instances=32, lr=1e-3, standardise=False, lr_schedule="constant"
    )
    frame = cross_validate(bags, labels, ["abmil", "meanpool"], n_folds=3, config=config, seed=5)
    for column in ("patient_id", "model", "fold", "label", "score"):
        assert frame[column].tolist() == golden["rows"][column], column
    assert set(frame["repeat"]) == {0}
    histories = frame.attrs["histories"]
    assert {f"{m}/{f}": h["val_loss"] for (m, f), h in histories.items()} == golden["val_loss"]
    assert {f"{m}/{f}": h["best_epoch"] for (m, f), h in histories.items()} == golden["best_epoch"]


def test_train_fold_also_predicts_its_validation_patients_with_the_kept_model():
    """What a decision threshold may be chosen on: the fold's validation patients, never its test patients."""
    bags, labels = synthetic_mil(n_bags=20, dim=8, seed=2)
    ids = list(bags)
    plan = FoldPlan(fold=1, fit_ids=tuple(ids[:12]), val_ids=tuple(ids[12:16]), test_ids=tuple(ids[16:]))
    frame = train_fold(plan, "abmil", bags, labels, train_config(max_epochs=3, patience=3, hidden_dim=8), seed=0)
    history = frame.attrs["history"]
    validation = pd.DataFrame(history["validation_predictions"])
    assert list(validation["patient_id"]) == list(plan.val_ids) and set(validation["fold"]) == {1}
    assert list(validation.columns) == list(frame.columns)
    kept = predict_bags(history["model"], history["fold_bags"], plan.val_ids, history["task"])["score"]
    np.testing.assert_allclose(validation["score"], kept)
    assert validation["label"].tolist() == [labels[p] for p in plan.val_ids]
    inner = train_fold(plan, "abmil", bags, labels, train_config(max_epochs=1, patience=1, hidden_dim=8), seed=0,
                       predict_validation=False)  # nested CV's inner folds skip it
    assert "validation_predictions" not in inner.attrs["history"]
