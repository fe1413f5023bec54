"""When the sender's capture-slot sensor emails, and what: plain Python, its state JSON in the
sensor's cursor. An email goes when the slot's problems change (a new one, or all cleared: a
recovery email), and again each alert interval while they last, so a slot filling the disk
is not mentioned once and forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arb_pipeline.capture.health import SlotHealth
from arb_pipeline.ops.alerts import SUBJECT_PREFIX


@dataclass(frozen=True)
class SlotAlert:
    subject: str
    body: str


def slot_alert_email(health: SlotHealth, location: str = "sender") -> SlotAlert:
    slot = health.status.slot
    if not health.problems:
        return SlotAlert(
            f"{SUBJECT_PREFIX} {location}: capture slot {slot} is healthy again",
            f"The problems with replication slot {slot} are gone.\n\n{health.figures()}\n",
        )
    kinds = ", ".join(f.kind for f in health.problems)
    lines = [f"Replication slot {slot} on the {location} needs attention ({kinds}).", ""]
    for f in health.problems:
        lines += [f"- {f.problem}", f"  Fix: {f.fix}", ""]
    for f in health.warnings:
        lines += [f"- Also: {f.problem}", f"  Fix: {f.fix}", ""]
    lines += [health.figures(), "", "`arb capture status` on the sender shows the same."]
    return SlotAlert(f"{SUBJECT_PREFIX} {location}: capture slot {slot}: {kinds}", "\n".join(lines) + "\n")


def due_alert(
    state: dict[str, Any], health: SlotHealth, now: float, interval_seconds: float
) -> tuple[SlotAlert | None, dict[str, Any]]:
    """The email to send now, if any, and the state to keep once it is sent."""
    kinds = sorted(f.kind for f in health.problems)
    alerted, sent_at = state.get("kinds", []), float(state.get("sent_at", 0))
    if kinds == alerted and (not kinds or now - sent_at < interval_seconds):
        return None, state
    return slot_alert_email(health), {"kinds": kinds, "sent_at": now}
