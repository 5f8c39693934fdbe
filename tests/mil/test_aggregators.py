"""Every aggregator behind the one interface: shapes, padding, permutation, attention, losses, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from wsi_pipeline.mil.aggregators import (
    CLAMMB,
    CLAMSB,
    DSMIL,
    Aggregator,
    pad_bags,
    smooth_top1_svm,
)
from wsi_pipeline.mil.aggregators.clam import instance_clustering_loss
from wsi_pipeline.mil.registry import available_aggregators, build_aggregator

D = 12
# Small settings so every test runs in well under a second per aggregator.
SMALL = {
    "abmil": {"hidden_dim": 16, "attention_dim": 8},
    "abmil-plain": {"hidden_dim": 16, "attention_dim": 8},
    "clam-sb": {"hidden_dim": 16, "attention_dim": 8, "k_sample": 2},
    "clam-mb": {"hidden_dim": 16, "attention_dim": 8, "k_sample": 2},
    "transmil": {"hidden_dim": 16, "heads": 2, "landmarks": 4, "residual_kernel": 3},
    "dsmil": {"q_dim": 8},
    "meanpool": {"hidden_dim": 16},
    "maxpool": {"hidden_dim": 16},
    "linear-probe": {},
}
NAMES = sorted(SMALL)
# TransMIL encodes positions (PPEG, landmark groups), so it is the one aggregator whose
# output depends on the order of the instances; its test below asserts that it does.
PERMUTATION_INVARIANT = [name for name in NAMES if name != "transmil"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(name: str, n_outputs: int = 1, seed: int = 0, **overrides) -> Aggregator:
    torch.manual_seed(seed)
    return build_aggregator(name, D, n_outputs, **{**SMALL[name], **overrides}).eval()


def random_batch(sizes: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return pad_bags([torch.randn(n, D, generator=generator) for n in sizes])


def test_every_registered_aggregator_is_tested():
    assert NAMES == available_aggregators()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_output_and_attention_shapes(name, n_outputs):
    bags, mask = random_batch([9, 5, 1])
    with torch.no_grad():
        outputs, attention = make(name, n_outputs)(bags, mask)
    assert outputs.shape == (3, n_outputs)
    assert attention.shape == (3, 9)
    assert torch.isfinite(outputs).all() and torch.isfinite(attention).all()


@pytest.mark.parametrize("name", NAMES)
def test_defaults_of_the_registry_build_and_run(name):
    torch.manual_seed(0)
    model = build_aggregator(name, D, 1).eval()
    bags, mask = random_batch([30, 7])
    with torch.no_grad():
        outputs, attention = model(bags, mask)
    assert outputs.shape == (2, 1) and torch.isfinite(outputs).all()
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("name", NAMES)
def test_attention_is_a_distribution_over_each_bags_real_instances(name):
    bags, mask = random_batch([20, 6, 1], seed=1)
    mask[0, [3, 11]] = False  # holes inside a bag, not only trailing padding
    with torch.no_grad():
        _, attention = make(name)(bags * 3, mask)
    assert (attention >= 0).all()
    assert (attention[~mask] == 0).all()
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    assert attention[2, 0].item() == pytest.approx(1.0)  # a one-instance bag


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_padding_never_changes_a_result(name, n_outputs):
    model = make(name, n_outputs)
    generator = torch.Generator().manual_seed(2)
    bag = torch.randn(1, 7, D, generator=generator)
    with torch.no_grad():
        alone, attention_alone = model(bag, torch.ones(1, 7, dtype=torch.bool))
        # The same bag second in a batch, its rows spread among garbage rows (huge, inf, NaN)
        # that the mask marks as padding, beside another bag of another size.
        padded = torch.full((2, 12, D), 1e6)
        padded[0, :, :3] = float("nan")
        padded[1, 4] = float("inf")
        mask = torch.zeros(2, 12, dtype=torch.bool)
        rows = torch.tensor([0, 2, 3, 6, 8, 9, 11])
        padded[1, rows] = bag[0]
        mask[1, rows] = True
        padded[0, :10] = torch.randn(10, D, generator=generator)
        mask[0, :10] = True
        batched, attention = model(padded, mask)
    torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention[1, rows], attention_alone[0], atol=1e-6, rtol=1e-5)
    assert (attention[1, ~mask[1]] == 0).all()


@pytest.mark.parametrize("name", PERMUTATION_INVARIANT)
def test_permutation_invariance_where_the_paper_claims_it(name):
    model = make(name, 3)
    bags, mask = random_batch([25])
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs, attention = model(bags, mask)
        outputs_p, attention_p = model(bags[:, perm], mask)
    torch.testing.assert_close(outputs_p, outputs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention_p, attention[:, perm], atol=1e-6, rtol=1e-5)


def test_transmil_is_not_permutation_invariant():
    model = make("transmil")
    bags, mask = random_batch([25])
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs, _ = model(bags, mask)
        outputs_p, _ = model(bags[:, perm], mask)
    assert (outputs - outputs_p).abs().max().item() > 1e-4


def test_attention_of_abmil_is_learned_not_uniform():
    # Guards against a softmax over the wrong axis (all ones, or 1/N everywhere).
    bags, mask = random_batch([20])
    with torch.no_grad():
        _, attention = make("abmil")(bags * 3, mask)
    assert attention.std().item() > 1e-4


def test_maxpool_attention_is_one_hot_on_the_instance_behind_output_0():
    model = make("maxpool", 3)
    bags, mask = random_batch([15])
    with torch.no_grad():
        outputs, attention = model(bags, mask)
        scores = model.mlp(bags)[0]
    winner = int(scores[:, 0].argmax())
    assert attention[0, winner].item() == 1.0 and attention.sum().item() == 1.0
    torch.testing.assert_close(outputs[0], scores.max(dim=0).values)


def test_dsmil_output_is_the_mean_of_its_two_streams_probabilities():
    model = make("dsmil", 3)
    bags, mask = random_batch([15, 4])
    with torch.no_grad():
        outputs, _ = model(bags, mask)
        max_scores, bag_scores, _ = model.streams(bags, mask)
    expected = 0.5 * torch.sigmoid(max_scores) + 0.5 * torch.sigmoid(bag_scores)
    torch.testing.assert_close(torch.sigmoid(outputs), expected)
    # and its objective is the reference's half-and-half of the two streams' losses
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    loss = model.training_loss(bags, mask, targets, nn.functional.binary_cross_entropy_with_logits)
    halves = 0.5 * nn.functional.binary_cross_entropy_with_logits(bag_scores, targets) + 0.5 * (
        nn.functional.binary_cross_entropy_with_logits(max_scores, targets)
    )
    torch.testing.assert_close(loss, halves)


@pytest.mark.parametrize(
    ("bags", "mask", "message"),
    [
        (torch.randn(7, D), torch.ones(7, dtype=torch.bool), "3-D"),
        (torch.randn(1, 7, D + 1), torch.ones(1, 7, dtype=torch.bool), "features"),
        (torch.randn(1, 7, D), torch.ones(1, 7), "bool"),
        (torch.randn(2, 7, D), torch.ones(1, 7, dtype=torch.bool), "bool"),
        (torch.randn(2, 7, D), torch.tensor([[True] * 7, [False] * 7]), "at least one real instance"),
    ],
)
@pytest.mark.parametrize("name", ["abmil", "transmil", "dsmil", "clam-mb"])
def test_malformed_batches_are_rejected(name, bags, mask, message):
    with pytest.raises(ValueError, match=message):
        make(name)(bags, mask)


def test_pad_bags_stacks_bags_of_different_sizes():
    bags, mask = pad_bags([np.ones((3, 2), dtype=np.float16), np.full((1, 2), 2.0)])
    assert bags.dtype == torch.float32 and bags.shape == (2, 3, 2)
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    assert bags[1, 0].tolist() == [2.0, 2.0] and (bags[1, 1:] == 0).all()


# -- CLAM's instance clustering loss, against values computed by hand ---------------------------
H = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0]])
A = torch.tensor([0.1, 0.4, 0.2, 0.3])  # ranking: 1 > 3 > 2 > 0


def identity_classifier(swap: bool = False) -> nn.Linear:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]) if swap else torch.eye(2))
        layer.bias.zero_()
    return layer


def svm(scores: list[float], y: int) -> float:
    """Smooth top-1 SVM of one row, alpha = tau = 1, written out."""
    return math.log(sum(math.exp(s + (j != y) - scores[y]) for j, s in enumerate(scores)))


def ce(scores: list[float], y: int) -> float:
    return math.log(sum(math.exp(s) for s in scores)) - scores[y]


def test_smooth_top1_svm_matches_the_formula():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5], [0.0, 0.0]])
    targets = torch.tensor([1, 0, 1])
    expected = np.mean([svm(row, y) for row, y in zip(logits.tolist(), targets.tolist(), strict=True)])
    assert smooth_top1_svm(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    # two classes: softplus(other - true + 1)
    assert smooth_top1_svm(logits[:1], targets[:1]).item() == pytest.approx(math.log1p(math.exp(0.3 + 1 + 1.2)), rel=1e-6)


@pytest.mark.parametrize("loss", ["svm", "ce"])
def test_instance_clustering_loss_by_hand(loss):
    f = svm if loss == "svm" else ce
    rows = H.tolist()
    # k = 1, bag of this class: most attended (row 1) -> 1, least attended (row 0) -> 0
    expected = (f(rows[1], 1) + f(rows[0], 0)) / 2
    assert instance_clustering_loss(A, H, identity_classifier(), 1, True, loss).item() == pytest.approx(expected, rel=1e-6)
    # k = 2: rows 1, 3 -> 1; rows 0, 2 -> 0
    expected = (f(rows[1], 1) + f(rows[3], 1) + f(rows[0], 0) + f(rows[2], 0)) / 4
    assert instance_clustering_loss(A, H, identity_classifier(), 2, True, loss).item() == pytest.approx(expected, rel=1e-6)
    # another class's classifier (subtyping): the most attended row is pushed to 0
    assert instance_clustering_loss(A, H, identity_classifier(), 1, False, loss).item() == pytest.approx(f(rows[1], 0), rel=1e-6)


def hand_set_clam(model_class, n_outputs: int, branch_signs: list[float], **settings):
    """A tiny CLAM whose embedding is the input and whose attention ranks instances by sign * x[0]."""
    torch.manual_seed(0)
    model = model_class(2, n_outputs, hidden_dim=2, attention_dim=1, dropout=0.0, k_sample=1, **settings)
    with torch.no_grad():
        model.encoder[0].weight.copy_(torch.eye(2))
        model.encoder[0].bias.zero_()
        model.attention.tanh_branch[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        model.attention.tanh_branch[0].bias.zero_()
        model.attention.sigmoid_branch[0].weight.zero_()
        model.attention.sigmoid_branch[0].bias.zero_()
        model.attention.scores.weight.copy_(torch.tensor(branch_signs).reshape(-1, 1))
        model.attention.scores.bias.zero_()
        for c, classifier in enumerate(model.instance_classifiers):
            classifier.load_state_dict(identity_classifier(swap=c == 0).state_dict())
    return model


def zero_task_loss(outputs, targets):
    return outputs.sum() * 0 + 2.0


@pytest.mark.parametrize("label", [0, 1])
def test_clam_sb_training_loss_adds_the_instance_loss_weighted_as_the_reference(label):
    model = hand_set_clam(CLAMSB, 1, [1.0], instance_loss="svm")
    bags = H.unsqueeze(0)  # attention ranks by x[0]: row 0 most, row 1 least attended
    mask = torch.ones(1, 4, dtype=torch.bool)
    rows = H.tolist()
    logits = [row[::-1] for row in rows] if label == 0 else rows  # classifier 0 swaps the two logits
    instance = (svm(logits[0], 1) + svm(logits[1], 0)) / 2
    loss = model.training_loss(bags, mask, torch.tensor([float(label)]), zero_task_loss)
    assert loss.item() == pytest.approx(0.7 * 2.0 + 0.3 * instance, rel=1e-6)


def test_clam_subtyping_adds_the_other_classes_and_averages():
    model = hand_set_clam(CLAMSB, 3, [1.0], instance_loss="svm", subtyping=True)
    rows = H.tolist()
    in_class = (svm(rows[0], 1) + svm(rows[1], 0)) / 2
    out_class = [svm(rows[0][::-1], 0), svm(rows[0], 0)]  # classifiers 0 (swapped) and 2
    expected = (in_class + sum(out_class)) / 3
    assert model.bag_instance_loss(H[:, :1], H, 1).item() == pytest.approx(expected, rel=1e-6)


def test_clam_mb_judges_each_class_under_its_own_branch():
    # branch 0 ranks by +x[0], branch 1 by -x[0]: for a bag of class 1, row 1 is most attended
    model = hand_set_clam(CLAMMB, 1, [1.0, -1.0], instance_loss="ce")
    rows = H.tolist()
    expected = (ce(rows[1], 1) + ce(rows[0], 0)) / 2
    loss = model.training_loss(H.unsqueeze(0), torch.ones(1, 4, dtype=torch.bool), torch.tensor([1]), zero_task_loss)
    assert loss.item() == pytest.approx(0.7 * 2.0 + 0.3 * expected, rel=1e-6)
    # the attention reported for a binary task is the positive class's branch
    with torch.no_grad():
        _, attention = model(H.unsqueeze(0), torch.ones(1, 4, dtype=torch.bool))
    assert int(attention.argmax()) == 1


def test_clam_instance_loss_needs_class_targets():
    model = make("clam-sb")
    bags, mask = random_batch([9])
    with pytest.raises(ValueError, match="class index"):
        model.training_loss(bags, mask, torch.tensor([0.5]), zero_task_loss)
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        model.training_loss(bags, mask, torch.tensor([2]), zero_task_loss)


def test_small_bags_sample_disjoint_ends_and_a_single_instance_adds_nothing():
    model = hand_set_clam(CLAMSB, 1, [1.0], instance_loss="svm")
    model.k_sample = 8  # more than the bag has: k = n // 2 = 2
    rows = H.tolist()
    expected = (svm(rows[0], 1) + svm(rows[2], 1) + svm(rows[1], 0) + svm(rows[3], 0)) / 4
    assert model.bag_instance_loss(H[:, :1], H, 1).item() == pytest.approx(expected, rel=1e-6)
    assert model.bag_instance_loss(H[:1, :1], H[:1], 1).item() == 0.0


# -- training -----------------------------------------------------------------------------------
def separable_toy(n_bags: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive bags hold two instances shifted along the first feature; bags differ in size."""
    rng = np.random.default_rng(seed)
    bags, labels = [], []
    for i in range(n_bags):
        bag = rng.normal(size=(int(rng.integers(6, 12)), D))
        if i % 2:
            bag[:2, 0] += 4.0
        bags.append(bag.astype(np.float32))
        labels.append(float(i % 2))
    batch, mask = pad_bags(bags)
    return batch, mask, torch.tensor(labels)


def bce(outputs, targets):
    return nn.functional.binary_cross_entropy_with_logits(outputs[:, 0], targets)


def train_steps(name: str, steps: int, seed: int = 0) -> tuple[Aggregator, float, float]:
    bags, mask, y = separable_toy()
    model = make(name, seed=seed)
    with torch.no_grad():
        before = bce(model(bags, mask)[0], y).item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model.training_loss(bags, mask, y, bce).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = bce(model(bags, mask)[0], y).item()
    return model, before, after


@pytest.mark.parametrize("name", NAMES)
def test_a_few_steps_on_a_separable_toy_problem_reduce_the_loss(name):
    # TransMIL runs bag by bag (so it is the slowest step) and learns this toy in a few steps.
    _, before, after = train_steps(name, steps=12 if name == "transmil" else 40)
    # The linear probe, on bag means where the signal is diluted, is the slowest (about 0.75).
    assert after < 0.85 * before, (before, after)


@pytest.mark.parametrize("name", NAMES)
def test_two_seeded_cpu_runs_give_identical_outputs(name):
    bags, mask, _ = separable_toy()
    first, _, _ = train_steps(name, steps=3, seed=7)
    second, _, _ = train_steps(name, steps=3, seed=7)
    other, _, _ = train_steps(name, steps=3, seed=8)
    with torch.no_grad():
        a, b, c = (model(bags, mask) for model in (first, second, other))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_dsmil_and_clam_objectives_differ_from_the_plain_task_loss():
    # Guards the protocol: training must go through training_loss, not forward alone.
    bags, mask, y = separable_toy()
    for model in (make("clam-sb"), make("dsmil")):
        assert isinstance(model, CLAMSB | DSMIL)
        with torch.no_grad():
            plain = bce(model(bags, mask)[0], y)
            objective = model.training_loss(bags, mask, y, bce)
        assert abs(objective.item() - plain.item()) > 1e-4


def test_transmil_landmarks_follow_the_reference_rule_of_half_the_token_size():
    """Reference: NystromAttention(num_landmarks=dim // 2); an explicit value still wins."""
    from wsi_pipeline.mil.registry import build_aggregator, resolve_params

    default = build_aggregator("transmil", 8, 1, **resolve_params("transmil", {"hidden_dim": 64}))
    assert default.layer1.attention.landmarks == 32 and default.layer2.attention.landmarks == 32
    assert build_aggregator("transmil", 8, 1, **resolve_params("transmil", {})).layer1.attention.landmarks == 256
    chosen = build_aggregator("transmil", 8, 1, **resolve_params("transmil", {"hidden_dim": 64, "landmarks": 8}))
    assert chosen.layer1.attention.landmarks == 8
