"""Tests of egtr.losses.criterion: reference losses in both modes, invariances, aux losses, edge cases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from egtr.config import LossConfig
from egtr.losses import EGTRCriterion, sample_relation_entries

# Sizes of the synthetic batches of the invariance and edge-case tests; the reference tests take the fixture's sizes.
NUM_LABELS, NUM_REL_LABELS = 9, 5
EVAL_TERMS = ("loss_ce", "loss_bbox", "loss_giou", "loss_rel", "loss_connectivity", "uncertainty")


@dataclass
class _Outputs:
    """Stand-in for the model's output dataclass (attribute access)."""

    logits: torch.Tensor
    pred_boxes: torch.Tensor
    rel_logits: torch.Tensor
    connectivity_logits: torch.Tensor


def _criterion(num_labels: int = NUM_LABELS, num_rel_labels: int = NUM_REL_LABELS, **kwargs) -> EGTRCriterion:
    return EGTRCriterion(kwargs.pop("loss_config", LossConfig()), num_labels, num_rel_labels, **kwargs)


@pytest.fixture
def reference_criterion(reference_sizes):
    """`_criterion` for the reference outputs: the fixture's class and predicate counts."""

    def build(**kwargs) -> EGTRCriterion:
        return _criterion(reference_sizes.num_labels, reference_sizes.num_rel_labels, **kwargs)

    return build


def _random_outputs(generator, batch_size=2, num_queries=10, num_classes=NUM_LABELS, num_layers=0):
    def boxes():
        return torch.cat(
            [
                torch.rand(batch_size, num_queries, 2, generator=generator) * 0.6 + 0.2,
                torch.rand(batch_size, num_queries, 2, generator=generator) * 0.3 + 0.05,
            ],
            dim=-1,
        )

    outputs = {
        "logits": torch.randn(batch_size, num_queries, num_classes, generator=generator),
        "pred_boxes": boxes(),
        "rel_logits": torch.randn(batch_size, num_queries, num_queries, NUM_REL_LABELS, generator=generator),
        "connectivity_logits": torch.randn(batch_size, num_queries, num_queries, 1, generator=generator),
    }
    if num_layers:
        outputs["aux_logits"] = [
            torch.randn(batch_size, num_queries, num_classes, generator=generator) for _ in range(num_layers - 1)
        ]
        outputs["aux_pred_boxes"] = [boxes() for _ in range(num_layers - 1)]
    return outputs


def _random_targets(generator, sizes, num_relations):
    targets = []
    for count, relations in zip(sizes, num_relations):
        boxes = torch.cat(
            [
                torch.rand(count, 2, generator=generator) * 0.6 + 0.2,
                torch.rand(count, 2, generator=generator) * 0.3 + 0.05,
            ],
            dim=-1,
        )
        relation_rows = (
            torch.stack(
                [
                    torch.randint(max(count, 1), (relations,), generator=generator),
                    torch.randint(max(count, 1), (relations,), generator=generator),
                    torch.randint(NUM_REL_LABELS, (relations,), generator=generator),
                ],
                dim=-1,
            )
            if count
            else torch.zeros(0, 3, dtype=torch.int64)
        )
        targets.append(
            {
                "boxes": boxes,
                "class_labels": torch.randint(NUM_LABELS, (count,), generator=generator),
                "relations": relation_rows,
            }
        )
    return targets


@pytest.mark.parametrize("mode", ["eval_mode", "train_mode"])
def test_reference_losses(mode, reference_criterion, reference_outputs, reference_targets, reference_losses):
    losses = reference_criterion()(reference_outputs, reference_targets, training=mode == "train_mode")
    expected = reference_losses[mode]
    for name in EVAL_TERMS:
        assert losses[name].item() == pytest.approx(expected[name], rel=1e-5), name
    assert losses["loss"].item() == pytest.approx(expected["total"], rel=1e-5)


def test_reference_train_mode_entries_per_image(
    reference_criterion, reference_sizes, reference_outputs, reference_targets, reference_losses
):
    criterion = reference_criterion()
    matching = criterion.match(reference_outputs["logits"], reference_outputs["pred_boxes"], reference_targets)
    relation_targets = criterion.relation_targets(reference_targets, matching, num_queries=reference_sizes.num_queries)
    config = criterion.loss_config
    selected = sample_relation_entries(
        reference_outputs["rel_logits"],
        relation_targets,
        matching.matched,
        config.rel_sample_negatives,
        config.rel_sample_nonmatching,
        config.rel_sample_negatives_largest,
        config.rel_sample_nonmatching_largest,
    )
    assert selected.sum(dim=(1, 2, 3)).tolist() == reference_losses["train_mode_rel_entries_per_image"]


def test_weights_and_total(reference_criterion, reference_outputs, reference_targets, reference_losses):
    criterion = reference_criterion()
    assert criterion.weight_dict == reference_losses["weights"]
    losses = criterion(reference_outputs, reference_targets, training=False)
    total = sum(losses[name] * weight for name, weight in reference_losses["weights"].items())
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    # Logged extras are not part of the total.
    assert "cardinality_error" not in criterion.weight_dict and "uncertainty" not in criterion.weight_dict


def test_open_images_weights():
    criterion = _criterion(loss_config=LossConfig.for_open_images())
    assert criterion.weight_dict["loss_connectivity"] == 90.0
    assert criterion.loss_config.rel_sample_nonmatching_largest is False


def test_attribute_outputs_equal_dict_outputs(reference_criterion, reference_outputs, reference_targets):
    criterion = reference_criterion()
    from_dict = criterion(reference_outputs, reference_targets, training=False)
    from_object = criterion(_Outputs(**reference_outputs), reference_targets, training=False)
    for name, value in from_dict.items():
        assert torch.equal(value, from_object[name]), name


def test_query_permutation_invariance(reference_criterion, reference_sizes, reference_outputs, reference_targets):
    """Shuffling the queries (consistently in every output) must not change any loss, in either mode."""
    permutation = torch.randperm(reference_sizes.num_queries, generator=torch.Generator().manual_seed(0))
    shuffled = {
        "logits": reference_outputs["logits"][:, permutation],
        "pred_boxes": reference_outputs["pred_boxes"][:, permutation],
        "rel_logits": reference_outputs["rel_logits"][:, permutation][:, :, permutation],
        "connectivity_logits": reference_outputs["connectivity_logits"][:, permutation][:, :, permutation],
    }
    criterion = reference_criterion()
    for training in (False, True):
        original = criterion(reference_outputs, reference_targets, training=training)
        permuted = criterion(shuffled, reference_targets, training=training)
        for name in (*EVAL_TERMS, "loss"):
            assert permuted[name].item() == pytest.approx(original[name].item(), rel=1e-5), (training, name)


@pytest.mark.parametrize("training", [False, True])
def test_scalar_loss_backpropagates(training):
    generator = torch.Generator().manual_seed(0)
    outputs = {name: value.requires_grad_() for name, value in _random_outputs(generator).items()}
    targets = _random_targets(generator, [3, 4], [2, 3])
    losses = _criterion()(outputs, targets, training=training)
    assert losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    for name, value in outputs.items():
        assert value.grad is not None and torch.isfinite(value.grad).all(), name
        assert value.grad.abs().sum() > 0, name


def test_empty_targets_are_finite():
    generator = torch.Generator().manual_seed(1)
    outputs = _random_outputs(generator)
    criterion = _criterion()
    for sizes, relations in (([0, 3], [0, 2]), ([0, 0], [0, 0]), ([2, 3], [0, 0])):
        targets = _random_targets(generator, sizes, relations)
        for training in (False, True):
            losses = criterion(outputs, targets, training=training)
            assert all(torch.isfinite(value) for value in losses.values()), (sizes, relations, training)
    no_objects = criterion(outputs, _random_targets(generator, [0, 0], [0, 0]), training=True)
    assert no_objects["loss_bbox"].item() == 0.0 and no_objects["loss_rel"].item() == 0.0


def test_training_selects_positives_and_capped_negatives():
    generator = torch.Generator().manual_seed(2)
    outputs = _random_outputs(generator, batch_size=1, num_queries=12)
    targets = _random_targets(generator, [4], [1])
    config = LossConfig(rel_sample_negatives=3, rel_sample_nonmatching=5)
    criterion = _criterion(loss_config=config)
    matching = criterion.match(outputs["logits"], outputs["pred_boxes"], targets)
    relation_targets = criterion.relation_targets(targets, matching, 12)
    for largest in (True, False):
        selected = sample_relation_entries(
            outputs["rel_logits"],
            relation_targets,
            matching.matched,
            3,
            5,
            largest,
            largest,
            torch.Generator().manual_seed(5),
        )
        assert selected.sum().item() == 1 + 3 + 5
        assert selected[relation_targets == 1].all()
        block = matching.matched[:, :, None] & matching.matched[:, None, :]
        assert selected[block].sum().item() == 1 + 3
    hard = sample_relation_entries(outputs["rel_logits"], relation_targets, matching.matched, 3, 5, True, True)
    negatives = (block[..., None].expand_as(relation_targets)) & (relation_targets == 0)
    chosen = outputs["rel_logits"][hard & negatives]
    others = outputs["rel_logits"][~hard & negatives]
    assert chosen.min() >= others.max()


def test_relation_weights_are_zero_for_unmatched_queries(reference_criterion, reference_outputs, reference_targets):
    criterion = reference_criterion()
    matching = criterion.match(reference_outputs["logits"], reference_outputs["pred_boxes"], reference_targets)
    weights = criterion.query_weights(matching)
    assert (weights[~matching.matched] == 0).all()
    assert ((weights[matching.matched] > 0) & (weights[matching.matched] <= 1)).all()


def test_auxiliary_losses_have_suffixed_keys():
    generator = torch.Generator().manual_seed(3)
    num_layers = 4
    outputs = _random_outputs(generator, num_layers=num_layers)
    targets = _random_targets(generator, [3, 2], [1, 1])
    criterion = _criterion(loss_config=LossConfig(auxiliary_loss=True), num_decoder_layers=num_layers)
    losses = criterion(outputs, targets, training=True)
    aux_keys = [name for name in losses if name[-1].isdigit()]
    assert len(aux_keys) == 3 * (num_layers - 1)
    assert {f"loss_giou_{layer}" for layer in range(num_layers - 1)} <= set(losses)
    assert set(aux_keys) <= set(criterion.weight_dict)
    main_only = _criterion()(outputs, targets, training=True)
    extra = sum(losses[name] * criterion.weight_dict[name] for name in aux_keys)
    assert losses["loss"].item() == pytest.approx((main_only["loss"] + extra).item(), rel=1e-5)
    with pytest.raises(ValueError, match="intermediate layers"):
        _criterion(loss_config=LossConfig(auxiliary_loss=True), num_decoder_layers=6)(outputs, targets, training=True)


def test_detector_only_criterion_needs_no_relations():
    generator = torch.Generator().manual_seed(4)
    outputs = _random_outputs(generator, num_layers=3)
    detector_outputs = {name: outputs[name] for name in ("logits", "pred_boxes", "aux_logits", "aux_pred_boxes")}
    targets = [
        {"boxes": target["boxes"], "class_labels": target["class_labels"]}
        for target in _random_targets(generator, [2, 5], [0, 0])
    ]
    criterion = _criterion(loss_config=LossConfig(auxiliary_loss=True), use_relation_losses=False, num_decoder_layers=3)
    losses = criterion(detector_outputs, targets, training=True)
    assert "loss_rel" not in losses and "loss_connectivity" not in losses
    assert len(criterion.weight_dict) == 3 * 3
    expected = sum(losses[name] * weight for name, weight in criterion.weight_dict.items())
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_bad_targets_are_clear_errors():
    generator = torch.Generator().manual_seed(5)
    outputs = _random_outputs(generator)
    targets = _random_targets(generator, [2, 2], [1, 1])
    targets[1]["relations"] = torch.tensor([[0, 5, 1]])
    with pytest.raises(ValueError, match="target 1: 'relations' refers to objects"):
        _criterion()(outputs, targets, training=False)
    del targets[1]["relations"]
    with pytest.raises(ValueError, match="target 1: no 'relations'"):
        _criterion()(outputs, targets, training=False)
    with pytest.raises(ValueError, match="rel_logits"):
        _criterion()(
            {"logits": outputs["logits"], "pred_boxes": outputs["pred_boxes"]},
            _random_targets(generator, [1, 1], [1, 1]),
            training=False,
        )


def test_cardinality_error_counts_confident_queries():
    logits = torch.full((1, 5, NUM_LABELS), -10.0)
    logits[0, :2, 0] = 10.0  # two confident queries
    outputs = {"logits": logits, "pred_boxes": torch.full((1, 5, 4), 0.3)}
    targets = [{"boxes": torch.full((3, 4), 0.3), "class_labels": torch.zeros(3, dtype=torch.int64)}]
    losses = _criterion(use_relation_losses=False)(outputs, targets, training=False)
    assert losses["cardinality_error"].item() == 1.0


def test_all_reduced_num_boxes_in_a_single_process_group(
    tmp_path, reference_criterion, reference_outputs, reference_targets
):
    """With one rank, the all-reduced normaliser equals the local one (exercises the DDP code path)."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        reduced = reference_criterion(all_reduce_num_boxes=True)(reference_outputs, reference_targets, training=False)
    finally:
        dist.destroy_process_group()
    local = reference_criterion()(reference_outputs, reference_targets, training=False)
    assert reduced["loss"].item() == pytest.approx(local["loss"].item(), rel=1e-7)


def _loop_relation_loss(criterion, outputs, targets, training):
    """Straightforward per-image relation loss as written in reference §3.3 (permute to matched order, top-k)."""
    matching = criterion.match(outputs["logits"], outputs["pred_boxes"], targets)
    num_queries = outputs["logits"].shape[1]
    per_image = []
    for image, ((query_index, target_index), costs) in enumerate(zip(matching.indices, matching.matching_costs)):
        unmatched = torch.tensor([q for q in range(num_queries) if q not in set(query_index.tolist())])
        source = torch.cat([query_index, unmatched]).long()
        dense = torch.zeros(num_queries, num_queries, NUM_REL_LABELS)
        for subject, object_, predicate in targets[image]["relations"].tolist():
            dense[subject, object_, predicate] = 1
        target_order = torch.cat([target_index, torch.arange(len(target_index), num_queries)])
        labels = dense[target_order][:, target_order]
        logits = outputs["rel_logits"][image][source][:, source]
        cost = torch.cat([costs, torch.full((len(unmatched),), criterion.matcher.nonmatching_cost)])
        weight = 1 - cost.sigmoid()
        smoothed = labels * (weight[:, None, None] * weight[None, :, None])
        losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, smoothed, reduction="none")
        if not training:
            per_image.append(losses.reshape(-1))
            continue
        matched_count = len(query_index)
        block = torch.zeros(num_queries, num_queries, NUM_REL_LABELS, dtype=torch.bool)
        block[:matched_count, :matched_count] = True
        positives = labels == 1
        num_positives = int(positives.sum())
        chosen = [losses[positives]]
        for candidates in (block & ~positives, ~block):
            keep = min(80 * num_positives, int(candidates.sum()))
            chosen.append(losses[candidates].topk(keep)[0] if keep else losses[candidates][:0])
            # Hard examples: with all-zero targets the loss is monotone in the logit, so top loss = top logit.
        per_image.append(torch.cat(chosen))
    return torch.cat(per_image).mean()


@pytest.mark.parametrize("training", [False, True])
def test_vectorised_relation_loss_equals_a_per_image_loop(training):
    generator = torch.Generator().manual_seed(6)
    outputs = _random_outputs(generator, batch_size=3, num_queries=16)
    targets = _random_targets(generator, [5, 0, 9], [4, 0, 2])
    criterion = _criterion()
    expected = _loop_relation_loss(criterion, outputs, targets, training)
    assert criterion(outputs, targets, training=training)["loss_rel"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_target_dtypes_are_normalised(reference_criterion, reference_outputs, reference_targets, reference_losses):
    """float64 boxes and int32 labels/relations (e.g. straight from numpy) give the same losses."""
    converted = [
        {
            "boxes": target["boxes"].double(),
            "class_labels": target["class_labels"].int(),
            "relations": target["relations"].int(),
        }
        for target in reference_targets
    ]
    losses = reference_criterion()(reference_outputs, converted, training=False)
    assert losses["loss"].item() == pytest.approx(reference_losses["eval_mode"]["total"], rel=1e-5)


def test_rel_gates_are_logged_and_class_count_is_checked(reference_criterion, reference_outputs, reference_targets):
    outputs = dict(reference_outputs, rel_gates=torch.tensor([0.25, 0.5, 0.75, 1.0]))
    criterion = reference_criterion()
    losses = criterion(outputs, reference_targets, training=False)
    assert [losses[f"rel_gate_{slot}"].item() for slot in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert not any(name.startswith("rel_gate") for name in criterion.weight_dict)
    batch, queries, classes = reference_outputs["logits"].shape
    with pytest.raises(ValueError, match=f"{classes + 1} classes, expected {classes}"):
        criterion(
            dict(reference_outputs, logits=torch.zeros(batch, queries, classes + 1)), reference_targets, training=False
        )
