"""The relation smoothing rule: EMA with hysteresis, intervals, changes, forgetting."""

from __future__ import annotations

import math

import pytest

from egtr.video.temporal import RelationSmoother, SmoothingConfig

KEY = (0, 1, 2)
HALF = 0.1 / math.log(2)  # the time constant that gives alpha = 0.5 at 10 frames per second


def run(smoother: RelationSmoother, scores: list[float]) -> list[bool]:
    states = []
    for frame, score in enumerate(scores):
        smoother.update(frame, frame / 10, {KEY: score} if score else {})
        states.append(KEY in smoother.active())
    return states


def test_ema_and_hysteresis_follow_the_stated_rule():
    smoother = RelationSmoother(0.1, SmoothingConfig(time_constant=HALF, on_threshold=0.5, off_threshold=0.3))
    # scores: 0.5*0.8 = 0.4 (off), 0.6 (on), then zeros: 0.3 (still on: not below 0.3), 0.15 (off)
    assert run(smoother, [0.8, 0.8, 0.0, 0.0]) == [False, True, True, False]
    assert [(c.change, c.frame_index) for c in smoother.changes] == [("appeared", 1), ("ended", 3)]
    (interval,) = smoother.intervals[KEY]
    assert (interval.start_frame, interval.end_frame) == (1, 2)  # the last frame in which it held
    assert interval.start_time == pytest.approx(0.1) and interval.end_time == pytest.approx(0.2)


def test_unsmoothed_is_the_per_frame_threshold():
    scores = [0.9, 0.0, 0.7, 0.4, 0.6, 0.0, 0.55]
    states = run(RelationSmoother(0.1, SmoothingConfig.unsmoothed(0.5)), scores)
    assert states == [score >= 0.5 for score in scores]


def test_smoothing_removes_blinks_that_the_per_frame_decision_has():
    # A relation that holds throughout but is missed in every third frame, then really ends.
    scores = [0.0 if frame % 3 == 2 else 0.8 for frame in range(30)] + [0.0] * 10
    raw = RelationSmoother(0.1, SmoothingConfig.unsmoothed(0.5))
    smooth = RelationSmoother(0.1, SmoothingConfig())
    run(raw, scores)
    run(smooth, scores)
    assert len(raw.changes) == 20  # 10 blinks: each missed frame ends it, the next starts it again
    assert [c.change for c in smooth.changes] == ["appeared", "ended"]
    (interval,) = smooth.intervals[KEY]
    # the price: the default smoothing (0.35 s) reports it up to 0.4 s late and ends it up to 0.7 s late
    assert interval.start_frame <= 4 and 28 <= interval.end_frame <= 35  # the last 0.8 is at frame 28


def test_open_intervals_close_at_the_last_frame_and_dead_keys_are_forgotten():
    smoother = RelationSmoother(0.1, SmoothingConfig(time_constant=HALF))
    run(smoother, [0.9, 0.9, 0.9])
    smoother.finish()
    assert smoother.intervals[KEY][0].end_frame == 2
    run(smoother, [0.0] * 20)
    assert smoother.active() == {} and smoother._states == {}  # nothing kept for a relation that is gone


def test_the_time_constant_makes_the_rule_independent_of_the_sampling_rate():
    # The same score sequence in time, sampled at 10 and at 5 frames per second, decays alike after the relation ends.
    fast, slow = RelationSmoother(0.1), RelationSmoother(0.2)
    for frame in range(20):
        fast.update(frame, frame * 0.1, {KEY: 0.9} if frame < 10 else {})
        if frame % 2 == 0:
            slow.update(frame, frame * 0.1, {KEY: 0.9} if frame < 10 else {})
    assert fast._states[KEY].score == pytest.approx(slow._states[KEY].score, rel=0.1)
    assert SmoothingConfig(time_constant=0.5).alpha(0.5) == pytest.approx(1 - math.exp(-1))


@pytest.mark.parametrize("values", [(-1.0, 0.5, 0.3), (0.3, 1.5, 0.3), (0.5, 0.3, 0.5), (0.5, 0.5, 0.0)])
def test_impossible_settings_are_refused(values):
    with pytest.raises(ValueError):
        SmoothingConfig(*values)
