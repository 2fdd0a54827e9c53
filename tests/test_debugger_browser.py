"""The debugger page in a real headless Chromium: events sent through a real Client to a real
collector appear without a reload, newest first; the filters hide the others; a click shows
the message's JSON; counts, duplicates and injected faults are shown; thousands of events
leave the table bounded; and the page fetches nothing but its own origin.

Skipped, with the reason, only where no Chromium is installed (``apt-get install chromium``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest
import requests
from browser_helpers import find_chromium, launch

from durable_analytics import Client
from durable_analytics.testing import Collector, Response

TIMEOUT_MS = 20_000  # generous: the machine is shared; nothing here measures speed
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium installed (apt-get install chromium, or set $CHROMIUM): "
    "the debugger page's browser tests need one",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # the test extra installs it

    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        chromium = launch(playwright, CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    """The conftest's collector, with its page: ``make_client`` sends here."""
    with Collector(debugger=True) as c:
        yield c


@pytest.fixture
def page(browser: Any, collector: Collector) -> Iterator[Any]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    fetched: list[str] = []
    problems: list[str] = []
    tab.on("request", lambda request: fetched.append(request.url))
    tab.on("pageerror", lambda error: problems.append(str(error)))
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tab.goto(collector.url + "/")
    try:
        yield tab
    finally:
        context.close()
    assert problems == []
    assert fetched and all(url.startswith(collector.url + "/") for url in fetched), fetched


def rows(page: Any) -> Any:
    return page.locator("#events tbody tr")


def send_some(make_client: Callable[..., Client]) -> dict[str, str]:
    client = make_client()
    ids = {
        "identify": client.identify(user_id="42", traits={"plan": "pro"}).message_id,
        "signed up": client.track(
            user_id="42", event="Signed Up", properties={"plan": "pro"}
        ).message_id,
        "pricing": client.page(anonymous_id="anon-7", name="Pricing").message_id,
        "order": client.track(
            user_id="7", event="Order Completed", properties={"total": 30}
        ).message_id,
    }
    assert client.flush(10)
    return {k: str(v) for k, v in ids.items()}


def test_events_appear_newest_first_and_filters_hide_the_others(
    page: Any, collector: Collector, make_client: Callable[..., Client]
) -> None:
    from playwright.sync_api import expect

    ids = send_some(make_client)
    expect(rows(page)).to_have_count(4)
    expect(rows(page).nth(0)).to_contain_text("Order Completed")
    expect(rows(page).nth(3)).to_contain_text("identify")
    first = rows(page).nth(0).locator("td")
    assert [first.nth(i).inner_text() for i in (1, 2, 3, 5)] == [
        "track", "Order Completed", "7", ids["order"],
    ]  # fmt: skip
    expect(rows(page).nth(1)).to_contain_text("anon anon-7")
    expect(page.locator("#count-events")).to_have_text("4")
    expect(page.locator("#count-distinct")).to_have_text("4")
    expect(page.locator("#faults")).to_have_text("no faults injected")

    page.select_option("#filter-type", "track")
    expect(rows(page)).to_have_count(2)
    for n in range(2):
        expect(rows(page).nth(n).locator("td").nth(1)).to_have_text("track")
    page.fill("#filter-event", "signed")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).nth(0)).to_contain_text(ids["signed up"])
    page.select_option("#filter-type", "")
    page.fill("#filter-event", "")
    page.fill("#filter-user", "anon-7")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).nth(0)).to_contain_text("Pricing")

    # A new event arrives while filtered: it shows only if it matches; no reload anywhere.
    client = make_client()
    later = client.track(anonymous_id="anon-7", event="Clicked Buy").message_id
    hidden = client.track(user_id="someone-else", event="Clicked Buy").message_id
    assert client.flush(10)
    expect(rows(page)).to_have_count(2)
    expect(rows(page).nth(0)).to_contain_text(str(later))
    expect(page.locator("#events")).not_to_contain_text(str(hidden))
    page.fill("#filter-user", "")
    expect(rows(page)).to_have_count(6)
    expect(page.locator("#count-events")).to_have_text("6")


def test_a_click_shows_the_full_json_with_the_message_id(
    page: Any, make_client: Callable[..., Client]
) -> None:
    from playwright.sync_api import expect

    ids = send_some(make_client)
    expect(rows(page)).to_have_count(4)
    expect(page.locator("#detail")).to_be_hidden()
    rows(page).filter(has_text="Signed Up").click()
    expect(page.locator("#detail")).to_be_visible()
    shown = page.locator("#json").inner_text()
    assert f'"messageId": "{ids["signed up"]}"' in shown
    assert '"event": "Signed Up"' in shown and '"plan": "pro"' in shown
    expect(page.locator("#detail-title")).to_have_text(f"track {ids['signed up']}")
    page.click("#detail-close")
    expect(page.locator("#detail")).to_be_hidden()


def test_duplicates_rejections_and_injected_faults_are_shown(
    page: Any, collector: Collector, make_client: Callable[..., Client]
) -> None:
    from playwright.sync_api import expect

    collector.respond_with(Response(503, retry_after="0"))
    client = make_client()
    client.track(user_id="u1", event="Retried")
    assert client.flush(10)
    expect(rows(page)).to_have_count(1)
    expect(page.locator("#faults")).to_contain_text("injected: 503 Retry-After: 0 ×1")
    expect(page.locator("#count-rejected")).to_have_text("1")
    expect(page.locator("#count-requests")).to_have_text("2")

    again = {"type": "track", "messageId": "same-id", "userId": "u2", "event": "Twice"}
    with requests.Session() as session:
        session.trust_env = False
        for _ in range(2):
            reply = session.post(
                collector.url + "/v1/batch", json={"batch": [again]}, auth=("k", ""), timeout=5
            )
            assert reply.status_code == 200
    expect(rows(page)).to_have_count(3)
    expect(rows(page).nth(0).locator(".dup")).to_have_text("duplicate")
    expect(rows(page).nth(1).locator(".dup")).to_have_count(0)
    expect(page.locator("#count-duplicates")).to_have_text("1")


def test_thousands_of_events_leave_the_table_bounded(
    page: Any, make_client: Callable[..., Client]
) -> None:
    from playwright.sync_api import expect

    client = make_client(flush_at=500)
    last = None
    for n in range(3000):
        last = client.track(
            user_id=f"user-{n % 50}", event=f"Bulk {n}", properties={"n": n}
        ).message_id
        if n % 400 == 399:  # the page receives them over several polls, not all at once
            assert client.flush(30)
            expect(page.locator("#count-events")).to_have_text(f"{n + 1:,}")
    assert client.flush(30)
    expect(page.locator("#count-events")).to_have_text("3,000")
    expect(rows(page).nth(0)).to_contain_text(str(last))
    assert rows(page).count() == 500
    expect(page.locator("#shown")).to_contain_text("(newest 500 shown)")
    page.select_option("#filter-type", "track")  # every one: redrawn, and bounded again
    assert rows(page).count() == 500
    page.fill("#filter-user", "user-49")
    expect(rows(page).nth(0)).to_contain_text("Bulk 2999")
    expect(rows(page).nth(1)).to_contain_text("Bulk 2949")  # the filter has applied
    assert 0 < rows(page).count() <= 500
    for text in rows(page).locator("td:nth-child(4)").all_inner_texts():
        assert text == "user-49"


def test_a_narrow_window_keeps_the_page_within_it(
    browser: Any, collector: Collector, make_client: Callable[..., Client]
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 700, "height": 700})
    try:
        tab = context.new_page()
        tab.goto(collector.url + "/")
        ids = send_some(make_client)
        expect(rows(tab)).to_have_count(4)
        assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        rows(tab).filter(has_text="Pricing").click()
        expect(tab.locator("#json")).to_contain_text(ids["pricing"])
        expect(tab.locator("#detail")).to_be_in_viewport()
        assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        context.close()
