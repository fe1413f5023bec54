"""A capturing SMTP server on 127.0.0.1 for the demo and the tests (aiosmtpd).

It accepts every message without authentication (a local relay, loopback only), keeps it
in memory as an ``email.message.EmailMessage`` with its envelope, and optionally appends
it as an ``.eml`` file to a folder so the demo's alert emails can be opened afterwards.
Nothing is delivered anywhere.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

from arb_pipeline.dev.ports import free_port


@dataclass(frozen=True)
class CapturedMessage:
    """One message as received: envelope sender and recipients, and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    received_at: datetime
    eml_path: Path | None = None

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def body(self) -> str:
        """The plain-text body (the text/plain part of a multipart message)."""
        part = self.message.get_body(preferencelist=("plain", "html"))
        return part.get_content() if part is not None else ""


class _CaptureHandler:
    def __init__(self, server: "LocalSmtp") -> None:
        self._server = server

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd hook name)
        self._server._capture(
            envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content or envelope.content
        )
        return "250 Message accepted for delivery"


@dataclass
class LocalSmtp:
    """``start()``, ``stop()``, ``messages``, ``wait_for(count, timeout)``, ``clear()``."""

    host: str = "127.0.0.1"
    port: int = 0
    eml_dir: Path | None = None
    _messages: list[CapturedMessage] = field(default_factory=list, init=False, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)
    _controller: object = field(default=None, init=False, repr=False)

    def _capture(self, mail_from: str, rcpt_tos: tuple[str, ...], raw: bytes) -> None:
        # Parse with \n line ends, as Python builds messages; the .eml file keeps the wire bytes.
        message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        received_at = datetime.now(timezone.utc)
        with self._cond:
            eml_path = None
            if self.eml_dir is not None:
                self.eml_dir.mkdir(parents=True, exist_ok=True)
                name = f"{received_at:%Y%m%dT%H%M%S.%fZ}-{len(self._messages) + 1:04d}.eml"
                eml_path = self.eml_dir / name
                eml_path.write_bytes(raw)
            self._messages.append(CapturedMessage(mail_from, rcpt_tos, message, received_at, eml_path))
            self._cond.notify_all()

    @property
    def messages(self) -> list[CapturedMessage]:
        """A copy of the messages received so far, oldest first."""
        with self._cond:
            return list(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[CapturedMessage]:
        """Block until at least ``count`` messages arrived; return them. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"SMTP server {self.host}:{self.port} received {len(self._messages)} "
                        f"message(s), not {count}, within {timeout:g} s"
                    )
                self._cond.wait(left)
            return list(self._messages)

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> "LocalSmtp":
        from aiosmtpd.controller import Controller

        if self._controller is not None:
            return self
        if self.eml_dir is not None:
            self.eml_dir = Path(self.eml_dir)
            self.eml_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        controller = Controller(
            _CaptureHandler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="arb-smtp.localhost",
            ready_timeout=10.0,
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
