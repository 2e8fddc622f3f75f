"""Deploy phases: the timer and the Server-Timing header (real deploys: tests/test_provider.py,
TestDeployPhases)."""

from __future__ import annotations

import pytest

from faas_accel.provider.phases import OTHER, PhaseTimer, parse_server_timing, server_timing
from tests.support.clock import FakeClock


class TestPhaseTimer:
    def test_marks_cut_contiguous_phases_that_sum_to_the_total(self) -> None:
        """Each mark closes its phase at the current instant; the rest is `other`."""
        clock = FakeClock(100.0)
        timer = PhaseTimer(clock)
        for phase, seconds in (("resolve", 0.5), ("fetch", 2.0), ("unpack", 3.0), ("start", 0.25)):
            clock.now += seconds
            timer.mark(phase)
        clock.now += 0.125
        phases = timer.finish()
        assert phases == {
            "resolve": 0.5,
            "fetch": 2.0,
            "unpack": 3.0,
            "start": 0.25,
            "healthy": 0.0,
            OTHER: 0.125,
        }
        assert timer.total == sum(phases.values()) == 5.875

    def test_a_phase_never_marked_lasts_zero_and_an_unknown_one_counts_as_other(self) -> None:
        """A runtime that reports no resolve leaves it at 0; a stray name goes to `other`."""
        clock = FakeClock(0.0)
        timer = PhaseTimer(clock)
        clock.now += 1.0
        timer.mark("unpack")
        clock.now += 2.0
        timer.mark("bogus")
        phases = timer.finish()
        assert (phases["resolve"], phases["unpack"], phases[OTHER]) == (0.0, 1.0, 2.0)

    def test_server_timing_round_trips(self) -> None:
        """The header carries milliseconds; parsing gives seconds back and skips entries without dur."""
        header = server_timing({"resolve": 0.0123, "fetch": 1.5}, 1.6)
        assert header == "resolve;dur=12.3, fetch;dur=1500.0, total;dur=1600.0"
        assert parse_server_timing(header + ', cache;desc="hit", bad;dur=x') == pytest.approx(
            {"resolve": 0.0123, "fetch": 1.5, "total": 1.6}
        )
        assert parse_server_timing(None) == {}
