"""``arb zones import PATH``: load a zoning shapefile into the receiver's zones (ops/zoning.py).

Idempotent: the same file again changes nothing; another zoning replaces the zones, and
postprocessing recomputes every row's zone. Through $ARB_RECEIVER_DSN or --dsn.
"""

from __future__ import annotations

from pathlib import Path

from arb_pipeline.errors import ConfigError
from arb_pipeline.settings import RECEIVER_DSN


def register(subparsers) -> None:
    p = subparsers.add_parser("zones", help="the receiver's zoning (TranSappViz's zonificationtransantiago)")
    sub = p.add_subparsers(dest="zones_command", required=True, metavar="ACTION")
    i = sub.add_parser(
        "import",
        help="load a zoning shapefile (e.g. the EOD 2012 one) into the receiver, replacing its zones",
        description="Read the shapefile with PostGIS's shp2pgsql and make the receiver's zones equal to "
        "its zones (by the shapefile's `id`), in one transaction. Importing the same file again changes "
        "nothing. The file needs TranSappViz's attributes: id, area, zona, com, comuna, cartodb_id, "
        "created_at, updated_at, comunidad_.",
    )
    i.add_argument("path", type=Path, help="the .shp file (its .shx and .dbf beside it)")
    i.add_argument("--dsn", help="receiver libpq connection string (default: $ARB_RECEIVER_DSN)")
    i.add_argument(
        "--srid",
        type=int,
        default=4326,
        help="the SRID of the shapefile's coordinates, when not WGS 84 (they are reprojected to 4326)",
    )
    i.set_defaults(func=run_import)


def run_import(args) -> int:
    from arb_pipeline.ops.zoning import import_zoning

    dsn = args.dsn or RECEIVER_DSN.read()
    if not dsn:
        raise ConfigError("no receiver database given: pass --dsn or set ARB_RECEIVER_DSN")
    done = import_zoning(dsn, args.path, args.srid)
    summary = (
        f"{done.inserted} added, {done.updated} changed, {done.deleted} removed"
        + (f" ({done.references_cleared} event/report zone(s) cleared)" if done.references_cleared else "")
        if done.changed
        else "unchanged"
    )
    print(f"zones: {done.zones} zone(s) from {args.path}: {summary}")
    return 0
