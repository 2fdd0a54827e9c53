"""The Django app and middleware through Django's test client, against the collector:
settings applied in ``ready()``, request context and the logged-in user in each message, the
async stack, and pre-fork safety (nothing opened in the parent, each forked child delivers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

import durable_analytics  # noqa: E402
from durable_analytics.testing import Collector  # noqa: E402


def buy(request: Any) -> HttpResponse:
    return HttpResponse(durable_analytics.track(None, "Bought", anonymous_id="anon").message_id)


async def async_buy(request: Any) -> HttpResponse:
    return HttpResponse(
        durable_analytics.track(None, "Bought Async", anonymous_id="anon").message_id
    )


urlpatterns = [path("buy", buy), path("abuy", async_buy)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """A configured Django project (once per process, as Django allows)."""
    if settings.configured:
        pytest.skip("Django settings were configured elsewhere in this process")
    saved = {name: getattr(durable_analytics, name) for name in durable_analytics.SETTINGS}
    queue = tmp_path_factory.mktemp("django") / "queue.sqlite3"
    with Collector() as collector:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only",
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF=__name__,
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django.contrib.sessions",
                "durable_analytics.integrations.django",
            ],
            MIDDLEWARE=[
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "durable_analytics.integrations.django.AnalyticsMiddleware",
            ],
            DURABLE_ANALYTICS={
                "write_key": "django-key",
                "endpoint": collector.url,
                "queue_path": str(queue),
                "flush_interval": 0.05,
            },
        )
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        yield collector
        durable_analytics.shutdown(timeout=0)
        for name, value in saved.items():
            setattr(durable_analytics, name, value)


def by_id(collector: Collector) -> dict:
    return {m["messageId"]: m for m in collector.messages}


def test_ready_applies_settings_and_opens_nothing(site: Collector) -> None:
    """Pre-fork safety: after startup no client, no queue file, no thread exists yet."""
    assert durable_analytics.write_key == "django-key"
    assert durable_analytics.endpoint == site.url
    assert durable_analytics.default_client is None
    assert not Path(durable_analytics.queue_path).exists()


def test_a_bad_setting_stops_startup_and_changes_nothing(site: Collector) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from durable_analytics.integrations.django.apps import apply_settings

    with pytest.raises(ImproperlyConfigured, match="flush_at=0: use a positive integer"):
        apply_settings({"flush_at": 0})
    with pytest.raises(ImproperlyConfigured, match="unknown option"):
        apply_settings({"flush_every": 3})
    assert durable_analytics.flush_at == 20


def test_logged_in_user_and_request_context(site: Collector) -> None:
    from django.contrib.auth.models import User
    from django.test import Client as DjangoClient

    user = User.objects.create_user("ann", password="pw")
    browser = DjangoClient(HTTP_USER_AGENT="Browser/9", REMOTE_ADDR="198.51.100.4")
    anonymous = browser.get("/buy?item=3").content.decode()
    browser.force_login(user)
    logged_in = browser.get("/buy", HTTP_REFERER="https://ref.test/").content.decode()
    assert durable_analytics.flush()
    messages = by_id(site)
    assert "userId" not in messages[anonymous]
    assert messages[anonymous]["context"]["page"] == {
        "url": "http://testserver/buy?item=3",
        "path": "/buy",
        "search": "?item=3",
    }
    message = messages[logged_in]
    assert message["userId"] == str(user.pk)
    assert message["context"]["ip"] == "198.51.100.4"
    assert message["context"]["userAgent"] == "Browser/9"
    assert message["context"]["page"]["referrer"] == "https://ref.test/"


def test_async_stack(site: Collector) -> None:
    import asyncio

    from django.test import AsyncClient

    async def run() -> str:
        response = await AsyncClient().get("/abuy", headers={"user-agent": "Async/1"})
        return response.content.decode()

    message_id = asyncio.run(run())
    assert durable_analytics.flush()
    message = by_id(site)[message_id]
    assert message["context"]["userAgent"] == "Async/1"
    assert message["context"]["page"]["path"] == "/abuy"


def test_forked_workers_each_deliver(site: Collector) -> None:
    """As under ``gunicorn --preload``: the parent already recorded (it has a client with a
    thread), then forks; each child serves a request and delivers from its own process."""
    from django.test import Client as DjangoClient

    before = durable_analytics.track("parent", "Before Fork").message_id
    children = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                DjangoClient(HTTP_USER_AGENT=f"child-{n}").get("/buy")
                code = 0 if durable_analytics.flush(timeout=10) else 2
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert codes == [0, 0]
    assert durable_analytics.flush()
    agents = {m["context"].get("userAgent") for m in site.messages}
    assert {"child-0", "child-1"} <= agents
    assert before in by_id(site)
