"""``arb demo``: the one-machine demo (README command 1)."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run sender and receiver on this machine under `dagster dev`")
    p.add_argument("--port", type=int, default=3000, help="Dagster UI port on 127.0.0.1 (default 3000)")
    p.add_argument("--rate", type=float, default=2.0, help="app operations per second")
    p.add_argument(
        "--keep", action="store_true", help="keep var/demo from the last run instead of starting fresh"
    )
    p.add_argument(
        "--sftp",
        action="store_true",
        help="publish over SFTP to a local OpenSSH sshd (chrooted as root) instead of a local folder",
    )
    p.add_argument(
        "--partial-minutes", type=int, default=1, help="ARB_PARTIAL_MINUTES of the demo (default 1)"
    )
    p.add_argument(
        "--partials",
        choices=("capture", "timestamp"),
        default="capture",
        help="ARB_PARTIAL_SOURCE of the demo: every committed change from a replication slot "
        "(default), or rows by their timeStamp window",
    )
    p.add_argument("--dir", type=Path, help="where the demo keeps everything (default var/demo)")
    p.set_defaults(func=run)


def run(args) -> int:
    from arb_pipeline.dev.demo import run as run_demo

    return run_demo(
        port=args.port,
        rate=args.rate,
        keep=args.keep,
        sftp=args.sftp,
        partial_minutes=args.partial_minutes,
        base=args.dir,
        partial_source=args.partials,
    )
