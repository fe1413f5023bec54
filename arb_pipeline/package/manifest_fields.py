"""Typed, strict access to a manifest's JSON fields: every error names the field's path."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from arb_pipeline.errors import ArbError

_LSN = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}\Z")
# \Z, not $: "$" also matches before a final newline, so "x\n" would pass.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?\Z")


class ManifestError(ArbError):
    """A manifest is malformed: the message names the field."""


class FieldReader:
    """Typed access to one JSON object, with errors that name the field's path."""

    def __init__(self, doc: Any, path: str):
        if not isinstance(doc, dict):
            raise ManifestError(f"{path} must be a JSON object")
        self.doc, self.path = doc, path

    def _get(self, key: str, types, optional: bool):
        value = self.doc.get(key)
        if value is None:
            if optional:
                return None
            raise ManifestError(f"{self.path}.{key} is missing")
        if not isinstance(value, types) or (
            isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
        ):
            raise ManifestError(f"{self.path}.{key} has the wrong type ({type(value).__name__})")
        return value

    def str(self, key, optional=False):
        value = self._get(key, str, optional)
        if value is not None and (len(value) > 10_000 or "\x00" in value):
            raise ManifestError(f"{self.path}.{key} is too long or holds a NUL byte")
        return value

    def int(self, key, optional=False):
        return self._get(key, int, optional)

    def nonneg(self, key, optional=False):
        value = self.int(key, optional)
        if value is not None and not 0 <= value < 2**63:
            raise ManifestError(f"{self.path}.{key} is out of range")
        return value

    def key(self, key):
        value = self.int(key)
        if not -(2**63) <= value < 2**63:
            raise ManifestError(f"{self.path}.{key} is out of a bigint's range")
        return value

    def lsn(self, key, optional=False):
        value = self.str(key, optional)
        if value is not None and not _LSN.match(value):
            raise ManifestError(f"{self.path}.{key} {value[:40]!r} is not an LSN (like 16/B374D848)")
        return value

    def choice(self, key, allowed, optional=False):
        value = self.str(key, optional)
        if value is not None and value not in allowed:
            raise ManifestError(f"{self.path}.{key} is {value!r}, not one of {', '.join(allowed)}")
        return value

    def sha256(self, key):
        value = self.str(key)
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ManifestError(f"{self.path}.{key} is not a sha256 hex digest")
        return value

    def safe_name(self, key):
        value = self.str(key)
        if not SAFE_NAME.match(value) or ".." in value.split("/"):
            raise ManifestError(f"{self.path}.{key} {value!r} is not a safe relative file name")
        return value

    def time(self, key, optional=False):
        value = self.str(key, optional)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ManifestError(f"{self.path}.{key} {value!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise ManifestError(f"{self.path}.{key} {value!r} has no UTC offset")
        try:  # comparing times converts them to UTC: year 9999 with a negative offset can't be
            parsed.astimezone(timezone.utc)
        except OverflowError:
            raise ManifestError(f"{self.path}.{key} {value!r} is out of range") from None
        return parsed

    def sub(self, key, optional=False):
        value = self._get(key, dict, optional)
        return None if value is None else FieldReader(value, f"{self.path}.{key}")

    def dict(self, key, optional=False):
        return self._get(key, dict, optional)

    def list_of_subs(self, key, optional=False):
        items = self._get(key, list, optional) or []
        return [FieldReader(item, f"{self.path}.{key}[{i}]") for i, item in enumerate(items)]

    def str_list(self, key, optional=False):
        items = self._get(key, list, optional) or []
        if not all(isinstance(i, str) for i in items):
            raise ManifestError(f"{self.path}.{key} must be a list of strings")
        return items
