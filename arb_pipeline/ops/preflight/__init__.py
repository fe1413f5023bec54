"""Preflight (``arb check``): is this server set up to run its side of the pipeline?
What each server needs, in order, here; the checks by subject in the modules beside.
"""

from __future__ import annotations

from collections.abc import Iterator

from arb_pipeline.ops.preflight.capture import capture_items
from arb_pipeline.ops.preflight.dagster_instance import dagster_items
from arb_pipeline.ops.preflight.destination import destination_items, transport_items
from arb_pipeline.ops.preflight.item import FAIL, OK, SKIP, WARN, Item, problem_items
from arb_pipeline.ops.preflight.local import (
    database_items,
    drill_items,
    folder_item,
    pg_client_items,
    program_item,
    staging_item,
)
from arb_pipeline.ops.preflight.mail import mail_items
from arb_pipeline.settings import (
    DestinationSettings,
    ReceiverSettings,
    SenderSettings,
    SettingError,
    SharedSettings,
)

__all__ = [
    "FAIL",
    "OK",
    "SKIP",
    "WARN",
    "Item",
    "destination_items",
    "receiver_items",
    "run_checks",
    "sender_items",
]


def run_checks(role: str, remote: bool = True) -> list[Item]:
    """Every check of ``role`` (``sender`` or ``receiver``); ``remote=False`` skips the receiver's."""
    return list(sender_items(remote) if role == "sender" else receiver_items())


def sender_items(remote: bool = True) -> Iterator[Item]:
    """Everything the sender needs, in order."""
    problems: list[SettingError] = []
    sender = SenderSettings.from_env(problems=problems)
    destination = DestinationSettings.from_env(problems=problems)
    yield from problem_items(problems)
    bad = {e.setting for e in problems}
    database = list(database_items("ARB_SENDER_DSN", sender.dsn, "sender"))
    yield from database
    yield from pg_client_items(sender.dsn, sender.pg_dump)
    if not any(i.failed for i in database):  # unreachable: a second connect would wait and fail again
        yield from capture_items(sender.dsn)
    yield folder_item("ARB_SENDER_MEDIA_DIR", sender.media_dir, writable=False)
    if "ARB_STAGING_DIR" not in bad:  # refused (/, a home, the inbox ...): its FAIL is above
        yield staging_item("ARB_STAGING_DIR", sender.staging_dir)
    if "ARB_COMPLETE_AT" not in bad:
        timezone = SharedSettings.from_env(problems=[]).timezone  # a bad one: a FAIL of its own
        yield Item("ARB_COMPLETE_AT", OK, f"daily at {sender.complete_at:%H:%M} {timezone}")
    if "ARB_TRANSPORT" not in bad:
        yield from transport_items(remote, destination)
    yield from _common_items()


def receiver_items() -> Iterator[Item]:
    """Everything the receiver needs, in order."""
    problems: list[SettingError] = []
    receiver = ReceiverSettings.from_env(problems=problems)
    yield from problem_items(problems)
    yield from database_items("ARB_RECEIVER_DSN", receiver.dsn, "receiver")
    min_free = int(receiver.min_free_mb * 1024 * 1024)
    yield folder_item(
        "ARB_INBOX_DIR",
        receiver.inbox_dir,
        writable=True,
        min_free=min_free,
        create_hint="create it inside the SFTP user's chroot, owned by that user "
        "(docs/production.md, step 5)",
    )
    yield folder_item(
        "ARB_RECEIVER_MEDIA_DIR",
        receiver.media_dir,
        writable=True,
        min_free=min_free,
    )
    yield folder_item("ARB_QUARANTINE_DIR", receiver.quarantine_dir, writable=True)
    yield program_item(
        "ARB_PSQL",
        receiver.psql,
        "the restore drill runs restore.sql with it",
        "install postgresql-client, or set ARB_PSQL to psql's path",
    )[0]
    yield program_item(
        "zstd", "zstd", "restore.sql decompresses table files with it", "apt-get install zstd"
    )[0]
    yield from drill_items(receiver.drill_dsn)
    yield from _common_items()


def _common_items() -> Iterator[Item]:
    """What both servers need: alert emails, the shared settings, the Dagster instance."""
    yield from mail_items()
    problems: list[SettingError] = []
    shared = SharedSettings.from_env(problems=problems)
    yield from problem_items(problems)
    bad = {e.setting for e in problems}
    for name, value in (
        ("ARB_GO_LIVE", shared.go_live.isoformat()),
        ("ARB_PARTIAL_MINUTES", f"{shared.partial_minutes} min"),
        ("ARB_TIMEZONE", shared.timezone),
    ):
        if name not in bad:
            yield Item(name, OK, value)
    yield from dagster_items()
