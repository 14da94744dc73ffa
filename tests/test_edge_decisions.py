from __future__ import annotations

from edge.decisions import Decisions, Event, Params

P = Params(threshold=0.5, hysteresis=0.2, min_duration=1.0, cooldown=2.0, smoothing=1.0)  # no smoothing


def feed(d: Decisions, scores: list[float], dt: float = 0.5, p: Params = P, t0: float = 0.0) -> list[Event]:
    out: list[Event] = []
    for i, s in enumerate(scores):
        out += d.step("cam", t0 + i * dt, 1000.0 + i, {"wave": s}, {"wave": p})
    return out


def test_lifecycle_start_update_end() -> None:
    d = Decisions(update_interval=1.0)
    # on at t=1.0; confirmed after min_duration (t=2.0); stays in the hysteresis band; off at t=5.0
    ev = feed(d, [0.1, 0.2, 0.6, 0.7, 0.9, 0.6, 0.4, 0.35, 0.6, 0.7, 0.2, 0.1])
    phases = [(e.phase, e.start, e.end) for e in ev]
    assert phases[0] == ("start", 1.0, None)
    assert [p for p, _, _ in phases] == ["start", "update", "update", "end"]
    end = ev[-1]
    assert end.start == 1.0 and end.end == 4.5 and end.reason == "score"  # last window that was on
    assert end.peak == 0.9 and end.peak_time == 2.0
    assert len({e.id for e in ev}) == 1
    assert ev[0].wall == 1004.0  # latency reference: the window that confirmed the start


def test_short_blip_below_min_duration_makes_no_event() -> None:
    d = Decisions()
    assert feed(d, [0.1, 0.8, 0.9, 0.1, 0.1]) == []


def test_hysteresis_keeps_an_event_open_in_the_band() -> None:
    d = Decisions()
    ev = feed(d, [0.6, 0.6, 0.6, 0.4, 0.31, 0.4, 0.45, 0.6])
    assert [e.phase for e in ev if e.phase != "update"] == ["start"]
    assert len(d.active()) == 1


def test_cooldown_blocks_a_quick_restart() -> None:
    d = Decisions()
    ev = feed(d, [0.6, 0.6, 0.6, 0.1] + [0.6] * 4 + [0.6] * 6)
    starts = [e for e in ev if e.phase == "start"]
    ends = [e for e in ev if e.phase == "end"]
    assert len(ends) == 1 and ends[0].end == 1.0
    # cooldown 2 s after the end (t=1.0): no new pending before t=3.0, so the second start is at 3.0 + 1.0
    assert len(starts) == 2 and starts[1].start == 3.0
    assert starts[0].id != starts[1].id


def test_smoothing_delays_and_filters() -> None:
    d = Decisions()
    p = Params(threshold=0.5, hysteresis=0.1, min_duration=0.0, cooldown=0.0, smoothing=0.5)
    ev = feed(d, [0.0, 1.0, 0.0, 0.0], p=p)  # EMA: 0, .5, .25 -> on for one window only
    assert [e.phase for e in ev] == ["start", "end"]
    d2 = Decisions()
    assert feed(d2, [0.0, 0.9, 0.0], p=Params(0.5, 0.1, 0.0, 0.0, 0.3)) == []  # 0.27: never on


def test_open_events_end_on_stream_end_action_removal_and_shutdown() -> None:
    d = Decisions()
    feed(d, [0.9, 0.9, 0.9, 0.9])
    d.step("door", 0.0, 0.0, {"wave": 0.9}, {"wave": Params(0.5, 0.1, 0.0, 0.0, 1.0)})
    assert len(d.active()) == 2
    (e1,) = d.end_stream("cam", "stream_end", 5.0)
    assert e1.phase == "end" and e1.reason == "stream_end" and e1.stream == "cam"
    (e2,) = d.end_action("wave", "action_removed", 5.0)
    assert e2.stream == "door" and e2.reason == "action_removed"
    assert d.end_all("shutdown", 5.0) == []
    feed(d, [0.9, 0.9, 0.9, 0.9])
    (e3,) = d.end_all("shutdown", 6.0)
    assert e3.reason == "shutdown"


def test_exclusive_lets_only_the_top_action_be_on() -> None:
    """exclusive (one actor): two actions above threshold -> only the higher smoothed one opens; when the
    other overtakes it, the first ends before the second starts, never two open at once."""
    d = Decisions(update_interval=10.0)
    both = [{"a": 0.9, "b": 0.7}] * 4 + [{"a": 0.6, "b": 0.95}] * 4 + [{"a": 0.1, "b": 0.1}] * 2
    out: list[Event] = []
    for i, s in enumerate(both):
        out += d.step("cam", i * 0.5, 0.0, s, {"a": P, "b": P}, exclusive=True)
        assert len(d.active()) <= 1
    assert [(e.action, e.phase) for e in out] == [("a", "start"), ("a", "end"), ("b", "start"), ("b", "end")]
    multi = Decisions(update_interval=10.0)
    got = [e for i, s in enumerate(both) for e in multi.step("cam", i * 0.5, 0.0, s, {"a": P, "b": P})]
    assert {e.action for e in got if e.phase == "start"} == {"a", "b"}  # multi-label: both open
