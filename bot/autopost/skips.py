"""Where in a track skips happen, and where the checks that notice them go.

Published data on billions of Spotify plays (Lamere, "The Skip", 2014): 24 % of plays are
skipped within 5 s, 35 % within 30 s and 49 % before the end. :class:`SkipModel` spreads each of
those shares evenly over its stretch (0-5 s, 5-30 s, 30 s to the end), so a track still playing
at ``x`` is skipped in the next second with the *hazard* ``density(x) / survival(x)``: about 5 %
a second in the first seconds, 0.6 % until 30 s, then 0.1-0.3 % (the steady rate the paper
reports after the first 20 s, lower for longer tracks).

Checks go where that hazard is: a skip at ``x`` waits for the next check, and checking a stretch
with hazard ``h`` every ``I`` seconds costs ``1 / I`` calls a second and ``h x I / 2`` seconds of
delay a second. At a price of ``p`` seconds of delay per call the best interval is
``I = sqrt(2 p / h)``, so the next check goes where the check density ``sqrt(h / 2p)`` adds up
to one: ``integral sqrt(h(x)) dx = sqrt(2 p)``. Each stretch has a closed form (the survival is
linear in it): ``integral sqrt(s / v(x)) dx = 2 (sqrt(v0) - sqrt(v1)) / sqrt(s)``.
"""

from __future__ import annotations

import math

from bot.autopost.config import PaceConfig

EARLY = 5.0  # seconds: the first stretch of the published figures
SETTLED = 30.0  # the second
_SHORTEST = SETTLED + 5.0  # shorter tracks end before a skip check would pay
_LENGTHS = (0.6, 0.8, 1.0, 1.2, 1.4)  # of the typical track: what planning averages over
_STEPS_PER_E = 20  # the price grid: 20 steps per factor e, from 1 s to about 1e9 s
_GRID = range(21 * _STEPS_PER_E + 2)

_Stretch = tuple[float, float, float, float]  # (start, end, skip density, survival at start)


class SkipModel:
    """Skip hazard through a track and the placement of skip checks at a price. Pure."""

    def __init__(self, config: PaceConfig) -> None:
        self._shares = (config.skip_within_5s, config.skip_within_30s, config.skip_before_end)
        self._min_gap = config.min_skip_gap
        self._typical = config.typical_track
        self._shortest = config.shortest_track
        self._table: list[float] = []  # checks_per_track on the price grid

    def stretches(self, duration: float) -> list[_Stretch]:
        within_5s, within_30s, before_end = self._shares
        return [
            (0.0, EARLY, within_5s / EARLY, 1.0),
            (EARLY, SETTLED, (within_30s - within_5s) / (SETTLED - EARLY), 1.0 - within_5s),
            (
                SETTLED,
                duration,
                (before_end - within_30s) / max(1.0, duration - SETTLED),
                1.0 - within_30s,
            ),
        ]

    def survival(self, position: float, duration: float) -> float:
        """The share of plays still playing at ``position`` (unskipped so far)."""
        for start, end, density, alive in self.stretches(duration):
            if position < end:
                return alive - density * max(0.0, position - start)
        return 1.0 - self._shares[2]

    def next_check(self, position: float, duration: float, price: float) -> float | None:
        """Where in the track (seconds) the next skip check goes, seen playing at
        ``position``; None when the end check comes first: by the hazard, or earlier to
        leave no room for a whole unseen track when that is worth the price."""
        by_hazard = self._by_hazard(position, duration, price)
        unseen_room = duration - self._shortest
        if (
            unseen_room > position + self._min_gap
            and (by_hazard is None or by_hazard > unseen_room)
            and self.unseen_track_cost(position, duration) >= price
        ):
            return unseen_room
        return by_hazard

    def unseen_track_cost(self, position: float, duration: float) -> float:
        """The delay (seconds) a check ``shortest_track`` before the end saves: the chance
        that a skip before then starts a track that plays to its end before the end check,
        times that track's length (never posted)."""
        alive = self.survival(position, duration)
        skipped = (alive - self.survival(duration - self._shortest, duration)) / alive
        return skipped * (1.0 - self._shares[2]) * self._typical

    def _by_hazard(self, position: float, duration: float, price: float) -> float | None:
        if duration < _SHORTEST:
            return None
        seen = position
        wanted = math.sqrt(2.0 * price)  # the integral of sqrt(hazard) one check covers
        for start, end, density, alive in self.stretches(duration):
            if position >= end:
                continue
            if density <= 0.0:
                position = end
                continue
            from_ = max(position, start)
            root_here = math.sqrt(alive - density * (from_ - start))
            root_end = math.sqrt(max(0.0, alive - density * (end - start)))
            covered = 2.0 * (root_here - root_end) / math.sqrt(density)
            if covered >= wanted:
                root_at = root_here - wanted * math.sqrt(density) / 2.0
                at = start + (alive - root_at * root_at) / density
                at = max(at, seen + self._min_gap)
                return at if at < duration - self._min_gap else None
            wanted -= covered
            position = end
        return None

    def checks_per_track(self, price: float) -> float:
        """Skip checks a track seen at its start costs at ``price``, on average over tracks
        around the typical length (each check is made only while no earlier one has seen
        the track change). From a table over prices, worked out once (the pace asks often)."""
        if not self._table:
            self._table = [self._checks_per_track(math.exp(x / _STEPS_PER_E)) for x in _GRID]
        at = math.log(max(price, 1.0)) * _STEPS_PER_E
        index = min(int(at), len(self._table) - 2)
        low, high = self._table[index], self._table[index + 1]
        return low + (high - low) * min(1.0, at - index)

    def _checks_per_track(self, price: float) -> float:
        total = 0.0
        for share in _LENGTHS:
            duration = self._typical * share
            position = 1.0
            first_alive = self.survival(position, duration)
            while (after := self.next_check(position, duration, price)) is not None:
                total += self.survival(position, duration) / first_alive
                position = after
        return total / len(_LENGTHS)


__all__ = ["SkipModel"]
