"""The catalog is a TOML file (docs/catalog.md): the packaged one is TranSapp's, every mistake
in a file is an error naming its file and line and the fix, and ARB_CATALOG pointing at
another file changes what `arb` and both code locations see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from arb_pipeline.catalog import PACKAGED, current_catalog, load_catalog
from arb_pipeline.errors import ConfigError, SchemaError

REPO = Path(__file__).resolve().parents[1]
ARB = str(Path(sys.executable).with_name("arb"))

# What catalog.py's CATALOG tuple held before the file: (short name, cursor, media, excluded, policy).
TRANSAPP = [
    ("gtfs", None, None, (), "shipped-only"),
    ("busstop", None, None, (), "shipped-only"),
    ("service", None, None, (), "shipped-only"),
    ("servicesbybusstop", None, None, (), "shipped-only"),
    ("servicestopdistance", None, None, (), "shipped-only"),
    ("route", None, None, (), "shipped-only"),
    ("event", None, None, (), "shipped-only"),
    ("busv2", None, None, (), "shipped-only"),
    ("busassignment", None, None, (), "shipped-only"),
    ("eventforbusstop", "timeStamp", None, (), "shipped-only"),
    ("eventforbusv2", "timeStamp", None, (), "shipped-only"),
    ("stadisticdatafromregistrationbusstop", "timeStamp", None, (), "shipped-only"),
    ("stadisticdatafromregistrationbus", "timeStamp", None, (), "shipped-only"),
    ("report", "timeStamp", "imageName", (), "shipped-only"),
    ("token", None, None, (), "shipped-only"),
    ("poseintrajectoryoftoken", None, None, (), "shipped-only"),
    ("activetoken", None, None, (), "mirror"),
    ("devicepositionintime", None, None, (), "shipped-only"),
    ("nearbybuseslog", None, None, (), "shipped-only"),
    ("level", None, None, (), "shipped-only"),
    ("transappuser", None, None, ("email", "sessionToken"), "shipped-only"),
    ("scoreevent", None, None, (), "shipped-only"),
    ("scorehistory", None, None, (), "shipped-only"),
]

# A small app that is not TranSapp: no bootstrap schema, no postprocessing.
SHOP = """\
[app]
name = "shop"
table_prefix = "shop_"

[[table]]
name = "shop_customer"
excluded = ["email"]

[[table]]
name = "shop_order"
cursor = "created"

[[table]]
name = "shop_photo"
cursor = "taken"
media_column = "file"
delete_policy = "mirror"
"""


def _write(tmp_path: Path, text: str, name: str = "catalog.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_packaged_catalog_is_transapps_tables_as_they_travelled_before():
    catalog = load_catalog(PACKAGED)
    assert (catalog.name, catalog.prefix) == ("transapp", "AndroidRequests_")
    assert (catalog.bootstrap_schema, catalog.postprocess) == ("transapp", "transapp")
    got = [
        (catalog.short_name(s.name), s.cursor, s.media_column, s.excluded, s.delete_policy)
        for s in catalog.specs
    ]
    assert got == TRANSAPP
    assert catalog.table_names == tuple("AndroidRequests_" + t[0] for t in TRANSAPP)
    assert catalog.partial_tables == tuple("AndroidRequests_" + t[0] for t in TRANSAPP if t[1])
    assert catalog.complete_tables == catalog.table_names
    assert catalog.mirrored == frozenset({"AndroidRequests_activetoken"})
    assert catalog.tables_of("partial") == catalog.partial_tables
    assert catalog.tables_of("complete") == catalog.table_names
    assert catalog.spec("AndroidRequests_report").media_column == "imageName"


def test_a_table_not_in_the_catalog_is_an_error_naming_the_file(tmp_path):
    catalog = load_catalog(_write(tmp_path, SHOP))
    with pytest.raises(
        SchemaError, match=f"table shop_invoice is not in the catalog {tmp_path}/catalog.toml"
    ):
        catalog.spec("shop_invoice")


def test_current_catalog_follows_the_setting_and_edits_of_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ARB_CATALOG", raising=False)
    assert current_catalog().path == PACKAGED.resolve()
    path = _write(tmp_path, SHOP)
    monkeypatch.setenv("ARB_CATALOG", str(path))
    first = current_catalog()
    assert first.name == "shop" and first.partial_tables == ("shop_order", "shop_photo")
    assert current_catalog() is first  # unchanged file: read once
    path.write_text(SHOP.replace('cursor = "created"\n', ""))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    assert current_catalog().partial_tables == ("shop_photo",)


# (what is wrong, the file's text, the line the error names, words of the message)
MISTAKES = [
    ("toml syntax", '[app]\nname = "shop\n', 2, "not valid TOML"),
    ("typo in a key", SHOP.replace('cursor = "created"', 'cursr = "created"'), 11, "did you mean 'cursor'?"),
    (
        "a string for a list",
        SHOP.replace('["email"]', '"email"'),
        7,
        "excluded in [[table]] #1 (shop_customer) is 'email'",
    ),
    ("a number for a string", SHOP.replace('"created"', "5"), 11, "cursor in [[table]] #2 (shop_order) is 5"),
    (
        "a table listed twice",
        SHOP + '\n[[table]]\nname = "shop_order"\n',
        20,
        "listed twice (first at line 10)",
    ),
    ("no table", '# nothing yet\n[app]\nname = "shop"\ntable_prefix = "shop_"\n', 2, "lists no table"),
    ("a name without the prefix", SHOP.replace('"shop_order"', '"orders"'), 10, "table_prefix 'shop_'"),
    (
        "a bad delete_policy",
        SHOP.replace('"mirror"', '"truncate"'),
        17,
        "use one of 'shipped-only', 'mirror'",
    ),
    (
        "an unknown bootstrap_schema",
        SHOP.replace('"shop_"\n', '"shop_"\nbootstrap_schema = "shop"\n'),
        4,
        "bootstrap_schema 'shop'",
    ),
    (
        "an unknown postprocess",
        SHOP.replace('"shop_"\n', '"shop_"\n\npostprocess = "x"\n'),
        5,
        "postprocess 'x'",
    ),
    (
        "a section misspelt",
        SHOP.replace('[[table]]\nname = "shop_photo"', '[[tables]]\nname = "shop_photo"'),
        13,
        "did you mean 'table'?",
    ),
    ("a table without a name", SHOP.replace('name = "shop_order"\n', ""), 9, "[[table]] #2 has no name"),
    ("no [app]", '[[table]]\nname = "t"\n', 1, "no [app] section"),
    (
        "a table named like the media asset",
        SHOP.replace('"shop_order"', '"shop_media"'),
        10,
        "'media', which the media bundle",
    ),
    (
        "a name Dagster refuses",
        SHOP.replace('"shop_order"', '"shop_order-2"'),
        10,
        "'order-2', which Dagster refuses",
    ),
    ("an empty cursor", SHOP.replace('"taken"', '""'), 15, "cursor in [[table]] #3 (shop_photo) is empty"),
]


@pytest.mark.parametrize(("text", "line", "words"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_mistake_names_the_file_the_line_and_the_fix(tmp_path, text, line, words):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert words in message
    assert "; " in message.removeprefix(f"{path}:{line}: ")  # what is wrong; the fix


def _run(args: list[str], catalog: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ARB_CATALOG"}
    env.update(ARB_SENDER_DSN="host=127.0.0.1 dbname=x", ARB_RECEIVER_DSN="host=127.0.0.1 dbname=y")
    if catalog is not None:
        env["ARB_CATALOG"] = str(catalog)
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


_DEFINITIONS = """\
import json
from arb_pipeline.receiver.definitions import defs as receiver
from arb_pipeline.sender.definitions import defs as sender
print(json.dumps({
    side: {
        "assets": sorted("/".join(k.path) for k in d.resolve_asset_graph().get_all_asset_keys()),
        "jobs": sorted(j.name for j in d.resolve_all_job_defs()),
        "sensors": sorted(s.name for s in d.get_repository_def().sensor_defs),
    }
    for side, d in (("sender", sender), ("receiver", receiver))
}))
"""


def test_another_catalog_file_changes_what_both_code_locations_define(tmp_path):
    done = _run([sys.executable, "-c", _DEFINITIONS], _write(tmp_path, SHOP))
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)
    assert [a for a in seen["sender"]["assets"] if a.startswith("sender/partial/")] == [
        "sender/partial/backup",
        "sender/partial/media",
        "sender/partial/order",
        "sender/partial/photo",
    ]
    tables = [a for a in seen["receiver"]["assets"] if a.startswith("receiver/complete/")]
    assert tables == [
        "receiver/complete/customer",
        "receiver/complete/media",
        "receiver/complete/order",
        "receiver/complete/photo",
    ]
    # No TranSapp derivations for an app that does not ask for them.
    assert not [a for a in seen["receiver"]["assets"] if a.startswith("receiver/postprocess/")]
    assert "postprocess_job" not in seen["receiver"]["jobs"]
    assert "postprocess_sensor" not in seen["receiver"]["sensors"]
    assert "inbox_sensor" in seen["receiver"]["sensors"]

    packaged = json.loads(_run([sys.executable, "-c", _DEFINITIONS], None).stdout)
    assert "receiver/postprocess/bus_plates" in packaged["receiver"]["assets"]
    assert "postprocess_sensor" in packaged["receiver"]["sensors"]
    assert "receiver/partial/eventforbusv2" in packaged["receiver"]["assets"]


def test_arb_catalog_shows_the_file_of_the_setting_and_refuses_a_bad_one(tmp_path):
    shop = _write(tmp_path, SHOP)
    done = _run([ARB, "catalog"], shop)
    assert done.returncode == 0, done.stderr
    assert f"catalog {shop}: app shop, table prefix 'shop_', 3 tables (2 in partials)" in done.stdout
    assert "  customer: completes only; never ships email; deletes: shipped-only" in done.stdout
    assert "  photo: partials by taken; media in file; deletes: mirror" in done.stdout

    bad = _write(tmp_path, SHOP.replace('cursor = "taken"', 'cursr = "taken"'), "bad.toml")
    for args, catalog in (([ARB, "catalog"], bad), ([ARB, "catalog", "--file", str(bad)], None)):
        done = _run(args, catalog)
        assert done.returncode == 2
        assert (
            f"{bad}:15: unknown key 'cursr' in [[table]] #3 (shop_photo); did you mean 'cursor'?"
            in done.stderr
        )

    # A bad file stops a code location at load, with the same message.
    done = _run([sys.executable, "-c", _DEFINITIONS], bad)
    assert done.returncode != 0 and f"{bad}:15: unknown key 'cursr'" in done.stderr

    done = _run([ARB, "catalog"], tmp_path / "missing.toml")
    assert done.returncode == 2 and "ARB_CATALOG=" in done.stderr and "is not a file" in done.stderr
    # arb check reports the setting among the others (both servers read it).
    done = _run([ARB, "check"], tmp_path / "missing.toml")
    assert done.returncode == 1
    assert "FAIL  ARB_CATALOG" in done.stdout and "is not a file" in done.stdout, done.stdout
