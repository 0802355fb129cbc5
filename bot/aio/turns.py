"""Turns refused rather than queued: at most one holder per key, and at most so many in all.

For work a member must not run twice at once (a scan of the listening log, a chart render):
a second ask while the first runs is answered at once, never made to wait behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Generic, Literal, TypeVar

K = TypeVar("K", bound=Hashable)
Refusal = Literal["taken", "full"]


class Turns(Generic[K]):
    def __init__(self, *, at_most: int | None = None) -> None:
        self._at_most = at_most  # holders in all; None: no bound
        self._held: set[K] = set()

    @contextmanager
    def take(self, key: K, refused: Callable[[Refusal], BaseException]) -> Iterator[None]:
        """Hold ``key``'s turn for the block; raise ``refused("taken")`` when someone holds it
        already, ``refused("full")`` when ``at_most`` turns are held."""
        if key in self._held:
            raise refused("taken")
        if self._at_most is not None and len(self._held) >= self._at_most:
            raise refused("full")
        self._held.add(key)
        try:
            yield
        finally:
            self._held.discard(key)


__all__ = ["Refusal", "Turns"]
