"""Checks of the alert emails: the admins' addresses, the SMTP server (a real login),
the UI links in the emails and how often they may come.
"""

from __future__ import annotations

from collections.abc import Iterator

from arb_pipeline.ops.preflight.item import FAIL, OK, WARN, Item, problem_items
from arb_pipeline.settings import MailSettings, SettingError


def mail_items() -> Iterator[Item]:
    from arb_pipeline.errors import ArbError
    from arb_pipeline.ops.alerts import Mailer

    problems: list[SettingError] = []
    mail = MailSettings.from_env(problems=problems)
    if problems:  # no mail check with a setting that is not what the admin wrote
        yield from problem_items(problems)
        return
    if not mail.admins:
        yield Item(
            "ARB_ADMINS",
            FAIL,
            "not set: failure and freshness emails go nowhere",
            "set ARB_ADMINS to the admins' addresses, comma-separated (the original's ADMINS)",
        )
    else:
        yield Item("ARB_ADMINS", OK, ", ".join(mail.admins))
    try:
        detail = Mailer(mail).check()
        login = f", login as {mail.user}" if mail.user else ", no login"
        yield Item("ARB_SMTP_HOST", OK, f"{detail}; security {mail.security}{login}")
    except ArbError as exc:
        yield Item(
            "ARB_SMTP_HOST",
            FAIL,
            str(exc),
            "set ARB_SMTP_HOST/PORT/SECURITY (and USER/PASSWORD if the "
            "server wants a login) to a mail server that accepts the mail",
        )
    if mail.ui_base_url:
        yield Item("ARB_UI_BASE_URL", OK, mail.ui_base_url)
    else:
        yield Item(
            "ARB_UI_BASE_URL",
            WARN,
            "not set: alert emails carry run ids, not links",
            "set ARB_UI_BASE_URL to the Dagster UI's address, e.g. https://dagster.example.org",
        )
    yield Item(
        "ARB_ALERT_INTERVAL_MINUTES",
        OK,
        f"at most one failure email per job every {mail.interval_minutes:g} min",
    )
