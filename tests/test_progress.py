"""ProgressBoard: Rich bars on a terminal, plain periodic lines (counts, rate, ETA) in a log."""

from __future__ import annotations

import io

from rich.console import Console

from hadis_profile.progress import ProgressBoard, bar, clock_text


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _log_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


def test_clock_text():
    assert clock_text(0) == "0s"
    assert clock_text(59.6) == "1m00s"
    assert clock_text(75) == "1m15s"
    assert clock_text(3725) == "1h02m05s"


def test_a_log_gets_periodic_lines_with_counts_rate_and_eta():
    console, buf = _log_console()
    clock = FakeClock()
    with ProgressBoard(console, interval_s=30, clock=clock) as board:
        lat = board.task("m1: latency", 2)
        img = board.task("m1: images", 6)
        node = board.task("node-a", None)  # a count without an end adds to no total
        board.advance(lat)  # 1 s in: too soon for a line
        clock.t += 1
        board.advance(node)
        assert buf.getvalue() == ""
        clock.t += 39  # 40 s in, 2 of 8 units done
        board.advance(lat)  # the interval has passed: a line
        first = buf.getvalue().splitlines()
        assert first == [
            "progress: 2/8 units (25%) in 40s, 3/min, ETA 2m00s | m1: latency 2/2; node-a 1"
        ]
        clock.t += 10  # within the interval: counted, not printed
        board.advance(img, 2)
        board.log("a warning")
        clock.t += 30  # 80 s in, 6 of 8: 0.075/s = 4.5/min, 2 left -> 27 s
        board.advance(img, 2)
        assert buf.getvalue().splitlines()[1:] == [
            "a warning",
            "progress: 6/8 units (75%) in 1m20s, 4.5/min, ETA 27s | m1: images 4/6",
        ]
        clock.t += 5
        board.advance(img, 2)
    last = buf.getvalue().splitlines()[-1]
    assert last == (
        "done: 8/8 units (100%) in 1m25s, 5.65/min | m1: latency 2/2; m1: images 6/6; node-a 1"
    )


def test_a_terminal_gets_rich_bars_not_lines():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    with ProgressBoard(console, interval_s=0) as board:
        t = board.task("m1: images", 3)
        board.advance(t, 3)
    text = buf.getvalue()
    assert "m1: images" in text and "3/3" in text
    assert "progress:" not in text and "done:" not in text


def test_without_a_console_nothing_is_drawn_and_a_quick_transient_bar_says_nothing():
    with ProgressBoard(None) as board:
        assert board.task("x", 3) is None
        board.advance(None)
        board.log("silent")
    console, buf = _log_console()
    with bar(console, "router features", 4) as advance:  # done within the interval
        advance(4)
    assert buf.getvalue() == ""
    with ProgressBoard(console, interval_s=0) as board:  # a long transient one still reports
        board.transient = True
        board.advance(board.task("features", 2), 2)
    assert buf.getvalue().splitlines()[-1].startswith("done: 2/2 units (100%)")
