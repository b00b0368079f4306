"""Compare designs of the given-box protocol (PredCls / SGCls) on a trained model and its dataset split.

For each assignment of the ground-truth boxes to the model's queries (`egtr.inference.given_boxes.ASSIGNMENTS`: the
training matcher's costs, or the IoU alone) it runs the model over the split once and reports, for SGCls and
PredCls:
R@K / mR@K with and without graph constraint, and how often the query a box is given to predicts a box that
overlaps it (IoU >= 0.5) and its class. SGDet is printed for reference. Not a test.

    python benchmarks/given_boxes_protocol.py --model /work/demo_model/model --data-root /work/demo_model/data
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from egtr.box_ops import box_cxcywh_to_xyxy, box_iou
from egtr.data import DataConfig, build_dataset, collate_fn
from egtr.inference.given_boxes import ASSIGNMENTS, given_objects_of_ground_truths, postprocess_given_boxes
from egtr.metrics import SceneGraphRecall, ground_truth_from_target
from egtr.model_evaluation import evaluate_model
from egtr.models import EGTR
from egtr.preprocessing import resolve_preprocessing

KS = (20, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()

    model = EGTR.from_pretrained(args.model, map_location="cpu").eval()
    data_config = DataConfig.for_evaluation(resolve_preprocessing(model.preprocessor), kind="vg", root=args.data_root)
    dataset = build_dataset(data_config, args.split, train=False, num_queries=model.config.num_queries)
    count = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
    results: dict[str, dict[str, float]] = {}

    sgdet = evaluate_model(model, data_config, args.split, detection=False, max_images=count, progress=False)
    results["sgdet"] = {key: value for key, value in sgdet.metrics.items() if "R@" in key and "/" not in key}

    metrics = {
        (assignment, task, mode): SceneGraphRecall(model.config.num_rel_labels, KS, mode == "graph_constraint")
        for assignment in ASSIGNMENTS
        for task in ("sgcls", "predcls")
        for mode in ("graph_constraint", "no_graph_constraint")
    }
    overlap_hits = {key: [] for key in metrics}
    class_hits = {key: [] for key in metrics}
    with torch.inference_mode():
        for start in range(0, count, 8):
            batch = collate_fn([dataset[index] for index in range(start, min(start + 8, count))])
            outputs = model(batch["pixel_values"], batch["pixel_mask"])
            sizes = torch.stack([target["orig_size"] for target in batch["labels"]])
            truths = [ground_truth_from_target(target) for target in batch["labels"]]
            raw = (outputs.logits, outputs.pred_boxes, outputs.pred_rel, outputs.pred_connectivity, sizes)
            for (assignment, task, mode), metric in metrics.items():
                given = given_objects_of_ground_truths(
                    truths, sizes.tolist(), task, model.config.num_labels, model.config.num_queries
                )
                predictions, assigned = postprocess_given_boxes(
                    *raw, given, top_k=100, graph_constraint=mode == "graph_constraint", assignment=assignment
                )
                metric.update(predictions, truths)
                for image, (queries, target) in enumerate(zip(assigned, batch["labels"])):
                    if len(queries) == 0:
                        continue
                    predicted = box_cxcywh_to_xyxy(outputs.pred_boxes[image, torch.as_tensor(queries)])
                    ious = box_iou(predicted, box_cxcywh_to_xyxy(target["boxes"]))[0].diagonal()
                    overlap_hits[assignment, task, mode].extend((ious >= 0.5).tolist())
                    labels = outputs.logits[image, torch.as_tensor(queries)].argmax(-1)
                    class_hits[assignment, task, mode].extend((labels == target["class_labels"]).tolist())
    for key, metric in metrics.items():
        assignment, task, mode = key
        values = metric.compute().to_dict()
        name = f"{task}/{assignment}"
        results.setdefault(name, {})
        prefix = "(single)" if mode == "graph_constraint" else ""
        for k in KS:
            results[name][f"{prefix}R@{k}"] = values[f"{prefix}R@{k}"]
            results[name][f"{prefix}mR@{k}"] = values[f"{prefix}mR@{k}"]
        results[name]["query_box_iou>=0.5"] = float(np.mean(overlap_hits[key]))
        results[name]["query_class_correct"] = float(np.mean(class_hits[key]))
    print(f"{args.model} on {args.data_root} ({args.split}, {count} images)")
    for name, values in results.items():
        print(f"{name:18s} " + "  ".join(f"{key} {100 * value:.2f}" for key, value in values.items()))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
