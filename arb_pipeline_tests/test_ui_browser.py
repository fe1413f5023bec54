"""The demo's Dagster UI in a real headless browser: Debian's chromium driven by Playwright.

Playwright's own browser builds are not used (``executable_path``), so the only browser
needed is the ``chromium`` package (scripts/test.sh installs it as root). Without it these
tests skip, except in CI (or with ARB_REQUIRE_SSHD) where they fail. Screenshots go to
test-artifacts/screenshots/. Assertions are on the pages' text and DOM.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.demo import REPO
from arb_pipeline_tests.support.services import services_required

pytestmark = [pytest.mark.demo, pytest.mark.timeout(900)]

SHOTS = REPO / "test-artifacts" / "screenshots"
LOADED_ASSET = "receiver/partial/eventforbusv2"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of Debian's chromium, checked before the demo starts."""
    path = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium",) if Path(p).exists()), None)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path, why = None, "the playwright package is missing: run scripts/setup.sh"
    else:
        why = "chromium is not installed: `apt-get install chromium` (scripts/test.sh does it as root)"
    if path is None:
        if services_required():
            pytest.fail(f"the browser tests are required here (CI / ARB_REQUIRE_SSHD): {why}")
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def browser_page(chromium, demo):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def visit(page, url: str, ready_text: str) -> None:
    """Open ``url`` and wait until ``ready_text`` shows; close the newsletter dialog a fresh
    browser gets, which would hide the page in screenshots."""
    page.goto(url)
    page.get_by_text(ready_text, exact=True).first.wait_for()
    skip = page.get_by_role("button", name="Skip")
    if skip.count() and skip.first.is_visible():
        skip.first.click()
        skip.first.wait_for(state="hidden")


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_asset_graph_shows_sender_and_receiver_assets(browser_page, demo):
    page = browser_page
    # The lineage of a receiver load asset: the sender asset it comes from, the postprocess
    # assets it feeds, each inside its group.
    visit(page, f"{demo.url}/assets/{LOADED_ASSET}?view=lineage", "sender_partial")
    # Node links name full asset keys; they render once the nodes' live data has arrived.
    page.locator("a[href^='/assets/sender/partial/eventforbusv2']").first.wait_for()
    page.locator("a[href^='/assets/receiver/postprocess/']").first.wait_for()
    links = set(
        page.eval_on_selector_all("a[href^='/assets/']", "els => els.map(e => e.getAttribute('href'))")
    )
    shot(page, "asset-lineage")
    assert "/assets/sender/partial/eventforbusv2?view=partitions" in links, sorted(links)
    assert any(link.startswith("/assets/receiver/postprocess/") for link in links), sorted(links)
    groups = page.eval_on_selector_all("foreignObject", "els => els.map(e => (e.textContent || '').trim())")
    for group in ("sender_partial", "receiver_partial", "receiver_postprocess"):
        assert group in groups, groups

    # The global lineage: every group of both code locations, with their assets' statuses.
    visit(page, f"{demo.url}/asset-groups", "Global asset lineage")
    page.locator("foreignObject", has_text="receiver_postprocess").first.wait_for()
    page.wait_for_function("() => !document.body.innerText.includes('fetching statuses')")
    graph = " ".join(page.eval_on_selector_all("foreignObject", "els => els.map(e => e.textContent || '')"))
    shot(page, "global-lineage")
    for group in (
        "sender_partial",
        "sender_complete",
        "receiver_partial",
        "receiver_complete",
        "receiver_postprocess",
    ):
        assert group in graph, graph[:2000]

    # The catalog, folder by folder: asset names with their code location and group.
    for folder, location, group, names in (
        ("sender/partial", "sender", "sender_partial", ("eventforbusv2", "report", "backup")),
        ("receiver/partial", "receiver", "receiver_partial", ("eventforbusv2", "report", "media")),
        ("receiver/postprocess", "receiver", "receiver_postprocess", ("zones", "event_periods")),
    ):
        visit(page, f"{demo.url}/assets/{folder}?view=folder", group)
        text = page.inner_text("body")
        shot(page, "catalog-" + folder.replace("/", "-"))
        for name in (location, *names):
            assert re.search(rf"(?m)^{name}$", text), f"{name} not listed under {folder}: {text[:1500]}"


def test_a_loaded_partition_is_green(browser_page, demo):
    page = browser_page
    with connect(demo.dsn("receiver"), autocommit=True) as conn:
        loaded = [
            r[0]
            for r in conn.execute(
                "SELECT partition_key FROM arb_loaded_backup WHERE kind = 'partial' AND outcome = 'loaded' "
                "ORDER BY partition_key DESC"
            ).fetchall()
        ]
    assert loaded
    key = loaded[0]
    visit(page, f"{demo.url}/assets/{LOADED_ASSET}?view=partitions", key)
    row = page.locator(f"[data-tooltip='{key}']").first  # the key's row in the partition list
    row.wait_for()
    # The status dot beside the partition key: Dagster colours it with --color-accent-green
    # when the partition is materialized.
    dot = row.evaluate("""e => {
        const row = e.parentElement;
        const dot = Array.from(row.querySelectorAll('div')).find(d => d.style.borderRadius === '100%');
        return dot ? {style: dot.getAttribute('style'), color: getComputedStyle(dot).backgroundColor} : null;
    }""")
    counts = page.inner_text("body")
    shot(page, "loaded-partitions")
    assert dot is not None, "no status dot beside the partition key"
    assert "--color-accent-green" in dot["style"], dot
    red, green, blue = (int(v) for v in re.findall(r"\d+", dot["color"])[:3])
    assert green > red and green > blue, dot
    materialized = re.search(r"Materialized \((\d[\d,]*)\)", counts)
    assert materialized and int(materialized.group(1).replace(",", "")) >= 1, counts[:2000]


def test_freshness_state_is_visible(browser_page, demo):
    """The loaded asset's FreshnessPolicy state, evaluated by the daemon, on its page."""
    page = browser_page
    state = None
    deadline = time.monotonic() + 180
    while state != "Passing" and time.monotonic() < deadline:
        visit(page, f"{demo.url}/assets/{LOADED_ASSET}", "Freshness policy")
        page.wait_for_timeout(2000)  # the state arrives with the asset's live data
        found = re.search(r"Freshness policy\s+(\w+)", page.inner_text("body"))
        state = found.group(1) if found else None
    shot(page, "asset-freshness")
    assert state == "Passing", f"freshness shown as {state!r}"
