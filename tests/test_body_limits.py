"""Request bodies are bounded before they are read: a lying Content-Length is refused
without reading, a chunked body is refused once it passes the limit, on every route
(the raw-ASGI flash-sale attempt included), and normal requests are untouched."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from mall.app import create_app
from mall.config import Settings
from tests.conftest import MemberLogin, StaffLogin
from tests.threaded_server import ThreadedServer

NOTIFY = "/api/v1/wechat/pay-notify"
LOGIN = "/api/v1/auth/wechat-login"
ATTEMPT = "/api/v1/seckill/items/1/attempt"
MB = 1024 * 1024


class Body:
    """A request body that counts how much of it was pulled by the app."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b"{" * self.chunk


def _assert_413(r: httpx.Response, code: str = "PAYLOAD_TOO_LARGE") -> None:
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == code
    assert r.headers["connection"] == "close"


@pytest.mark.parametrize("path", [NOTIFY, LOGIN, ATTEMPT, "/api/admin/v1/products"])
async def test_a_lying_content_length_is_refused_without_reading(
    client: httpx.AsyncClient, path: str
) -> None:
    body = Body(200 * MB)
    started = time.perf_counter()
    r = await client.post(
        path,
        content=body,
        headers={"Content-Length": str(200 * MB), "Content-Type": "application/json"},
    )
    _assert_413(r)
    assert body.sent == 0, f"{body.sent} bytes were read"
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("path", "limit"), [(NOTIFY, 16 * 1024), (LOGIN, 64 * 1024), (ATTEMPT, 64 * 1024)]
)
async def test_a_chunked_body_is_refused_once_past_the_limit(
    client: httpx.AsyncClient, member_headers: MemberLogin, path: str, limit: int
) -> None:
    headers = await member_headers("alice") if path == ATTEMPT else {}
    body = Body(200 * MB, chunk=4096)
    r = await client.post(path, content=body, headers={**headers, "Accept-Language": "en"})
    _assert_413(r)
    assert limit < body.sent <= limit + body.chunk
    kb = limit // 1024
    message = r.json()["error"]["message"]
    assert message == f"The request body is too large; the limit is {kb} KB"
    assert r.json()["error"]["details"] == {"max_kb": kb}


async def test_the_refusal_is_localized(client: httpx.AsyncClient) -> None:
    r = await client.post(LOGIN, content=Body(1 * MB))
    _assert_413(r)
    assert r.json()["error"]["message"] == "请求内容过大，上限为 64 KB"


async def test_bodies_within_the_limit_are_untouched(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    # a normal login, and one just under the limit (refused for its content, not size)
    assert (await client.post(LOGIN, json={"code": "dev:bob"})).status_code == 200
    padded = {"code": "dev:bob", "pad": "x" * (60 * 1024)}
    assert (await client.post(LOGIN, json=padded)).status_code == 200

    # chunked but small
    async def small() -> AsyncIterator[bytes]:
        yield b'{"code": '
        yield b'"dev:carol"}'

    r = await client.post(LOGIN, content=small(), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text

    # the flash-sale fast path answers the same with or without a (small) body
    alice = await member_headers("alice")
    bare = await client.post(ATTEMPT, headers=alice)
    with_body = await client.post(ATTEMPT, headers=alice, json={"ignored": True})
    chunked = await client.post(ATTEMPT, headers=alice, content=small())
    assert bare.status_code != 413
    assert (with_body.status_code, with_body.json()) == (bare.status_code, bare.json())
    assert (chunked.status_code, chunked.json()) == (bare.status_code, bare.json())

    # admin routes take more (product descriptions): 200 KB is not refused for size
    admin = await staff_headers()
    r = await client.post(
        "/api/admin/v1/products",
        headers=admin,
        json={"name": "big", "description": "好" * 20_000, "pad": "x" * 140_000},
    )
    assert r.status_code != 413, r.text


async def test_limits_follow_the_settings(
    client: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "max_body_bytes", 1024)
    r = await client.post(LOGIN, json={"code": "dev:bob", "pad": "x" * 2000})
    _assert_413(r)
    assert r.json()["error"]["details"] == {"max_kb": 1}
    monkeypatch.setattr(settings, "max_body_bytes", 1536)
    r = await client.post(LOGIN, json={"code": "dev:bob", "pad": "x" * 2000})
    assert r.json()["error"]["details"] == {"max_kb": 1.5}


async def test_order_import_keeps_its_own_code(
    client: httpx.AsyncClient,
    staff_headers: StaffLogin,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "upload_max_bytes", 100_000)
    admin = await staff_headers()
    body = Body(200 * MB)
    r = await client.post(
        "/api/admin/v1/external-orders/import",
        content=body,
        headers={**admin, "Content-Type": "text/csv"},
    )
    _assert_413(r, "IMPORT_TOO_LARGE")
    assert body.sent <= 100_000 + 16 * 1024 + body.chunk


# --- over a real socket: the server stops reading and closes -----------------------


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    running = ThreadedServer(create_app(settings, manage_resources=False), "body-limits")
    running.start()
    try:
        yield running.url.removeprefix("http://")
    finally:
        running.stop()


def _exchange(address: str, head: bytes, piece: bytes, most: int) -> tuple[bytes, int]:
    """Send `head`, then `piece` after `piece` (up to `most` bytes) until the server
    answers; returns (what it answered, body bytes sent)."""
    host, port = address.split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head)
        try:
            while sent < most:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                break
        return answer, sent


@pytest.mark.nodb
@pytest.mark.parametrize("chunked", [False, True])
def test_real_server_refuses_200_mb_early_and_closes(server: str, chunked: bool) -> None:
    piece = b"x" * 8192
    if chunked:
        framing = b"Transfer-Encoding: chunked\r\n"
        piece = b"2000\r\n" + piece + b"\r\n"
    else:
        framing = b"Content-Length: %d\r\n" % (200 * MB)
    head = (
        b"POST " + NOTIFY.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n" + framing + b"\r\n"
    )
    answer, sent = _exchange(server, head, piece, 200 * MB)
    status_line, _sep, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large" or b" 413 " in status_line
    assert b"connection: close" in rest.lower()
    assert b"PAYLOAD_TOO_LARGE" in answer
    # the server answered after at most a few socket buffers, not 200 MB
    assert sent < 8 * MB, f"sent {sent} bytes before the answer"
