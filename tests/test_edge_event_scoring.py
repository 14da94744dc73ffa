from __future__ import annotations

from edge.event_scoring import match_events, temporal_iou


def test_temporal_iou() -> None:
    assert temporal_iou(0, 10, 5, 15) == 5 / 15
    assert temporal_iou(0, 1, 2, 3) == 0.0


def test_one_to_one_matching_by_action_and_iou() -> None:
    truth = [{"action": "a", "start": 0, "end": 10}, {"action": "b", "start": 20, "end": 30}]
    pred = [
        {"action": "a", "start": 1, "end": 9},  # match (IoU 0.8)
        {"action": "a", "start": 2, "end": 8},  # duplicate of the same segment: false positive
        {"action": "a", "start": 20, "end": 30},  # wrong action
        {"action": "b", "start": 27, "end": 40},  # IoU 0.15 < 0.3
    ]
    r = match_events(pred, truth, 0.3)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 3, 1)
    assert r["matches"] == [{"event": 0, "segment": 0, "iou": 0.8}]
    assert r["f1"] == round(2 * 0.25 * 0.5 / 0.75, 4)
    assert match_events([], [])["f1"] == 1.0 and match_events([], truth)["f1"] == 0.0
