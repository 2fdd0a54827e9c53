"""Make docs/images/debugger.png: the debugger page of a loopback collector that received a
few events through a real Client (the first upload refused with an injected 503), with one
event opened, in the system's headless Chromium.

    python tools/debugger_screenshot.py [--out docs/images/debugger.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser_helpers import find_chromium, launch  # noqa: E402

from durable_analytics import Client, RetryPolicy  # noqa: E402
from durable_analytics.testing import Collector, Response  # noqa: E402


def record(client: Client) -> None:
    client.identify(user_id="42", traits={"name": "Ada Lovelace", "plan": "pro"})
    client.page(anonymous_id="a1b2c3", name="Pricing", properties={"path": "/pricing"})
    client.track(user_id="42", event="Signed Up", properties={"plan": "pro", "trial": True})
    client.group(user_id="42", group_id="acme", traits={"seats": 20})
    client.track(user_id="42", event="Backup Finished", properties={"gigabytes": 12})
    client.screen(anonymous_id="d4e5f6", name="Settings")
    client.track(user_id="7", event="Order Completed", properties={"total": 30, "currency": "EUR"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "debugger.png")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        sys.exit("no Chromium installed: apt-get install chromium (or set $CHROMIUM)")
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as workdir, Collector(debugger=True) as collector:
        collector.respond_with(Response(503, retry_after="0"))
        client = Client(
            "screenshot-key",
            endpoint=collector.url,
            queue_path=Path(workdir) / "queue.sqlite3",
            flush_interval=0.05,
            retry_policy=RetryPolicy(initial=0.01, maximum=0.05),
        )
        try:
            with sync_playwright() as playwright:
                browser = launch(playwright, chromium)
                page = browser.new_page(viewport={"width": 1280, "height": 640})
                page.goto(collector.url + "/")
                record(client)
                assert client.flush(10)
                rows = page.locator("#events tbody tr")
                expect(rows).to_have_count(7, timeout=20_000)
                rows.filter(has_text="Signed Up").click()
                expect(page.locator("#detail")).to_be_visible()
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            client.shutdown(timeout=0)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
