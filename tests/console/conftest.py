"""Browser tests of the ops console: headless Chromium (Debian's `chromium` package)
driven by Playwright, against the app served by uvicorn in the tests' own event loop
(so it shares the session's database and Redis connections)."""

from __future__ import annotations

import asyncio
import io
import secrets
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct-horse-battery"


def png_bytes(color: tuple[int, int, int] = (200, 80, 40), size: int = 320) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="session")
async def base_url(app: Any) -> AsyncIterator[str]:
    """The app on 127.0.0.1 at a free port, served in this event loop."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture(scope="session")
async def browser_context() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium); .ci/run installs it")
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="mall-chromium-")
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
        )
        # a cold CI machine's first page (Chromium, every module) can take seconds
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)


class Console:
    """One browser tab on the console, with what the page logged."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        # a 4xx answer the page handles is logged by Chromium as a failed resource load
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(f"console: {message.text}")

    def _response(self, response: Any) -> None:
        # Chromium's log names no status; a 5xx is never an answer a page should get
        if response.status >= 500:
            self.errors.append(
                f"response: {response.status} {response.request.method} {response.url}"
            )

    async def open(self, hash_path: str = "") -> None:
        await self.page.goto(f"{self.base_url}/admin{'#/' + hash_path if hash_path else ''}")

    async def login(self, role: str = "ops", username: str | None = None) -> str:
        from mall.members import service as members_service

        username = username or f"{role}_{secrets.token_hex(3)}"
        await members_service.create_staff(username, PASSWORD, role)
        await self.open()
        await self.page.fill("#f-username", username)
        await self.page.fill("#f-password", PASSWORD)
        await self.page.click("form.login-card button[type=submit]")
        await self.page.wait_for_selector("nav.sidebar")
        return username

    async def sign_in(self, role: str = "ops", hash_path: str = "dashboard") -> int:
        """Skips the login form (tests/console/test_login.py covers it): a staff token is
        put where the form would put it."""
        from mall.members import service as members_service

        staff = await members_service.create_staff(f"{role}_{secrets.token_hex(3)}", PASSWORD, role)
        tokens = await members_service.staff_tokens(staff)
        await self.open()
        await self.page.evaluate(
            """([token, refresh, staff]) => {
                sessionStorage.setItem("mall.console.token", token);
                sessionStorage.setItem("mall.console.refresh", refresh);
                sessionStorage.setItem("mall.console.staff", JSON.stringify(staff));
            }""",
            [
                tokens.token,
                tokens.refresh_token,
                {"id": staff.id, "username": staff.username, "role": role, "active": True},
            ],
        )
        await self.open(hash_path)
        await self.page.reload()
        await self.page.wait_for_selector("nav.sidebar")
        return int(staff.id)

    async def go(self, hash_path: str) -> None:
        await self.page.evaluate("(h) => { location.hash = h }", f"#/{hash_path}")

    async def drop_files(self, selector: str, files: list[tuple[str, str, bytes]]) -> None:
        """Drops files on an element the way a desktop drag-and-drop does."""
        payload = [(name, mime, list(data)) for name, mime, data in files]
        await self.page.locator(selector).first.evaluate(
            """(zone, files) => {
                const dt = new DataTransfer();
                for (const [name, type, bytes] of files) {
                    dt.items.add(new File([new Uint8Array(bytes)], name, { type }));
                }
                for (const kind of ["dragenter", "dragover", "drop"]) {
                    const init = { bubbles: true, cancelable: true, dataTransfer: dt };
                    zone.dispatchEvent(new DragEvent(kind, init));
                }
            }""",
            payload,
        )


OpenConsole = Callable[[], Awaitable[Console]]


@pytest.fixture
async def console(browser_context: Any, base_url: str) -> AsyncIterator[Console]:
    """A fresh tab (its own sessionStorage, so logged out), in Chinese."""
    page = await browser_context.new_page()
    tab = Console(page, base_url)
    await page.goto(f"{base_url}/admin")
    await page.evaluate("localStorage.clear()")
    try:
        yield tab
    finally:
        await page.close()
    assert not tab.errors, tab.errors


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
