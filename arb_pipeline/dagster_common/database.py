"""The database resource of both code locations: a libpq DSN that reaches Dagster only
through dg.EnvVar (its password never shows in the UI or run config)."""

from __future__ import annotations

from typing import ClassVar

import dagster as dg

from arb_pipeline.errors import ConfigError
from arb_pipeline.settings import Setting


class Database(dg.ConfigurableResource):
    """A PostgreSQL database; each code location's subclass names the setting it comes from."""

    setting: ClassVar[Setting]
    dsn: str

    @classmethod
    def from_setting(cls) -> "Database":
        return cls(dsn=dg.EnvVar(cls.setting.name))

    def checked_dsn(self) -> str:
        if not self.dsn:
            raise ConfigError(
                f"{self.setting.name} is empty: set it to the database's libpq DSN (docs/settings.md)"
            )
        return self.dsn
