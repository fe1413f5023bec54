"""What one setting is (:class:`Setting`), the parsers its values go through, and how a
frozen settings object is built from the environment (:class:`FromEnv`)."""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
from collections.abc import Callable, Mapping
from datetime import datetime, time, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from arb_pipeline.errors import ConfigError

SIDES = ("sender", "receiver", "both", "arb")  # "arb": read by the command line only


class SettingError(ConfigError):
    """One setting's value is wrong. The message names the setting, the value (a secret's
    never) and the fix; ``setting``, ``problem`` and ``fix`` hold them apart (arb check)."""

    def __init__(self, setting: str, problem: str, fix: str):
        super().__init__(f"{problem}: {fix}")
        self.setting, self.problem, self.fix = setting, problem, fix


class SettingsError(ConfigError):
    """Several settings are wrong at once: one line each in the message, all in ``errors``."""

    def __init__(self, errors: list[SettingError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default, parse (which validates), which side
    reads it and what it does. The docs' table (docs/settings.md) is generated from these."""

    name: str
    default: str  # as written in the environment; "" = no default (unset)
    parse: Callable[[str], Any]  # raises ValueError("why it is wrong") on a bad value
    side: str
    description: str
    original: str = ""  # the original tool's name for it, if it had one
    secret: bool = False  # its value never appears in messages, the UI or run config
    default_text: str = ""  # the default in words, where it is not a fixed value

    def __post_init__(self):
        if self.side not in SIDES:
            raise ValueError(f"{self.name}: side {self.side!r} is not one of {SIDES}")

    def raw(self, environ: Mapping[str, str] | None = None) -> str:
        """The text in the environment, or the default when unset or blank."""
        value = (os.environ if environ is None else environ).get(self.name, "")
        return value if value.strip() else self.default

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        """The parsed value from ``environ`` (default: this process's environment)."""
        return self.parse_text(self.raw(environ))

    def parse_text(self, text: str) -> Any:
        try:
            return self.parse(text)
        except ValueError as exc:
            shown = " (value not shown: a secret)" if self.secret else f"={text!r}"
            fix = self.hint() + (f", or unset it for the default ({self.default})" if self.default else "")
            raise SettingError(self.name, f"{self.name}{shown} {exc}", fix) from None

    def hint(self) -> str:
        return getattr(self.parse, "hint", "fix the value")

    @property
    def default_value(self) -> Any:
        return self.parse(self.default)

    def field(self) -> Any:
        """A dataclass field holding this setting, its default the parsed default (a secret's
        value stays out of the object's repr)."""
        return dataclasses.field(default=self.default_value, repr=not self.secret, metadata={"setting": self})


class FromEnv:
    """Mixin of the frozen settings dataclasses: ``from_env`` reads every field that holds a
    Setting; all bad values are reported at once."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, problems: list | None = None):
        """Raise SettingsError naming every bad setting; or, given a ``problems`` list (arb
        check), append the SettingErrors to it and use the defaults for those settings."""
        values, errors = {}, []
        for f in dataclasses.fields(cls):
            setting = f.metadata.get("setting")
            if setting is None:
                continue
            try:
                values[f.name] = setting.read(environ)
            except SettingError as exc:
                errors.append(exc)
        if errors and problems is None:
            raise errors[0] if len(errors) == 1 else SettingsError(errors)
        if problems is not None:
            problems.extend(errors)
        return cls(**values)

    @classmethod
    def settings(cls) -> list[Setting]:
        return [f.metadata["setting"] for f in dataclasses.fields(cls) if "setting" in f.metadata]


def child_environment() -> dict[str, str]:
    """A copy of this process's environment, for a child process (pg_dump, psql) to add to."""
    return dict(os.environ)


# --------------------------------------------------------------------------- parsers


def _hint(text: str):
    def mark(fn):
        fn.hint = text
        return fn

    return mark


@_hint("any text")
def text(raw: str) -> str:
    return raw


def whole(minimum: int = 0) -> Callable[[str], int]:
    @_hint(f"use a whole number, at least {minimum}")
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("is not a whole number") from None
        if value < minimum:
            raise ValueError(f"is below {minimum}")
        return value

    return parse


def number(minimum: float = 0.0, *, above: bool = False) -> Callable[[str], float]:
    """A decimal number, at least ``minimum`` (or more than it, with ``above``)."""
    word = "more than" if above else "at least"

    @_hint(f"use a number {word} {minimum:g} (decimals allowed)")
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("is not a number") from None
        if value != value or value < minimum or (above and value == minimum):  # NaN too
            raise ValueError(f"is not {word} {minimum:g}")
        return value

    return parse


def optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Empty means None (a default computed from other settings); else ``parse``."""

    @_hint(parse.hint + ", or leave it unset")
    def parse_optional(raw: str) -> Any:
        return None if not raw.strip() else parse(raw)

    return parse_optional


@_hint("use 1 (on) or 0 (off)")
def flag(raw: str) -> bool:
    if raw.strip() not in ("0", "1"):
        raise ValueError("is not 1 or 0")
    return raw.strip() == "1"


def one_of(*choices: str) -> Callable[[str], str]:
    @_hint("use one of " + ", ".join(repr(c) for c in choices if c))
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError("is not a choice")
        return value

    return parse


@_hint("use 1 to 63 lowercase letters, digits and underscores")
def slot_name(raw: str) -> str:
    """A replication slot's or publication's name: PostgreSQL allows only these characters in a slot's."""
    name = raw.strip()
    if not name or len(name) > 63 or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789_" for c in name):
        raise ValueError("is not a slot name")
    return name


@_hint("use an IANA time zone name such as America/Santiago")
def timezone_name(raw: str) -> str:
    try:
        ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("is not a time zone") from None
    return raw.strip()


@_hint("use HH:MM, 24-hour, e.g. 03:30")
def clock(raw: str) -> time:
    if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", raw.strip()):
        raise ValueError("is not HH:MM")
    hh, mm = raw.strip().split(":")
    return time(int(hh), int(mm))


def daily_cron(at: time) -> str:
    """The cron expression of a daily run at a ``clock`` setting's time."""
    return f"{at.minute} {at.hour} * * *"


@_hint("use a whole number of minutes that divides 60 (1, 5, 10, 15 ...)")
def divisor_of_60(raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) < 1 or 60 % int(raw):
        raise ValueError("does not divide an hour")
    return int(raw)


PARTITION_FORMATS = ("%Y-%m-%d-%H-%M", "%Y-%m-%d")


@_hint("use YYYY-MM-DD or YYYY-MM-DD-HH-MM (UTC)")
def utc_date(raw: str) -> datetime:
    for fmt in PARTITION_FORMATS:
        try:
            return datetime.strptime(raw.strip(), fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise ValueError("is not a date")


@_hint("list the addresses separated by commas")
def addresses(raw: str) -> tuple[str, ...]:
    """Comma- or semicolon-separated addresses (``Name <a@b>`` allowed)."""
    items = tuple(a.strip() for a in raw.replace(";", ",").split(",") if a.strip())
    bad = [a for a in items if "@" not in a]
    if bad:
        raise ValueError(f"holds {', '.join(repr(b) for b in bad)}, which is not an email address")
    return items


@_hint("use five cron fields, e.g. '7 * * * *'")
def cron(raw: str) -> str:
    if len(raw.split()) != 5:
        raise ValueError("is not a cron expression of five fields")
    return " ".join(raw.split())


@_hint(
    "point it at a catalog TOML file (docs/catalog.md), or leave it unset for the packaged TranSapp catalog"
)
def catalog_file(raw: str) -> str:
    """Empty: the packaged catalog; else a file that exists (its content: catalog.load_catalog)."""
    if raw.strip() and not os.path.isfile(raw.strip()):
        raise ValueError("is not a file")
    return raw.strip()


FOLDER_HINT = (
    "use a folder of the pipeline's own, e.g. /var/tmp/arb_pipeline (not /, a home folder, the inbox "
    "or a media folder, nor a folder holding one of those)"
)


def real_path(path: str) -> str:
    """The absolute path with symlinks resolved (relative paths: from the current folder)."""
    return os.path.realpath(path)


def _home_folders() -> set[str]:
    homes = {"/root", pwd.getpwuid(os.getuid()).pw_dir, os.environ.get("HOME") or "/"}
    return {real_path(h) for h in homes}


@_hint(FOLDER_HINT)
def scratch_folder(raw: str) -> str:
    """A folder the pipeline may empty: not /, a home folder (this user's, /root, /home/*),
    nor a folder holding one."""
    real = real_path(raw.strip())
    if real == "/":
        raise ValueError("is the root folder")
    if real == "/home":
        raise ValueError("holds the users' home folders")
    for home in _home_folders() | ({real} if os.path.dirname(real) == "/home" else set()):
        if real == home:
            raise ValueError(f"is a home folder ({home})")
        if home.startswith(real.rstrip("/") + "/"):
            raise ValueError(f"holds the home folder {home}")
    return raw.strip()


def overlap(path: str, other: str) -> str | None:
    """How ``path`` overlaps the folder ``other`` ("is", "holds", "is inside"), or None."""
    a, b = real_path(path), real_path(other)
    if a == b:
        return "is"
    if b.startswith(a.rstrip("/") + "/"):
        return "holds"
    if a.startswith(b.rstrip("/") + "/"):
        return "is inside"
    return None
