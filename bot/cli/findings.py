"""What ``check`` reports: one finding per item, with its verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

OK: Final = "ok"
PROBLEM: Final = "problem"
SKIPPED: Final = "skipped"
# Usable, but worth fixing or knowing (a .env others can read, statuses not seen, the daily
# Spotify limit spent): never counted as a problem, so the exit status stays 0.
WARNING: Final = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: str
    item: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<9}{self.item}: {self.detail}"
