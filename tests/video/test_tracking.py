"""Track ids and smoothed relations on the generated clip, from noisy per-frame scene graphs of its truth."""

from __future__ import annotations

from egtr.data.synthetic import PREDICATE_NAMES
from egtr.video.evaluate import relation_metrics, track_metrics
from egtr.video.pipeline import TemporalSceneGraphs
from egtr.video.synthetic_clip import truth_intervals
from egtr.video.temporal import SmoothingConfig


def _records(truth, graphs):
    temporal = TemporalSceneGraphs(frame_rate=truth.fps, predicate_names=PREDICATE_NAMES)
    return temporal, [temporal.update(graph, frame, frame / truth.fps) for frame, graph in enumerate(graphs)]


def test_the_generated_clip_moves_and_its_relations_change(clip):
    _, truth = clip
    assert len(truth.classes) >= 3 and truth.num_frames == 80
    assert (truth.boxes[0] != truth.boxes[-1]).any()
    changing = [key for key, runs in truth_intervals(truth.relations).items() if runs != [(0, truth.num_frames - 1)]]
    assert changing, "some relation must appear or end during the clip"


def test_ids_stay_stable_and_classes_are_voted_over_the_track(clip, noisy_graphs):
    _, truth = clip
    _, records = _records(truth, noisy_graphs)
    metrics = track_metrics(truth, records)
    assert metrics["distinct_ids"] == metrics["true_tracks"]  # one id per true object, never a second one
    assert metrics["id_switches"] == 0
    assert metrics["idf1"] >= 0.9 and metrics["stable_fraction"] >= 0.85
    # one frame in five has a wrong class; the track's vote is (almost) always right
    assert metrics["frame_class_accuracy"] < 0.9 and metrics["track_class_accuracy"] >= 0.97


def test_smoothing_reduces_relation_flicker_on_the_clip(clip, noisy_graphs):
    _, truth = clip
    _, records = _records(truth, noisy_graphs)
    raw = relation_metrics(truth, records, SmoothingConfig.unsmoothed(0.5))
    smooth = relation_metrics(truth, records, SmoothingConfig())
    # per frame, the relations blink: many times the true number of appear/end changes, hardly an interval right
    assert raw["changes"] > 10 * raw["true_changes"] and raw["interval_recall"] < 0.2
    # smoothed: about as many changes as the truth has, most intervals found, and more of every frame right
    assert 0.5 * smooth["true_changes"] <= smooth["changes"] <= 1.5 * smooth["true_changes"]
    assert smooth["interval_recall"] >= 0.5 and smooth["interval_precision"] >= 0.5
    assert smooth["f1"] > raw["f1"] + 0.1


def test_events_list_intervals_and_changes_between_tracks(clip, noisy_graphs):
    _, truth = clip
    temporal, records = _records(truth, noisy_graphs)
    events = temporal.events()
    assert events["frames"] == truth.num_frames and len(events["tracks"]) == len(truth.classes)
    track_ids = {track["track_id"] for track in events["tracks"]}
    for relation in events["relations"]:
        assert {relation["subject_track"], relation["object_track"]} <= track_ids
        for interval in relation["intervals"]:
            assert interval["start"] <= interval["end"]
    appeared = sum(change["change"] == "appeared" for change in events["changes"])
    assert appeared == sum(len(relation["intervals"]) for relation in events["relations"])
    # the frame records carry the same changes, each at its frame
    per_frame = [(r["frame_index"], c["change"], c["subject_track"]) for r in records for c in r["changes"]]
    assert per_frame == [(c["frame_index"], c["change"], c["subject_track"]) for c in events["changes"]]
    # every record names the relations that hold now by track id
    last = records[-1]
    live = {(r["subject_track"], r["object_track"], r["predicate"]) for r in last["tracked_relations"]}
    assert live and all(item["track_id"] in track_ids for item in last["objects"] if item["track_id"] is not None)


def test_frames_without_objects_keep_the_tracks():
    from egtr.inference.scene_graph import SceneGraph, SceneObject
    from egtr.video.tracking import SceneGraphTracker

    tracker = SceneGraphTracker(frame_rate=10)
    empty = SceneGraph([], [], (100, 100))
    cup = SceneGraph([SceneObject((10.0, 10.0, 40.0, 40.0), 1, "cup", 0.9)], [], (100, 100))
    ids = [tracker.update(graph, frame / 10) for frame, graph in enumerate([empty, cup, cup, empty, empty, cup])]
    assert ids[0] == [] and ids[3] == [] and ids[1] == [None]  # confirmed from its second frame on
    assert ids[2] == ids[5] and ids[2][0] is not None  # the same id after two empty frames


def test_a_duplicate_box_gets_no_track_of_its_own():
    """Two boxes of one class on one object (a weak DETR's duplicate): one track, the duplicate without an id;
    another class at the same place, or duplicate suppression off, is tracked."""
    from egtr.inference.scene_graph import SceneGraph, SceneObject
    from egtr.video.tracking import SceneGraphTracker, TrackingConfig

    cup, duplicate = SceneObject((10.0, 10.0, 40.0, 40.0), 1, "cup", 0.9), SceneObject((11, 10, 41, 41), 1, "cup", 0.8)
    lid = SceneObject((11.0, 10.0, 41.0, 41.0), 2, "lid", 0.8)
    graph = SceneGraph([duplicate, cup, lid], [], (100, 100))
    tracker = SceneGraphTracker(frame_rate=10)
    ids = [tracker.update(graph, frame / 10) for frame in range(4)][-1]
    assert ids[0] is None and ids[1] is not None and ids[2] is not None and ids[1] != ids[2]
    unsuppressed = SceneGraphTracker(frame_rate=10, config=TrackingConfig(duplicate_iou=None))
    ids = [unsuppressed.update(graph, frame / 10) for frame in range(4)][-1]
    assert None not in ids and len(set(ids)) == 3


def test_a_low_track_threshold_starts_tracks_for_low_score_objects():
    """`--track-threshold 0.2` (`TrackingConfig.activation_threshold`) starts tracks for objects scored 0.3: ByteTrack
    starts tracks only from its high-score stage, whose threshold (0.5 by default) must not stay above it."""
    from egtr.inference.scene_graph import SceneGraph, SceneObject
    from egtr.video.tracking import SceneGraphTracker, TrackingConfig

    faint = SceneGraph(
        [SceneObject((10.0, 10.0, 40.0, 40.0), 1, "cup", 0.3), SceneObject((60.0, 50.0, 90.0, 95.0), 2, "lid", 0.25)],
        [],
        (100, 100),
    )
    low = SceneGraphTracker(frame_rate=10, config=TrackingConfig(activation_threshold=0.2))
    ids = [low.update(faint, frame / 10) for frame in range(4)]
    assert ids[0] == [None, None] and None not in ids[-1] and len(set(ids[-1])) == 2 and ids[-1] == ids[-2]
    assert low.config.to_dict()["high_score_threshold"] == 0.2  # what the tracker used, in events.json
    default = SceneGraphTracker(frame_rate=10)  # 0.5: these objects start no track
    assert [default.update(faint, frame / 10) for frame in range(4)][-1] == [None, None]
