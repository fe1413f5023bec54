"""What one check reports: an :class:`Item` with the setting or dependency it is about,
its status, what was found, and the fix when it is not OK.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from arb_pipeline.settings import SettingError

OK, WARN, FAIL, SKIP = "ok", "WARN", "FAIL", "skip"


@dataclass
class Item:
    name: str
    status: str
    detail: str
    fix: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
            "metrics": self.metrics,
        }


def mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MB"


def problem_items(problems: list[SettingError]) -> Iterator[Item]:
    """A FAIL item for each setting whose value does not parse (the rest use its default)."""
    for e in problems:
        yield Item(e.setting, FAIL, e.problem, e.fix)
