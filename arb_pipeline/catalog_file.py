"""Reading a catalog file (docs/catalog.md): TOML parsed by ``tomllib``, then checked key by
key. Every problem is a ConfigError saying ``FILE:LINE: what is wrong; the fix``.

tomllib reports the line of a syntax error only; for the rest the line is found in the raw
text: the N-th ``[[table]]`` header, then the key inside that block.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path

from arb_pipeline.errors import ConfigError

SHIPPED_ONLY, MIRROR = "shipped-only", "mirror"
DELETE_POLICIES = (SHIPPED_ONLY, MIRROR)
# The names a catalog may give: code of this project, so a new name is a code change.
BOOTSTRAP_SCHEMAS = ("transapp",)  # schema/: the app tables created on an empty database
POSTPROCESSES = ("transapp",)  # postprocess/: the receiver's derivations

# key: (type, required, what it is) — the types a value may have, in words for the message
APP_KEYS = {
    "name": (str, True, 'a short name of the app, e.g. "transapp"'),
    "table_prefix": (str, True, 'the prefix every table name starts with (Django: the app label + "_")'),
    "bootstrap_schema": (str, False, "one of " + ", ".join(map(repr, BOOTSTRAP_SCHEMAS))),
    "postprocess": (str, False, "one of " + ", ".join(map(repr, POSTPROCESSES))),
}
TABLE_KEYS = {
    "name": (str, True, "the table's name in the database's public schema"),
    "cursor": (str, False, "the timestamp column partial backups select rows by"),
    "media_column": (str, False, "the column naming a file in the media folder"),
    "excluded": (list, False, "a list of column names that never leave the sender"),
    "delete_policy": (str, False, "one of " + ", ".join(map(repr, DELETE_POLICIES))),
}
# Asset keys are <side>/<kind>/<name without table_prefix>, beside .../media and .../backup.
_ASSET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED = ("media", "backup")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]\s]+)\s*\]\]?")
_TYPE_WORD = {str: "a string in quotes", list: 'a list of strings, e.g. ["email"]'}


class _Text:
    """The raw file's lines, to point at the line of a table block or of a key."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.headers = [  # (line number, header name, is an array header [[..]])
            (i + 1, m.group(2), m.group(1) == "[[")
            for i, line in enumerate(self.lines)
            if (m := _HEADER.match(line))
        ]

    def block(self, name: str, index: int | None = None) -> tuple[int, int]:
        """First and last line of the ``[name]`` table (or the ``index``-th ``[[name]]``)."""
        starts = [n for n, h, array in self.headers if h == name and array == (index is not None)]
        if not starts:
            return 1, len(self.lines)
        start = starts[index or 0] if (index or 0) < len(starts) else starts[-1]
        after = [n for n, _, _ in self.headers if n > start]
        return start, (after[0] - 1 if after else len(self.lines))

    def key_line(self, key: str, block: tuple[int, int]) -> int:
        start, end = block
        pattern = re.compile(rf"^\s*(\"{re.escape(key)}\"|'{re.escape(key)}'|{re.escape(key)})\s*=")
        for n in range(start, end + 1):
            if pattern.match(self.lines[n - 1]):
                return n
        return start


class _Reader:
    def __init__(self, path: Path, text: str):
        self.path, self.text = path, _Text(text)

    def fail(self, line: int, problem: str, fix: str):
        error = ConfigError(f"{self.path}:{line}: {problem}; {fix}")
        error.path, error.line = self.path, line
        raise error

    def checked(self, data, keys: dict, where: str, block: tuple[int, int]) -> dict:
        """``data``'s keys against ``keys``: no unknown key, required ones present, types right."""
        if not isinstance(data, dict):
            self.fail(
                block[0], f"{where} is not a table", f"write it as {where} followed by key = value lines"
            )
        for key, value in data.items():
            if key not in keys:
                close = difflib.get_close_matches(key, list(keys), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(
                    self.text.key_line(key, block),
                    f"unknown key {key!r} in {where}",
                    f"{hint}the keys are {', '.join(keys)}",
                )
            kind, _, meaning = keys[key]
            if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
                self.fail(
                    self.text.key_line(key, block),
                    f"{key} in {where} is {value!r}, not {_TYPE_WORD[kind]}",
                    f"write {key} as {_TYPE_WORD[kind]}: {meaning}",
                )
            if kind is str and not value.strip() and key != "table_prefix":
                self.fail(self.text.key_line(key, block), f"{key} in {where} is empty", f"write {meaning}")
        for key, (_, required, meaning) in keys.items():
            if required and key not in data:
                self.fail(block[0], f"{where} has no {key}", f"add {key} = ...: {meaning}")
        return data

    def one_of(self, data: dict, key: str, choices: tuple, where: str, block: tuple[int, int]) -> None:
        if key in data and data[key] not in choices:
            self.fail(
                self.text.key_line(key, block),
                f"{key} {data[key]!r} in {where} is not known",
                f"use one of {', '.join(map(repr, choices))}"
                + ("" if key == "delete_policy" else ", or remove it"),
            )


def read(path: Path) -> tuple[dict, list[dict]]:
    """The ``[app]`` section and the ``[[table]]`` entries of the catalog file, checked."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read the catalog file ({exc}); point ARB_CATALOG at a readable UTF-8 TOML file"
        ) from None
    reader = _Reader(path, raw)
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        line = int(m.group(1)) if (m := re.search(r"line (\d+)", str(exc))) else 1
        reader.fail(line, f"not valid TOML ({exc})", "fix the syntax at that line (https://toml.io)")
    for key in data:
        if key not in ("app", "table"):
            close = difflib.get_close_matches(key, ["app", "table"], n=1)
            block = reader.text.block(key, 0 if isinstance(data[key], list) else None)
            reader.fail(
                block[0],
                f"unknown section {key!r}",
                (f"did you mean {close[0]!r}? " if close else "")
                + "a catalog has one [app] and [[table]] blocks",
            )
    app_block = reader.text.block("app")
    if "app" not in data:
        reader.fail(1, "no [app] section", "add [app] with name and table_prefix (docs/catalog.md)")
    app = reader.checked(data["app"], APP_KEYS, "[app]", app_block)
    reader.one_of(app, "bootstrap_schema", BOOTSTRAP_SCHEMAS, "[app]", app_block)
    reader.one_of(app, "postprocess", POSTPROCESSES, "[app]", app_block)
    tables = data.get("table", [])
    if not isinstance(tables, list):
        reader.fail(
            reader.text.block("table")[0],
            "table is not a list of [[table]] blocks",
            "write each table as [[table]]",
        )
    if not tables:
        reader.fail(
            app_block[0], "the catalog lists no table", "add a [[table]] block with name = ... per table"
        )
    seen: dict[str, int] = {}
    for i, table in enumerate(tables):
        block = reader.text.block("table", i)
        named = isinstance(table, dict) and isinstance(table.get("name"), str)
        where = f"[[table]] #{i + 1}" + (f" ({table['name']})" if named else "")
        reader.checked(table, TABLE_KEYS, where, block)
        name, line = table["name"], reader.text.key_line("name", block)
        if name in seen:
            reader.fail(
                line, f"table {name} is listed twice (first at line {seen[name]})", "remove one entry"
            )
        seen[name] = line
        if not name.startswith(app["table_prefix"]):
            reader.fail(
                line,
                f"table {name} does not start with the table_prefix {app['table_prefix']!r}",
                "fix the name, or the [app] table_prefix",
            )
        short = name.removeprefix(app["table_prefix"])
        if not _ASSET_NAME.fullmatch(short) or short in RESERVED:
            reader.fail(
                line,
                f"table {name} gives the asset name {short!r}, which "
                + ("the media bundle or the package already has" if short in RESERVED else "Dagster refuses"),
                "a table's name after table_prefix must be letters, digits and _ (not media or backup); "
                "rename the table, or shorten table_prefix",
            )
        reader.one_of(table, "delete_policy", DELETE_POLICIES, where, block)
    return app, tables
