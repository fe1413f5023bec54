"""``arb catalog``: check a catalog file and show what it ships, table by table
(docs/catalog.md). Without --file, the one ARB_CATALOG names (default: the packaged one),
which is what the code locations load."""

from __future__ import annotations

from arb_pipeline.catalog import Catalog, current_catalog, load_catalog


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "catalog",
        help="check the catalog file and list how each table travels",
        description="Read and check the catalog file (errors name the file, line and fix), then list "
        "each table: in partials by which cursor or in completes only, its media column, the columns "
        "that never leave the sender, what a complete deletes.",
    )
    p.add_argument("--file", metavar="PATH", help="a catalog file to check (default: $ARB_CATALOG)")
    p.set_defaults(func=run)


def describe(catalog: Catalog) -> list[str]:
    lines = [
        f"catalog {catalog.path}: app {catalog.name}, table prefix {catalog.prefix!r}, "
        f"{len(catalog.specs)} tables ({len(catalog.partial_tables)} in partials)",
        f"bootstrap schema: {catalog.bootstrap_schema or '-'}; postprocess: {catalog.postprocess or '-'}",
    ]
    for s in catalog.specs:
        how = [f"partials by {s.cursor}" if s.cursor else "completes only"]
        if s.media_column:
            how.append(f"media in {s.media_column}")
        if s.excluded:
            how.append(f"never ships {', '.join(s.excluded)}")
        how.append(f"deletes: {s.delete_policy}")
        lines.append(f"  {catalog.short_name(s.name)}: {'; '.join(how)}")
    return lines


def run(args) -> int:
    catalog = load_catalog(args.file) if args.file else current_catalog()
    print("\n".join(describe(catalog)))
    return 0
