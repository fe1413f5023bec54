"""``arb inspect``, ``arb quarantined`` and ``arb requeue``: looking at backups by hand.
Their folders default to the receiver's settings (ARB_INBOX_DIR, ARB_QUARANTINE_DIR)."""

from __future__ import annotations

import json
from pathlib import Path

from arb_pipeline.errors import ConfigError
from arb_pipeline.settings import INBOX_DIR, QUARANTINE_DIR

INBOX_HELP = f"the receiver's inbox (default: $ARB_INBOX_DIR, else {INBOX_DIR.default})"
QUARANTINE_HELP = f"the quarantine folder (default: $ARB_QUARANTINE_DIR, else {QUARANTINE_DIR.default})"


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="show a backup's manifest, files and row counts, and verify it")
    p.add_argument(
        "backup_dir",
        type=Path,
        help="a backup folder (inbox/<kind>/<backup id>), or a backup id, looked for in the inbox "
        "and then the quarantine",
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--no-verify", action="store_true", help="skip checking sizes, sha256 and row counts")
    p.add_argument("--inbox-dir", type=Path, help=INBOX_HELP)
    p.add_argument("--quarantine-dir", type=Path, help=QUARANTINE_HELP)
    p.set_defaults(func=run_inspect)

    q = subparsers.add_parser("quarantined", help="list quarantined backups with their reasons")
    q.add_argument("--quarantine-dir", type=Path, help=QUARANTINE_HELP)
    q.set_defaults(func=run_quarantined)

    r = subparsers.add_parser(
        "requeue", help="move a quarantined backup back into the inbox to load it again"
    )
    r.add_argument("backup_id")
    r.add_argument("--quarantine-dir", type=Path, help=QUARANTINE_HELP)
    r.add_argument("--inbox-dir", type=Path, help=INBOX_HELP)
    r.set_defaults(func=run_requeue)


def run_inspect(args) -> int:
    from arb_pipeline.package.reader import read_manifest
    from arb_pipeline.package.verify import VerifyError, verify_files

    folder = _backup_folder(args)
    try:
        manifest = read_manifest(folder)  # a link, FIFO or huge file is refused, never waited on
    except FileNotFoundError:
        raise ConfigError(
            f"{folder} has no manifest.json: not a published backup (still uploading, or a wrong path)"
        ) from None
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False))
    else:
        print(
            f"{manifest.kind} backup {manifest.backup_id} from {manifest.sender_id} ({manifest.created_by})"
        )
        print(
            f"  partition {manifest.partition_key}: window {manifest.window_start} .. {manifest.window_end}"
            + (f", rows from {manifest.extract_from}" if manifest.extract_from else "")
        )
        print(f"  snapshot at {manifest.snapshot_time} (sender database clock)")
        for f in manifest.files:
            rows = f"{f.rows:>9} rows" if f.kind == "table" else f"{f.kind:>14}"
            print(f"  {rows}  {f.bytes:>12,} bytes  {f.name}")
        print(f"  media: {len(manifest.media)} file(s), {len(manifest.media_missing)} missing on the sender")
        for m in manifest.media_missing[:10]:
            print(f"    missing {m.name}: {m.reason}")
    if args.no_verify:
        return 0
    from arb_pipeline.progress import Progress

    try:
        verify_files(folder, progress=Progress())
    except VerifyError as exc:
        print(f"verification FAILED: {exc}")
        return 1
    print("verification OK: every size, sha256 and row count matches the manifest")
    return 0


def _inbox(args) -> Path:
    return args.inbox_dir or Path(INBOX_DIR.read())


def _quarantine(args) -> Path:
    return args.quarantine_dir or Path(QUARANTINE_DIR.read())


def _backup_folder(args) -> Path:
    """``backup_dir`` itself, or the folder of the backup id it names in the inbox or quarantine."""
    given = args.backup_dir
    if given.exists() or len(given.parts) > 1:
        return given
    for root in (_inbox(args), _quarantine(args)):
        for kind in ("partial", "complete"):
            if (root / kind / given.name).is_dir():
                return root / kind / given.name
    return given


def run_quarantined(args) -> int:
    from arb_pipeline.receive.quarantine import list_quarantined

    found = list_quarantined(_quarantine(args))
    for item in found:
        print(
            f"{item.kind}/{item.name}: {item.reason.splitlines()[0] if item.reason else '(no reason file)'}"
        )
    if not found:
        print("no quarantined backup")
    return 0


def run_requeue(args) -> int:
    from arb_pipeline.receive.quarantine import requeue

    path = requeue(_quarantine(args), args.backup_id, _inbox(args))
    print(f"requeued: {path} (the inbox sensor verifies and loads it on its next tick)")
    return 0
