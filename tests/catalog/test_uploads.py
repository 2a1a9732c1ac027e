from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from PIL import Image

from mall.audit.models import AuditLog
from mall.config import Settings
from mall.kit.images import process_image
from tests.catalog import images
from tests.catalog.conftest import StaffToken
from tests.conftest import MemberLogin

URL = "/api/admin/v1/uploads/images"


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def stored_path(settings: Settings, url: str) -> Path:
    assert url.startswith("/static/uploads/")
    return settings.uploads_dir / url.removeprefix("/static/uploads/")


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    data: bytes,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
) -> httpx.Response:
    return await client.post(URL, files={"file": (filename, data, content_type)}, headers=headers)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return images.png_bomb()


async def test_photo_is_turned_upright_stripped_and_stored(
    client: httpx.AsyncClient, ops_headers: StaffToken, settings: Settings
) -> None:
    ops = await ops_headers()
    photo = images.exif_photo(1200, 800, orientation=6)
    r = await upload(client, ops, photo)
    assert r.status_code == 201, r.text
    body = r.json()
    # orientation 6: stored upright, so the landscape raw file becomes portrait
    assert (body["width"], body["height"]) == (800, 1200)
    assert len(body["id"]) == 64
    got = {(v["width"], v["format"]) for v in body["variants"]}
    assert got == {(w, f) for w in (750, 375, 150) for f in ("webp", "jpeg")}
    assert body["url"].endswith("-750.jpg")
    for variant in body["variants"]:
        path = stored_path(settings, variant["url"])
        raw = path.read_bytes()
        assert b"SecretCam" not in raw
        with Image.open(BytesIO(raw)) as im:
            assert im.format == ("WEBP" if variant["format"] == "webp" else "JPEG")
            assert im.size == (variant["width"], variant["height"])
            assert variant["height"] == round(variant["width"] * 1.5)
            assert len(im.getexif()) == 0 and "exif" not in im.info
            rgb = im.convert("RGB")
            top = rgb.getpixel((im.width // 2, 2))
            bottom = rgb.getpixel((im.width // 2, im.height - 3))
        # the raw left half (red) is on top once rotated 90° clockwise
        assert isinstance(top, tuple) and isinstance(bottom, tuple)
        assert top[0] > 150 and top[2] < 100, top
        assert bottom[2] > 150 and bottom[0] < 100, bottom
    served = await client.get(body["variants"][0]["url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/webp"
    log = await AuditLog.filter(action="image.upload").first()
    assert log is not None and log.detail["sha256"] == body["id"]

    # the same file again: same content address, nothing new written
    before = snapshot(settings.uploads_dir)
    again = await upload(client, ops, photo)
    assert again.status_code == 201 and again.json() == body
    assert snapshot(settings.uploads_dir) == before


async def test_small_image_is_never_upscaled_and_transparency_becomes_white(
    client: httpx.AsyncClient, ops_headers: StaffToken, settings: Settings
) -> None:
    admin = await ops_headers("admin")
    clear = images.png(200, 100, "RGBA", (0, 0, 0, 0))
    r = await upload(client, admin, clear, "clear.png", "image/png")
    assert r.status_code == 201, r.text
    widths = sorted({v["width"] for v in r.json()["variants"]})
    assert widths == [150, 200]
    jpeg = stored_path(settings, r.json()["url"])
    with Image.open(jpeg) as im:
        assert im.size == (200, 100)
        pixel = im.convert("RGB").getpixel((100, 50))
    assert isinstance(pixel, tuple) and min(pixel) > 245


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("text_as_jpg", 415, "IMAGE_TYPE_NOT_ALLOWED"),
        ("gif", 415, "IMAGE_TYPE_NOT_ALLOWED"),
        ("truncated_jpeg", 422, "IMAGE_INVALID"),
        ("empty", 422, "IMAGE_INVALID"),
        ("png_bomb", 422, "IMAGE_TOO_MANY_PIXELS"),
        ("over_pixel_limit", 422, "IMAGE_TOO_MANY_PIXELS"),
        ("oversize", 413, "IMAGE_TOO_LARGE"),
    ],
)
async def test_hostile_files_are_refused_and_leave_nothing(
    client: httpx.AsyncClient,
    ops_headers: StaffToken,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    bomb: bytes,
    case: str,
    status: int,
    code: str,
) -> None:
    ops = await ops_headers()
    if case == "text_as_jpg":
        data = b"just some notes, definitely not a picture\n" * 20
    elif case == "gif":
        data = images.gif()
    elif case == "truncated_jpeg":
        whole = images.noisy_jpeg()
        data = whole[: len(whole) * 6 // 10]
    elif case == "empty":
        data = b""
    elif case == "png_bomb":
        data = bomb
        assert len(data) < 100_000  # tiny on disk, 400 megapixels decoded
    elif case == "over_pixel_limit":
        monkeypatch.setattr(settings, "upload_max_pixels", 200 * 200)
        data = images.png(300, 300)
    else:
        monkeypatch.setattr(settings, "upload_max_bytes", 50_000)
        data = images.noisy_jpeg(400, 400)
        assert len(data) > 50_000
    before = snapshot(settings.uploads_dir)
    r = await upload(client, ops, data, "photo.jpg", "image/jpeg")
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert error["message"]  # localized, never empty
    assert snapshot(settings.uploads_dir) == before
    assert not await AuditLog.filter(action="image.upload").exists()
    if case == "over_pixel_limit":
        assert error["details"]["width"] == 300 and error["details"]["height"] == 300
    # the worker is still fine
    assert (await client.get("/healthz")).status_code == 200


async def test_oversize_stream_is_refused_before_it_is_all_read(
    client: httpx.AsyncClient,
    ops_headers: StaffToken,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "upload_max_bytes", 100_000)
    ops = await ops_headers()
    boundary = "mallboundary42"
    sent = 0

    async def body() -> AsyncIterator[bytes]:  # chunked: no Content-Length to trust
        nonlocal sent
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="huge.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        for _ in range(200):  # 12.8 MB if read to the end
            sent += 1
            yield b"\xff" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    before = snapshot(settings.uploads_dir)
    r = await client.post(
        URL,
        content=body(),
        headers={**ops, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "IMAGE_TOO_LARGE"
    assert sent < 10, f"read {sent} chunks before refusing"
    assert snapshot(settings.uploads_dir) == before

    # a declared Content-Length over the cap is refused without reading the body
    big = await client.post(
        URL,
        files={"file": ("big.jpg", b"\xff" * 300_000, "image/jpeg")},
        headers={**ops, "Accept-Language": "en"},
    )
    assert big.status_code == 413
    assert big.json()["error"]["message"] == "The file is too large; the limit is 0.1 MB"


async def test_upload_needs_staff_and_a_file_field(
    client: httpx.AsyncClient, ops_headers: StaffToken, member_headers: MemberLogin
) -> None:
    photo = images.exif_photo(300, 200)
    shopper = await member_headers("mallory")
    r = await upload(client, shopper, photo)
    assert r.status_code == 401
    assert (await upload(client, {}, photo)).status_code == 401
    ops = await ops_headers()
    wrong_field = await client.post(
        URL, files={"picture": ("p.jpg", photo, "image/jpeg")}, headers=ops
    )
    assert wrong_field.status_code == 422
    assert wrong_field.json()["error"]["code"] == "UPLOAD_FILE_MISSING"
    not_multipart = await client.post(URL, content=photo, headers=ops)
    assert not_multipart.json()["error"]["code"] == "UPLOAD_FILE_MISSING"


async def test_decoding_does_not_block_the_event_loop(
    client: httpx.AsyncClient, ops_headers: StaffToken
) -> None:
    ops = await ops_headers()
    data = images.noisy_jpeg(1600, 1600)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.002)

    task = asyncio.create_task(ticker())
    r = await upload(client, ops, data)
    done.set()
    await task
    assert r.status_code == 201, r.text
    assert ticks >= 3


@pytest.mark.nodb
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_big_picture_is_reduced_early_and_still_turned_upright(tmp_path: Path, fmt: str) -> None:
    raw = Image.new("RGB", (3000, 1500), (220, 20, 20))
    raw.paste((20, 20, 220), (1500, 0, 3000, 1500))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise to view: the raw right half goes on top
    out = BytesIO()
    raw.save(out, fmt, exif=exif.tobytes())
    stored = process_image(
        out.getvalue(), out_dir=tmp_path, widths=[750, 375, 150], max_pixels=40_000_000
    )
    assert (stored.width, stored.height) == (1500, 3000)
    assert [(v.width, v.height) for v in stored.variants[::2]] == [
        (750, 1500),
        (375, 750),
        (150, 300),
    ]
    with Image.open(tmp_path / stored.url.removeprefix("/static/uploads/")) as im:
        top = im.convert("RGB").getpixel((im.width // 2, 5))
        bottom = im.convert("RGB").getpixel((im.width // 2, im.height - 5))
        assert len(im.getexif()) == 0
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[2] > 150 and bottom[0] > 150, (top, bottom)
