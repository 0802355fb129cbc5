"""What ``check`` reports: one finding per item, with its verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

OK: Final = "ok"
PROBLEM: Final = "problem"
SKIPPED: Final = "skipped"
WARNING: Final = "warning"  # usable, but worth fixing: not counted as a problem


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: str
    item: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<9}{self.item}: {self.detail}"
