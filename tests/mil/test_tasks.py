"""Task objects: losses against hand computations, metrics against scikit-learn/lifelines, targets, strata."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines.utils import concordance_index
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.tasks import (
    TASKS,
    BinaryConfig,
    BinaryTask,
    MulticlassConfig,
    MulticlassTask,
    RegressionConfig,
    RegressionTask,
    SurvivalConfig,
    SurvivalTask,
    available_tasks,
    build_task,
)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def tensor(values):
    return torch.tensor(values, dtype=torch.float64)


# -- fixed tiny examples ------------------------------------------------------------------

BIN_Y = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
BIN_LOGITS = [0.3, -1.2, 0.8, 2.0, -0.1]

MC_LABELS = ["b", "a", "c", "a", "a", "b"]
MC_LOGITS = [[0.1, 1.0, -0.5], [2.0, 0.0, 0.3], [-1.0, 0.5, 0.7], [0.2, 0.2, 0.1], [1.5, -0.3, 0.0], [0.0, 0.4, 1.1]]

REG_Y = np.array([3.0, 5.0, 10.0, 2.0])
REG_OUT = [0.5, -0.2, 3.0, -1.0]

# Survival: ties at t=2 (two events and a censored patient), censored before and after events.
SURV_TIME = np.array([2.0, 2.0, 2.0, 5.0, 1.0, 7.0, 3.0])
SURV_EVENT = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
SURV_ETA = [0.5, -0.3, 1.2, 0.1, -0.8, 0.4, 2.0]


def fitted_binary(**config):
    return BinaryTask(BinaryConfig(**config)).fit(BIN_Y)


def fitted_multiclass(**config):
    task = MulticlassTask(MulticlassConfig(**config)).bind({"label": MC_LABELS})
    return task.fit(task.targets({"label": MC_LABELS}))


def fitted_regression(**config):
    return RegressionTask(RegressionConfig(**config)).fit(REG_Y)


def survival_targets():
    return np.column_stack([SURV_TIME, SURV_EVENT])


# -- losses against hand computations -----------------------------------------------------


def test_binary_loss_is_bce_with_pos_weight_of_the_fit_patients():
    task = fitted_binary()
    n_pos, n_neg = BIN_Y.sum(), len(BIN_Y) - BIN_Y.sum()
    assert task.pos_weight == pytest.approx(n_neg / n_pos)  # 3 / 2, as mil.train computes it
    p = sigmoid(BIN_LOGITS)
    expected = np.mean(-(task.pos_weight * BIN_Y * np.log(p) + (1 - BIN_Y) * np.log(1 - p)))
    assert task.loss(tensor(BIN_LOGITS).unsqueeze(1), BIN_Y).item() == pytest.approx(expected, rel=1e-12)
    # One bag per step keeps the weight: a positive bag's loss is pos_weight * -log p.
    assert task.loss(tensor([[0.3]]), [1.0]).item() == pytest.approx(-1.5 * np.log(sigmoid(0.3)), rel=1e-12)
    unweighted = BinaryTask(BinaryConfig(balanced=False))
    assert unweighted.loss(tensor(BIN_LOGITS), BIN_Y).item() == pytest.approx(
        np.mean(-(BIN_Y * np.log(p) + (1 - BIN_Y) * np.log(1 - p))), rel=1e-12
    )


def test_multiclass_loss_is_inverse_frequency_weighted_cross_entropy_over_the_batch_size():
    task = fitted_multiclass()
    assert task.classes == ("a", "b", "c")
    y = task.targets({"label": MC_LABELS})
    np.testing.assert_array_equal(y, [1, 0, 2, 0, 0, 1])
    counts = np.array([3, 2, 1])
    weights = len(y) / (3 * counts)  # n / (K n_k)
    np.testing.assert_allclose(task.class_weights, weights)
    expected = np.mean(weights[y] * -log_softmax(MC_LOGITS)[np.arange(len(y)), y])
    assert task.loss(tensor(MC_LOGITS), y).item() == pytest.approx(expected, rel=1e-12)
    # With one bag per step the weight still counts (PyTorch's weighted "mean" would cancel it).
    single = task.loss(tensor([MC_LOGITS[2]]), [2]).item()
    assert single == pytest.approx(weights[2] * -log_softmax([MC_LOGITS[2]])[0, 2], rel=1e-12)


def test_multiclass_class_absent_from_the_fit_set_gets_the_largest_present_weight():
    task = MulticlassTask(MulticlassConfig(classes=("a", "b", "c")))
    fitted = task.fit(np.array([0, 0, 0, 1]))
    np.testing.assert_allclose(fitted.class_weights, [4 / 9, 4 / 3, 4 / 3])


def test_regression_mse_and_huber_on_fit_standardised_targets():
    mean, std = REG_Y.mean(), REG_Y.std()  # ddof=0
    z = (REG_Y - mean) / std
    d = np.asarray(REG_OUT) - z
    mse = fitted_regression(loss="mse")
    assert mse.scale == pytest.approx((mean, std))
    assert mse.loss(tensor(REG_OUT), REG_Y).item() == pytest.approx(np.mean(d**2), rel=1e-12)
    delta = 0.7
    huber = fitted_regression(loss="huber", huber_delta=delta)
    by_hand = np.where(np.abs(d) <= delta, 0.5 * d**2, delta * (np.abs(d) - 0.5 * delta))
    assert np.abs(d).min() < delta < np.abs(d).max()  # both branches of the Huber loss are used
    assert huber.loss(tensor(REG_OUT), REG_Y).item() == pytest.approx(np.mean(by_hand), rel=1e-12)
    raw = RegressionTask(RegressionConfig(standardise=False))
    assert raw.loss(tensor(REG_OUT), REG_Y).item() == pytest.approx(np.mean((np.asarray(REG_OUT) - REG_Y) ** 2))


def cox_by_hand(eta, time, event):
    """Breslow: each event's risk set is every patient with t_j >= t_i (tied events included)."""
    terms = []
    for i in range(len(time)):
        if event[i]:
            risk_set = [j for j in range(len(time)) if time[j] >= time[i]]
            terms.append(eta[i] - math.log(sum(math.exp(eta[j]) for j in risk_set)))
    return -sum(terms) / len(terms)


def test_cox_loss_with_ties_matches_breslow_by_hand():
    task = SurvivalTask(SurvivalConfig(loss="cox"))
    expected = cox_by_hand(SURV_ETA, SURV_TIME, SURV_EVENT)
    assert task.loss(tensor(SURV_ETA), survival_targets()).item() == pytest.approx(expected, rel=1e-12)
    # An Efron-style or "events before censored" variant would differ on this example.
    no_ties = cox_by_hand(SURV_ETA, SURV_TIME + np.arange(len(SURV_TIME)) * 1e-3, SURV_EVENT)
    assert abs(no_ties - expected) > 1e-3


def test_cox_loss_is_invariant_to_a_constant_added_to_every_log_risk():
    task = SurvivalTask()
    base = task.loss(tensor(SURV_ETA), survival_targets()).item()
    for shift in (-50.0, 3.0, 700.0):
        assert task.loss(tensor(SURV_ETA) + shift, survival_targets()).item() == pytest.approx(base, rel=1e-9)


def discrete_by_hand(logits, time, event, edges):
    total = 0.0
    for z, t, e in zip(np.asarray(logits), time, event):
        h = sigmoid(z)
        j = int(np.sum(np.asarray(edges) < t))  # bin (e_j, e_{j+1}]; K after the last edge
        if e:
            j = min(j, len(edges) - 1)
            total += np.log(h[j]) + np.sum(np.log(1 - h[:j]))
        else:
            total += np.sum(np.log(1 - h[:j]))  # survived the bins before the censoring bin only
    return -total / len(time)


def test_discrete_time_loss_matches_the_likelihood_by_hand():
    task = SurvivalTask(SurvivalConfig(loss="discrete", n_bins=3)).fit(survival_targets())
    event_times = SURV_TIME[SURV_EVENT == 1]
    np.testing.assert_allclose(task.edges, np.quantile(event_times, [1 / 3, 2 / 3, 1]))
    edges = [2.0, 2.5, 5.0]
    task = SurvivalTask(SurvivalConfig(loss="discrete", n_bins=3), edges=edges)
    # Events in bins 0 (at an edge), 1, 2 and after the last edge; censored in bin 0, 1, and after the last edge.
    time = np.array([2.0, 2.2, 4.0, 6.0, 1.0, 2.4, 9.0])
    event = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(time), 3))
    expected = discrete_by_hand(logits, time, event, edges)
    got = task.loss(tensor(logits), np.column_stack([time, event])).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # Censored in bin 1 contributes log(1 - h_0) only; had it survived bin 1 too, the loss would differ.
    only = task.loss(tensor(logits[5:6]), [[2.4, 0.0]]).item()
    assert only == pytest.approx(-np.log(1 - sigmoid(logits[5, 0])), rel=1e-12)


# -- gradients on edge cases --------------------------------------------------------------


def grad_of(task, outputs, targets):
    outputs = torch.tensor(outputs, dtype=torch.float32, requires_grad=True)
    loss = task.loss(outputs, targets)
    loss.backward()
    return loss.item(), outputs.grad


def test_cox_loss_without_events_is_zero_with_zero_gradients():
    loss, grad = grad_of(SurvivalTask(), [[0.3], [1.0], [-2.0]], [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    assert loss == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize(
    ("task", "outputs", "targets"),
    [
        (BinaryTask(pos_weight=3.0), [[80.0], [-80.0]], [0.0, 1.0]),
        (MulticlassTask(MulticlassConfig(classes=("x", "y")), class_weights=[1.0, 2.0]), [[90.0, -90.0]], [1]),
        (RegressionTask(RegressionConfig(loss="huber"), mean=0.0, std=1.0), [[1e4]], [0.0]),
        (SurvivalTask(), [[500.0], [-500.0], [0.0]], [[1.0, 1.0], [2.0, 1.0], [2.0, 0.0]]),  # extreme log-risks
        (SurvivalTask(), [[0.7]], [[1.0, 1.0]]),  # one bag with an event: its own risk set
        (SurvivalTask(SurvivalConfig(loss="discrete", n_bins=2), edges=[1.0, 2.0]), [[60.0, -60.0], [-60.0, 60.0]],
         [[0.5, 0.0], [5.0, 1.0]]),  # censored in bin 0 (no term), event after the last edge
    ],
)
def test_loss_and_gradient_are_finite_on_edge_cases(task, outputs, targets):
    loss, grad = grad_of(task, outputs, targets)
    assert math.isfinite(loss)
    assert torch.isfinite(grad).all()


def test_half_precision_outputs_are_upcast_for_the_loss():
    task = fitted_binary()
    loss = task.loss(torch.tensor(BIN_LOGITS, dtype=torch.float16), BIN_Y)
    assert loss.dtype == torch.float32


def test_loss_before_fit_is_refused():
    with pytest.raises(RuntimeError, match="fit"):
        BinaryTask().loss(torch.zeros(2, 1), [0.0, 1.0])
    with pytest.raises(RuntimeError, match="fit"):
        SurvivalTask(SurvivalConfig(loss="discrete")).loss(torch.zeros(1, 4), [[1.0, 1.0]])
    with pytest.raises(RuntimeError, match="bind"):
        MulticlassTask().n_outputs  # noqa: B018


# -- predictions --------------------------------------------------------------------------


def test_prediction_columns_and_shapes():
    rng = np.random.default_rng(1)
    cases = [
        (fitted_binary(), ("score",)),
        (fitted_multiclass(), ("prob_a", "prob_b", "prob_c", "predicted")),
        (fitted_regression(), ("prediction",)),
        (SurvivalTask(), ("risk",)),
        (SurvivalTask(SurvivalConfig(loss="discrete", n_bins=3), edges=[1.0, 2.0, 4.0]), ("risk", "rmst")),
    ]
    for task, columns in cases:
        outputs = torch.tensor(rng.normal(size=(7, task.n_outputs)))
        predictions = task.predictions(outputs)
        assert tuple(predictions) == task.prediction_columns == columns
        assert all(np.asarray(v).shape == (7,) for v in predictions.values()), task.name


def test_binary_score_is_the_sigmoid_probability():
    np.testing.assert_allclose(fitted_binary().predictions(tensor(BIN_LOGITS))["score"], sigmoid(BIN_LOGITS))


def test_multiclass_probabilities_are_a_softmax_and_predicted_is_the_argmax():
    predictions = fitted_multiclass().predictions(tensor(MC_LOGITS))
    probabilities = np.column_stack([predictions[f"prob_{c}"] for c in "abc"])
    np.testing.assert_allclose(probabilities, np.exp(log_softmax(MC_LOGITS)))
    np.testing.assert_array_equal(predictions["predicted"], np.array(list("abc"))[np.argmax(MC_LOGITS, axis=1)])


def test_regression_predictions_are_de_standardised():
    task = fitted_regression()
    got = task.predictions(tensor([0.0, 1.0, -2.0]))["prediction"]
    np.testing.assert_allclose(got, [REG_Y.mean(), REG_Y.mean() + REG_Y.std(), REG_Y.mean() - 2 * REG_Y.std()])


def test_survival_risk_cox_and_discrete_time_summary():
    assert np.array_equal(SurvivalTask().predictions(tensor(SURV_ETA))["risk"], np.asarray(SURV_ETA))
    edges = [1.0, 3.0]
    task = SurvivalTask(SurvivalConfig(loss="discrete", n_bins=2), edges=edges)
    logits = np.array([[0.0, 0.0], [-3.0, -3.0], [3.0, 3.0]])
    h = sigmoid(logits)
    s1, s2 = 1 - h[:, 0], (1 - h[:, 0]) * (1 - h[:, 1])
    rmst = 1.0 * (1 + s1) / 2 + 2.0 * (s1 + s2) / 2  # trapezoids on (0, 1] and (1, 3]
    got = task.predictions(tensor(logits))
    np.testing.assert_allclose(got["rmst"], rmst)
    np.testing.assert_allclose(got["risk"], -rmst)
    assert got["risk"][2] > got["risk"][0] > got["risk"][1]  # higher hazards -> higher risk


# -- metrics ------------------------------------------------------------------------------


def test_binary_metrics_match_sklearn_at_the_threshold():
    task = fitted_binary(threshold=0.6)
    score = sigmoid(BIN_LOGITS)
    got = task.metrics(pd.DataFrame({"label": BIN_Y.astype(int), "score": score}))
    assert got["auc"] == pytest.approx(roc_auc_score(BIN_Y, score))
    assert got["accuracy"] == pytest.approx(accuracy_score(BIN_Y, score >= 0.6))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(BIN_Y, score >= 0.6))
    assert tuple(got) == task.metric_names


def test_binary_task_at_another_threshold_keeps_its_settings_and_fit():
    task = fitted_binary(threshold=0.6)
    moved = task.at_threshold(0.3)
    assert isinstance(moved, BinaryTask) and moved.config.threshold == 0.3
    assert moved.config == BinaryConfig(**{**task.config.__dict__, "threshold": 0.3})
    assert moved.pos_weight == task.pos_weight and task.config.threshold == 0.6  # the original is untouched
    score = sigmoid(BIN_LOGITS)
    got = moved.metrics(pd.DataFrame({"label": BIN_Y.astype(int), "score": score}))
    assert got["accuracy"] == pytest.approx(accuracy_score(BIN_Y, score >= 0.3))
    with pytest.raises(WSIPipelineError, match="threshold must be in"):
        task.at_threshold(1.0)


def test_multiclass_metrics_match_sklearn():
    task = fitted_multiclass()
    y = task.targets({"label": MC_LABELS})
    frame = pd.DataFrame({**task.decode_targets(y), **task.predictions(tensor(MC_LOGITS))})
    got = task.metrics(frame)
    probabilities = np.exp(log_softmax(MC_LOGITS))
    predicted = np.argmax(MC_LOGITS, axis=1)
    assert got["macro_auc"] == pytest.approx(roc_auc_score(y, probabilities, multi_class="ovr", average="macro"))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, predicted))
    assert got["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"))
    assert 0 < got["macro_auc"] < 1 and got["accuracy"] < 1  # the example is not trivially perfect


def test_multiclass_integer_classes_survive_a_csv_round_trip(tmp_path):
    labels = [10, 2, 2, 10, 1, 1]
    task = MulticlassTask(MulticlassConfig(classes=["2", "10", "1"]))
    assert task.classes == ("1", "2", "10")  # sorted numerically
    y = task.targets({"label": labels})
    np.testing.assert_array_equal(y, [2, 1, 1, 2, 0, 0])
    outputs = np.eye(3)[y] * 4.0
    frame = pd.DataFrame({**task.decode_targets(y), **task.predictions(outputs)})
    frame.to_csv(tmp_path / "p.csv", index=False)
    back = pd.read_csv(tmp_path / "p.csv")  # labels and predicted come back as integers
    assert task.metrics(back)["accuracy"] == 1.0


def test_regression_metrics_match_sklearn_and_scipy():
    task = fitted_regression()
    prediction = task.predictions(tensor(REG_OUT))["prediction"]
    got = task.metrics(pd.DataFrame({"target": REG_Y, "prediction": prediction}))
    assert got["mae"] == pytest.approx(mean_absolute_error(REG_Y, prediction))
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((REG_Y - prediction) ** 2)))
    assert got["r2"] == pytest.approx(r2_score(REG_Y, prediction))
    assert got["pearson"] == pytest.approx(pearsonr(REG_Y, prediction).statistic)
    assert got["spearman"] == pytest.approx(spearmanr(REG_Y, prediction).statistic)


def harrell_by_hand(time, event, risk):
    """Comparable pairs: i had an event and j was known alive later; ties in risk count 1/2."""
    concordant = comparable = 0.0
    for i in range(len(time)):
        for j in range(len(time)):
            if event[i] and time[i] < time[j]:
                comparable += 1
                concordant += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    return concordant / comparable


def test_survival_c_index_matches_lifelines_and_a_pair_count():
    task = SurvivalTask()
    frame = pd.DataFrame({"pfs_months": SURV_TIME, "event": SURV_EVENT, "risk": SURV_ETA})
    got = task.metrics(frame)["c_index"]
    assert got == pytest.approx(concordance_index(SURV_TIME, -np.asarray(SURV_ETA), SURV_EVENT))
    no_ties = SURV_TIME + np.arange(len(SURV_TIME)) * 1e-3  # the hand count ignores lifelines' tied-time rules
    assert task.metrics(frame.assign(pfs_months=no_ties))["c_index"] == pytest.approx(
        harrell_by_hand(no_ties, SURV_EVENT, SURV_ETA)
    )
    # Risk that orders the events perfectly scores 1, its negation 0.
    untied = frame.assign(pfs_months=no_ties)
    perfect = -no_ties
    assert task.metrics(untied.assign(risk=perfect))["c_index"] == 1.0
    assert task.metrics(untied.assign(risk=-perfect))["c_index"] == 0.0
    # Patients without follow-up are left out, not failed on.
    gap = untied.assign(risk=perfect)
    gap.loc[0, "pfs_months"] = np.nan
    assert task.metrics(gap)["c_index"] == 1.0


def test_metrics_are_nan_when_undefined():
    assert math.isnan(fitted_binary().metrics(pd.DataFrame({"label": [1, 1], "score": [0.2, 0.9]}))["auc"])
    assert math.isnan(SurvivalTask().metrics(pd.DataFrame({"pfs_months": [1.0, 2.0], "event": [0, 0], "risk": [1, 2]}))["c_index"])
    assert math.isnan(fitted_regression().metrics(pd.DataFrame({"target": [1.0, 1.0], "prediction": [0.0, 2.0]}))["r2"])


def test_metrics_name_a_missing_prediction_column():
    with pytest.raises(WSIPipelineError, match="risk"):
        SurvivalTask().metrics(pd.DataFrame({"pfs_months": [1.0], "event": [1]}))


# -- model selection ----------------------------------------------------------------------


def test_model_selection_score_is_higher_for_better_predictions():
    rng = np.random.default_rng(2)
    noise = rng.normal(size=40)
    # Binary: logits that follow the label vs. logits that ignore it.
    y = (np.arange(40) % 2).astype(float)
    task = BinaryTask().fit(y)
    assert task.model_selection_score(y * 4 + noise, y) > task.model_selection_score(noise, y)
    # Multiclass.
    mc = MulticlassTask(MulticlassConfig(classes=("a", "b", "c")))
    yc = np.arange(40) % 3
    good = np.eye(3)[yc] * 3 + rng.normal(size=(40, 3))
    assert mc.model_selection_score(good, yc) > mc.model_selection_score(rng.normal(size=(40, 3)), yc)
    # Regression: -MSE in the target's units.
    reg = RegressionTask().fit(noise * 5 + 10)
    z = noise  # standardised target is roughly the noise itself
    assert reg.model_selection_score(z, noise * 5 + 10) > reg.model_selection_score(z + 1, noise * 5 + 10)
    assert reg.model_selection_score(z, noise * 5 + 10) <= 0
    # Survival, both losses: risk that decreases with time beats the opposite.
    targets = np.column_stack([np.arange(1.0, 41.0), (np.arange(40) % 3 > 0).astype(float)])
    cox = SurvivalTask()
    assert cox.model_selection_score(-targets[:, 0], targets) > cox.model_selection_score(targets[:, 0], targets)
    discrete = SurvivalTask(SurvivalConfig(loss="discrete", n_bins=3)).fit(targets)
    high = np.repeat((-targets[:, :1] / 10), 3, axis=1)  # higher hazard for the early failures
    assert discrete.model_selection_score(high, targets) > discrete.model_selection_score(-high, targets)


# -- targets and their validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "data", "column", "message"),
    [
        (BinaryTask(), {"label": [0, 2, 1]}, "label", "not 0 or 1"),
        (BinaryTask(BinaryConfig(label_column="response")), {"label": [0, 1]}, "response", "no column"),
        (RegressionTask(RegressionConfig(target_column="age")), {"age": [50, "old", 60]}, "age", "not a number"),
        (RegressionTask(RegressionConfig(target_column="age")), {"age": [50, None, 60]}, "age", "empty"),
        (MulticlassTask(MulticlassConfig(classes=("a", "b"))), {"label": ["a", "z"]}, "label", "not a known class"),
        (MulticlassTask(MulticlassConfig(classes=("a", "b"))), {"label": ["a", None]}, "label", "empty"),
        (SurvivalTask(SurvivalConfig(time_column="os")), {"os": [3.0, -1.0], "event": [1, 0]}, "os", "negative"),
        (SurvivalTask(), {"pfs_months": [3.0, 1.0], "event": [1, 2]}, "event", "not 0 or 1"),
    ],
)
def test_bad_targets_raise_errors_naming_the_column_and_patient(task, data, column, message):
    frame = pd.DataFrame({"patient_id": [f"p{i}" for i in range(len(next(iter(data.values()))))], **data})
    with pytest.raises(WSIPipelineError, match=message) as caught:
        task.targets(frame)
    assert column in caught.value.where
    assert caught.value.fix
    if message != "no column":
        assert "patient p1" in caught.value.what


def test_targets_shapes_and_decoding_round_trip():
    frame = pd.DataFrame({"patient_id": ["a", "b"], "label": [1, 0], "pfs_months": [2.5, 4.0], "event": [0, 1], "target": [1.5, -2]})
    for task in (BinaryTask(), RegressionTask(), SurvivalTask()):
        y = task.targets(frame)
        decoded = task.decode_targets(y)
        assert tuple(decoded) == task.target_columns
        for name, values in decoded.items():
            np.testing.assert_array_equal(values, frame[name].to_numpy())
    assert SurvivalTask().targets(frame).shape == (2, 2)


def test_multiclass_bind_takes_sorted_classes_from_the_cohort_without_changing_the_task():
    task = MulticlassTask()
    bound = task.bind({"label": ["stroma", "tumour", "immune", "tumour"]})
    assert bound.classes == ("immune", "stroma", "tumour")
    assert bound.n_outputs == 3
    assert task.classes == ()
    with pytest.raises(WSIPipelineError, match="2 or more"):
        task.bind({"label": ["tumour", "tumour"]})


# -- stratification -----------------------------------------------------------------------


def test_stratify_labels():
    np.testing.assert_array_equal(BinaryTask().stratify_labels(BIN_Y), [1, 0, 0, 1, 0])
    np.testing.assert_array_equal(MulticlassTask(MulticlassConfig(classes=("a", "b"))).stratify_labels(np.array([1, 0])), [1, 0])
    np.testing.assert_array_equal(SurvivalTask().stratify_labels(survival_targets()), SURV_EVENT.astype(int))
    values = np.arange(8.0)  # quartiles: edges at 1.75, 3.5, 5.25
    np.testing.assert_array_equal(RegressionTask().stratify_labels(values), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(RegressionTask(RegressionConfig(stratify_bins=1)).stratify_labels(values), np.zeros(8))
    tied = RegressionTask().stratify_labels(np.array([1.0] * 6 + [2.0, 3.0]))  # ties merge bins
    assert set(tied.tolist()) == {0, 1}


# -- fitting ------------------------------------------------------------------------------


def test_fit_returns_a_new_task_and_fitted_state_rebuilds_it():
    for task, y, outputs in [
        (BinaryTask(), BIN_Y, tensor(BIN_LOGITS)),
        (MulticlassTask(MulticlassConfig(classes=("a", "b", "c"))), np.array([1, 0, 2, 0, 0, 1]), tensor(MC_LOGITS)),
        (RegressionTask(), REG_Y, tensor(REG_OUT)),
        (SurvivalTask(SurvivalConfig(loss="discrete", n_bins=2)), survival_targets(), torch.zeros(7, 2, dtype=torch.float64)),
    ]:
        fitted = task.fit(y)
        assert fitted is not task and fitted.is_fitted and not task.is_fitted
        rebuilt = type(fitted)(fitted.config, **fitted.fitted_state)
        assert rebuilt.loss(outputs, y).item() == fitted.loss(outputs, y).item()


@pytest.mark.parametrize(
    ("task", "targets", "message"),
    [
        (BinaryTask(), np.array([1.0, 1.0]), "both classes"),
        (MulticlassTask(MulticlassConfig(classes=("a", "b"))), np.array([1, 1, 1]), "at least two"),
        (RegressionTask(), np.array([3.0, 3.0, 3.0]), "do not vary"),
        (SurvivalTask(), np.array([[1.0, 0.0], [2.0, 0.0]]), "none of the 2 fit patients has an event"),
        (SurvivalTask(SurvivalConfig(loss="discrete", n_bins=3)), np.array([[2.0, 1.0]] * 5 + [[3.0, 1.0]]), "distinct bin edges"),
    ],
)
def test_fit_refuses_fit_sets_that_cannot_train_the_task(task, targets, message):
    with pytest.raises(WSIPipelineError, match=message):
        task.fit(targets)


# -- registry -----------------------------------------------------------------------------


def test_registry_builds_every_task_with_its_outputs():
    assert available_tasks() == ["binary", "multiclass", "regression", "survival"] == sorted(TASKS)
    assert build_task({"type": "binary"}).n_outputs == 1
    assert build_task({"type": "multiclass", "classes": ["x", "y", "z"]}).n_outputs == 3
    assert build_task({"type": "regression", "target_column": "age", "loss": "huber"}).config.loss == "huber"
    assert build_task({"type": "survival", "loss": "discrete", "n_bins": 5}).n_outputs == 5
    assert build_task({"type": "survival"}).per_sample_loss is False
    assert build_task({}).name == "binary"
    fitted = build_task({"type": "binary"}, fit_targets=np.array([0.0, 0.0, 0.0, 1.0]))
    assert fitted.pos_weight == 3.0


def test_registry_reads_pydantic_like_models_and_config_dataclasses():
    class TaskModel:  # stands in for the workflow's TaskConfig
        def model_dump(self):
            return {"type": "binary", "label_column": "response", "positive_name": "responder", "negative_name": "non-responder"}

    task = build_task(TaskModel())
    assert task.target_columns == ("response",)
    assert build_task(SurvivalConfig(time_column="os")).target_columns == ("os", "event")


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"type": "ordinal"}, "task.type"),
        ({"type": "binary", "classes": ["a", "b"]}, "task.classes"),
        ({"type": "regression", "loss": "l1"}, "task.loss"),
        ({"type": "survival", "n_bins": 1}, "task.n_bins"),
        ({"type": "multiclass", "classes": ["a", "a", "b"]}, "task.classes"),
        ({"type": "binary", "threshold": 1.5}, "task.threshold"),
    ],
)
def test_registry_errors_name_the_setting(config, where):
    with pytest.raises(WSIPipelineError) as caught:
        build_task(config)
    assert caught.value.where == where
    assert caught.value.fix
