"""Settings: every environment variable the pipeline reads, each with its name, default,
parse, check and meaning written once (table.py), and the frozen settings objects each side
builds from them (groups.py). Plain Python: no Dagster here.

    from arb_pipeline import settings
    receiver = settings.ReceiverSettings.from_env()     # raises ConfigError naming a bad setting
    settings.PROGRESS.read()                              # one setting, at the point of use

docs/settings.md is generated from this package: ``python -m arb_pipeline.settings --markdown``.
"""

from arb_pipeline.settings.groups import (
    CaptureSettings,
    DagsterInstanceSettings,
    DestinationSettings,
    MailSettings,
    ReceiverSettings,
    SenderSettings,
    SharedSettings,
    role_dsn,
)
from arb_pipeline.settings.setting import Setting, SettingError, SettingsError, child_environment
from arb_pipeline.settings.table import *  # noqa: F403 (the Setting constants)
from arb_pipeline.settings.table import ALL, BY_NAME

__all__ = [
    "ALL",
    "BY_NAME",
    "CaptureSettings",
    "DagsterInstanceSettings",
    "DestinationSettings",
    "MailSettings",
    "ReceiverSettings",
    "SenderSettings",
    "Setting",
    "SettingError",
    "SettingsError",
    "SharedSettings",
    "child_environment",
    "role_dsn",
]
