"""How much one table file of a backup may become once unpacked (promise 7: bounded resources).

A sender decides what its table files hold, so the receiver bounds them before they cost it
memory, CPU or database space: rows, bytes unpacked (absolute, and per byte the file
occupies, which stops a few KB unpacking to GB), and the length of one row. Verification
checks them as the file streams and stops at the first excess (package/verify.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from arb_pipeline import settings

MB = 1024 * 1024
RATIO_FLOOR = MB  # a file may always unpack to this much, whatever its ratio (tiny files)


@dataclass(frozen=True)
class PayloadLimits:
    max_line_bytes: int
    max_table_bytes: int
    max_unpack_ratio: float
    max_table_rows: int

    @classmethod
    def from_env(cls, environ=None) -> "PayloadLimits":
        return cls(
            max_line_bytes=int(settings.MAX_ROW_MB.read(environ) * MB),
            max_table_bytes=int(settings.MAX_TABLE_MB.read(environ) * MB),
            max_unpack_ratio=settings.MAX_UNPACK_RATIO.read(environ),
            max_table_rows=settings.MAX_TABLE_ROWS.read(environ),
        )

    def unpacked_bound(self, file_bytes: int) -> tuple[int, str]:
        """Most bytes a table file of ``file_bytes`` may unpack to, and the setting that says so."""
        by_ratio = max(RATIO_FLOOR, int(file_bytes * self.max_unpack_ratio))
        if by_ratio < self.max_table_bytes:
            return by_ratio, f"{settings.MAX_UNPACK_RATIO.name}={self.max_unpack_ratio:g} times its size"
        return self.max_table_bytes, f"{settings.MAX_TABLE_MB.name}={self.max_table_bytes // MB}"
