"""When to look at remote work again: a poll schedule that follows the work's expected end.

A dependent can start only once Tower knows its dependency ended, so every second between a remote
end and the poll that sees it is added to the run. Polling often costs platform API calls, durable
timers and orchestrator episodes; polling rarely costs makespan. Run history says when a service
usually ends (the median and spread of its last successful attempts), so the schedule spends its
looks where the end is likely:

- far from the window in which the end is likely: few polls, each halfway to the window (at most
  `FAR_MAX` apart, so that an early failure is still seen);
- across the window: one poll activity watches the work itself (`watch` seconds, a look every
  `look` seconds; see activities.remote.linger), so no durable timer (which the Azure Storage
  backend fires up to maxQueuePollingInterval late) stands between the end and its detection;
- after the window: backing off toward the platform's longest interval.

The looks in the window are budgeted so that a service makes no more platform API calls than the
growing interval (`growing_polls`) would have made up to the window's end. Without an expectation
the caller keeps the growing interval. Everything here is pure: the orchestrator calls it with its
own clock, so replays agree.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

RECENT = 7                   # successful attempts looked at (tower.runs.history's RECENT)
MAD_TO_SIGMA = 1.4826        # a normal distribution's sigma from its median absolute deviation
SPREAD_FLOOR = 0.01          # history never claims to know an end closer than 1 % of the duration
SPREAD_OF_ESTIMATE = 0.2     # a catalog's expected_duration is a guess: +-20 %
WINDOW_SIGMAS = 2.5          # the window: median +- 2.5 spreads (~99 % of ends of a normal spread)
FAR_MIN = 30.0               # seconds: nearer to the window than twice this, the next poll opens it
FAR_MAX = 600.0              # seconds: at most this long between polls while the end is far
WATCH_MAX = 60.0             # seconds one poll activity watches (it reads the cancel flag meanwhile)
LOOK_MIN = 1.0               # seconds: at most one look a second at a remote run
MIN_WINDOW_LOOKS = 3


@dataclass(frozen=True)
class Expectation:
    """When an attempt is likely to end, in seconds after its submit."""

    median: float
    spread: float

    def window(self) -> tuple[float, float]:
        return max(self.median - WINDOW_SIGMAS * self.spread, 0.0), self.median + WINDOW_SIGMAS * self.spread

    def to_json(self) -> dict:
        return {"median": self.median, "spread": self.spread}


def expectation_from_history(durations: Sequence[float]) -> Expectation | None:
    """The median and spread of the last successful attempts (newest first); None without any."""
    recent = [float(d) for d in list(durations)[:RECENT] if d is not None and d >= 0]
    if not recent:
        return None
    median = statistics.median(recent)
    mad = statistics.median(abs(d - median) for d in recent)
    if len(recent) < 3:              # one or two samples say little about the spread
        return Expectation(median, max(SPREAD_OF_ESTIMATE * median / 2, mad * MAD_TO_SIGMA))
    return Expectation(median, max(mad * MAD_TO_SIGMA, SPREAD_FLOOR * median))


def expectation_from_estimate(expected: float | None) -> Expectation | None:
    """A catalog's `expected_duration`, a guess with a wide window; None without one."""
    if not expected or expected <= 0:
        return None
    return Expectation(float(expected), SPREAD_OF_ESTIMATE * float(expected))


@dataclass(frozen=True)
class Poll:
    """The next poll: `delay` seconds from now; it watches the work for `watch` seconds (0: one
    look), a look every `look` seconds."""

    delay: float
    watch: float = 0.0
    look: float = 0.0


def growing_polls(until: float, first: float, factor: float, longest: float) -> int:
    """How many polls the growing interval (first, x factor, at most longest) makes in `until` s."""
    count, at, interval = 0, 0.0, first
    while True:
        at += interval
        count += 1
        if at >= until:
            return count
        interval = min(interval * factor, longest)


def _far_polls(start: float, far_min: float, far_max: float) -> int:
    count, left = 0, start
    while left > 2 * far_min:
        left -= min(left / 2, far_max)
        count += 1
    return count


def next_poll(elapsed: float, expect: Expectation, *, first: float, factor: float, longest: float,
              scale: float = 1.0) -> Poll:
    """The poll after `elapsed` seconds since the submit, when the end is expected by `expect`.
    first/factor/longest: the platform's growing interval (the API-call budget, and the backoff
    after the window); scale: a simulated run's time scale (multiplies this module's constants)."""
    start, end = expect.window()
    far_min, far_max, watch_max, look_min = FAR_MIN * scale, FAR_MAX * scale, WATCH_MAX * scale, LOOK_MIN * scale
    width = end - start
    budget = growing_polls(end, first, factor, longest) - _far_polls(start, far_min, far_max)
    looks = max(budget, MIN_WINDOW_LOOKS)
    look = max(look_min, width / looks)
    watching = 2 * look <= watch_max    # looks far apart: a timer each (its lateness matters less)
    if elapsed < start:
        left = start - elapsed
        if left <= 2 * far_min:
            return Poll(left, min(width, watch_max), look) if watching else Poll(left, 0.0, look)
        return Poll(min(left / 2, far_max), 0.0, look)
    if elapsed < end - look:            # the next poll at once: no timer between two watches
        return Poll(0.0, min(end - elapsed, watch_max), look) if watching else Poll(look, 0.0, look)
    after = elapsed - end
    return Poll(min(max(look, after * (factor - 1)), longest), 0.0, look)
