"""Browser tests: Playwright for Python driving Debian's chromium, headless, against the
``cinema up`` of tests/e2e/conftest.py (one per session, shared with the other e2e tests).

Playwright cannot download its own browser here, so it is given the system's chromium
(``scripts/ensure-chromium`` installs it; ``CINEMA_CHROMIUM`` points elsewhere). One
browser for the session, a fresh context (empty sessionStorage: nobody signed in, an
empty basket) and page per test. A failing test leaves a screenshot and the page's
console in a directory under pytest's temporary path, named in the failure report.
Each test also fails on a JavaScript error or a Content-Security-Policy violation, which
would otherwise only show in a console nobody reads.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, RunningSystem

DEBIAN_CHROMIUM = "/usr/bin/chromium"
#: How long one step may wait for the page (the default 30 s hides a hang for too long).
STEP_TIMEOUT_MS = 10_000
_CSP_VIOLATION = re.compile(r"Content Security Policy|Refused to (execute|load|apply)", re.I)


def chromium_path() -> str:
    """The chromium binary to drive: fail, not skip, when there is none."""
    configured = os.environ.get("CINEMA_CHROMIUM")
    candidates = [configured] if configured else [DEBIAN_CHROMIUM, shutil.which("chromium")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "no chromium for the browser tests: run scripts/ensure-chromium (as root it installs "
        "Debian's chromium), or set CINEMA_CHROMIUM to a chromium binary",
        pytrace=False,
    )


# Package scope, not session: Playwright's sync API keeps an event loop running in the
# main thread while it is open, and every later test that calls asyncio.run would fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        # --no-sandbox: Debian's chromium refuses to start as root with its sandbox, and
        # CI runs as root. The pages it opens are our own.
        launched = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def base_url(system: RunningSystem) -> str:
    return f"http://{system.address}"


@dataclass
class PageLog:
    """What a page said that a person would not see."""

    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def record_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    def record_error(self, error: Error) -> None:
        self.errors.append(str(error))

    def violations(self) -> list[str]:
        """JavaScript errors and CSP refusals (failed API calls are expected, not these)."""
        return [*self.errors, *(line for line in self.console if _CSP_VIOLATION.search(line))]


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def page(
    browser: Browser, base_url: str, page_log: PageLog, artifacts_dir: pathlib.Path
) -> Iterator[Page]:
    # en-US so prices read "$9.99" whatever the machine's locale.
    context = browser.new_context(base_url=base_url, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(STEP_TIMEOUT_MS)
    opened = context.new_page()
    opened.on("console", page_log.record_console)
    opened.on("pageerror", page_log.record_error)
    try:
        yield opened
        assert page_log.violations() == [], "the page logged errors or CSP violations"
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("browser-artifacts", numbered=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """On a failure, save a screenshot and the console of the test's page, and say where."""
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    opened = funcargs.get("page")
    if report.when not in ("call", "teardown") or not report.failed or opened is None:
        return
    directory = funcargs["artifacts_dir"]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)
    lines = []
    try:
        if not opened.is_closed():
            screenshot = directory / f"{name}.png"
            opened.screenshot(path=str(screenshot), full_page=True)
            lines.append(f"screenshot: {screenshot} (page {opened.url})")
    except Error as error:
        lines.append(f"no screenshot: {error}")
    log = funcargs.get("page_log")
    if isinstance(log, PageLog):
        console = directory / f"{name}.console.txt"
        console.write_text("\n".join([*log.console, *log.errors]) + "\n")
        lines.append(f"console: {console}")
    report.sections.append(("browser artifacts", "\n".join(lines)))
    print("\nbrowser artifacts:\n  " + "\n  ".join(lines))


def log_in(page: Page, email: str, password: str, *, next_path: str = "/") -> None:
    """Log in through the login page and wait until the header says so."""
    page.goto(f"/login?next={next_path}")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.locator("#signed-in-as").wait_for()


def log_in_as_admin(page: Page) -> None:
    log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
