"""``arb check``: preflight of this server's settings and dependencies, each with its
status and, when it is not OK, the fix. Exit 0 when nothing failed, 1 otherwise.

On the sender it also runs the connectivity check the hourly ``receiver_connectivity``
asset runs: the receiver is reachable, its host key matches, the remote folder is
writable and has room.
"""

from __future__ import annotations

import json
import sys

from arb_pipeline.ops.preflight import FAIL, OK, SKIP, WARN, run_checks
from arb_pipeline.settings import RECEIVER_DSN, ROLE, SENDER_DSN

COLOURS = {OK: "\033[32m", WARN: "\033[33m", FAIL: "\033[31m", SKIP: "\033[90m"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check",
        help="preflight: check this server's settings, dependencies and (sender) the receiver",
        description="Check every setting and dependency this server's side of the pipeline needs, and print "
        "each with its status and the fix. Exit status: 0 all OK (warnings allowed), 1 something failed.",
    )
    p.add_argument(
        "--role",
        choices=("sender", "receiver", "both"),
        help="which side this server is (default: $ARB_ROLE, else guessed from ARB_SENDER_DSN / "
        "ARB_RECEIVER_DSN; 'both' on a one-machine setup)",
    )
    p.add_argument(
        "--no-remote", action="store_true", help="sender: skip the SFTP checks against the receiver"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def _roles(choice: str | None) -> list[str]:
    if choice == "both":
        return ["sender", "receiver"]
    choice = choice or ROLE.read()
    if choice == "both":
        return ["sender", "receiver"]
    if choice:
        return [choice]
    sender, receiver = bool(SENDER_DSN.read()), bool(RECEIVER_DSN.read())
    if sender and receiver:
        return ["sender", "receiver"]
    return ["receiver"] if receiver else ["sender"]


def run(args) -> int:
    results = {role: run_checks(role, remote=not args.no_remote) for role in _roles(args.role)}
    failed = any(i.failed for items in results.values() for i in items)
    if args.json:
        print(json.dumps({role: [i.to_dict() for i in items] for role, items in results.items()}, indent=2))
        return 1 if failed else 0
    colour = sys.stdout.isatty()
    for role, items in results.items():
        print(f"arb check: {role}")
        width = max(len(i.name) for i in items)
        for i in items:
            status = f"{COLOURS[i.status]}{i.status:<4}\033[0m" if colour else f"{i.status:<4}"
            print(f"  {status}  {i.name:<{width}}  {' '.join(i.detail.split())}")
            if i.fix and i.status in (FAIL, WARN):
                print(f"  {'':<4}  {'':<{width}}  fix: {' '.join(i.fix.split())}")
        counts = {s: sum(1 for i in items if i.status == s) for s in (OK, WARN, FAIL)}
        print(f"  {counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failed\n")
    return 1 if failed else 0
