"""Browser tests: Playwright driving Debian's Chromium (/usr/bin/chromium, installed by `make test`;
never `playwright install`) against pytest-django's live server on the test database.

Fixtures for any admin page: `browser` (one headless Chromium per session), `page` (a fresh context on
the live server that refuses every request to another host and records it in `page.outside_requests`),
`operator` (a superuser) and `logged_in` (a page logged in as the operator), `screenshots` (where
screenshots go: LLMLOG_SCREENSHOT_DIR, e.g. docs/, or the test's tmp_path).
"""

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User

# Sync Playwright runs an event loop in this thread; Django's ORM then refuses to run here unless told
# that this process knows what it does (the test code and the live server never share a connection).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = Path(os.environ.get("LLMLOG_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
OPERATOR = ("operator", "operator-pass-42")
TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server) -> Iterator:
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1600, "height": 1000}, accept_downloads=True
    )
    own_host = urlsplit(live_server.url).netloc
    outside: list[str] = []

    def only_our_server(route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == own_host or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", only_our_server)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.outside_requests = outside
    yield page
    context.close()


@pytest.fixture
def operator(transactional_db) -> User:
    return User.objects.create_superuser(OPERATOR[0], "operator@example.com", OPERATOR[1])


@pytest.fixture
def logged_in(page, operator):
    page.goto("/admin/login/")
    page.fill("#id_username", OPERATOR[0])
    page.fill("#id_password", OPERATOR[1])
    with page.expect_navigation():
        page.click("input[type=submit]")
    assert page.locator("#user-tools").is_visible(), "login failed"
    return page


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("LLMLOG_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
