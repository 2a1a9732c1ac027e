"""The image pipeline's memory: a pixel limit that fits a product picture, a budget of
decoded bytes shared by all decodes, freed memory handed back, and PNG text bombs."""

from __future__ import annotations

import struct
import threading
import zlib
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from mall.config import Settings
from mall.errors import MallError
from mall.kit import images as kit_images
from mall.kit.images import DECODE_BUDGET, DecodeBudget, process_image
from tests.catalog import images

pytestmark = pytest.mark.nodb
WIDTHS = [750, 375, 150]


def test_the_default_pixel_limit_fits_a_product_picture(tmp_path: Path) -> None:
    limit = Settings(_env_file=None).upload_max_pixels  # type: ignore[call-arg]
    assert limit == 24_000_000
    # a 25 MP picture is refused from its header, a 24 MP one is not
    with pytest.raises(MallError) as refused:
        process_image(images.png(5000, 5000), out_dir=tmp_path, widths=WIDTHS, max_pixels=limit)
    assert refused.value.code == "IMAGE_TOO_MANY_PIXELS"
    stored = process_image(
        images.png(6000, 4000, "L", 3), out_dir=tmp_path, widths=WIDTHS, max_pixels=limit
    )
    assert (stored.width, stored.height) == (6000, 4000)


def test_the_budget_lets_small_decodes_share_and_makes_big_ones_wait() -> None:
    budget = DecodeBudget()
    inside: list[str] = []
    release_a = threading.Event()

    def hold(name: str, amount: int, until: threading.Event | None) -> None:
        with budget.take(amount, 64):
            inside.append(name)
            if until is not None:
                until.wait(5)

    a = threading.Thread(target=hold, args=("a", 40, release_a))
    a.start()
    while "a" not in inside:
        threading.Event().wait(0.001)
    small = threading.Thread(target=hold, args=("small", 20, None))
    small.start()
    small.join(5)
    assert inside == ["a", "small"]  # 40 + 20 fits in 64: it did not wait
    big = threading.Thread(target=hold, args=("big", 40, None))
    big.start()
    big.join(0.2)
    assert big.is_alive() and "big" not in inside  # 40 + 40 does not: it waits for a
    release_a.set()
    big.join(5)
    a.join(5)
    assert inside == ["a", "small", "big"]
    assert budget.peak == 60 and budget.used == 0
    # one bigger than the whole budget still runs, alone
    with budget.take(100, 64):
        assert budget.used == 100


def test_concurrent_big_decodes_run_one_at_a_time(tmp_path: Path) -> None:
    data = images.png(2000, 2000)
    max_pixels = 4_000_000  # budget 64 MB; each of these costs 36 MB
    DECODE_BUDGET.peak = 0
    results: list[object] = []

    def work(n: int) -> None:
        results.append(
            process_image(data, out_dir=tmp_path / str(n), widths=WIDTHS, max_pixels=max_pixels)
        )

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 3
    assert DECODE_BUDGET.peak == 2000 * 2000 * 9
    assert DECODE_BUDGET.used == 0


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(kit_images._LIBC is None, reason="needs glibc's malloc_trim")
def test_memory_of_big_decodes_is_handed_back(tmp_path: Path) -> None:
    data = images.png(4000, 3000, "RGBA", (10, 160, 90, 128))  # ~90 MB at its peak
    kit_images._release_freed_memory()  # a clean start: nothing freed is still held
    before = _rss()
    threads = [  # in worker threads, as uploads are (each thread has its own arena)
        threading.Thread(
            target=process_image,
            args=(data,),
            kwargs={"out_dir": tmp_path / str(n), "widths": WIDTHS, "max_pixels": 24_000_000},
        )
        for n in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert _rss() - before < 40 * 1024 * 1024


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_with_text(chunks: int, size: int) -> bytes:
    """A small valid PNG with `chunks` zTXt chunks of `size` bytes each once inflated."""
    plain = images.png(10, 10)
    header, rest = plain[: 8 + 25], plain[8 + 25 :]  # signature + IHDR
    text = b"".join(
        _chunk(b"zTXt", b"Comment%d\x00\x00" % n + zlib.compress(b"A" * size, 9))
        for n in range(chunks)
    )
    return header + text + rest


def test_png_text_bombs_are_refused(tmp_path: Path) -> None:
    bomb = _png_with_text(64, 1024 * 1024)  # 64 MB of text in a few KB
    assert len(bomb) < 100_000
    with pytest.raises(MallError) as refused:
        process_image(bomb, out_dir=tmp_path, widths=WIDTHS, max_pixels=24_000_000)
    assert refused.value.code == "IMAGE_INVALID"
    # ordinary metadata passes (and is stripped)
    stored = process_image(
        _png_with_text(4, 16 * 1024), out_dir=tmp_path, widths=WIDTHS, max_pixels=24_000_000
    )
    assert stored.width == 10


def test_a_big_transparent_palette_picture_is_reduced_and_flattened(tmp_path: Path) -> None:
    im = Image.new("P", (3000, 1500), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (1500, 0, 3000, 1500))
    im.info["transparency"] = 0  # the left half is transparent
    out = BytesIO()
    im.save(out, "PNG", transparency=0)
    stored = process_image(out.getvalue(), out_dir=tmp_path, widths=WIDTHS, max_pixels=24_000_000)
    assert (stored.width, stored.height) == (3000, 1500)
    with Image.open(tmp_path / stored.url.removeprefix("/static/uploads/")) as saved:
        assert saved.size == (750, 375)
        left = saved.convert("RGB").getpixel((100, 180))
        right = saved.convert("RGB").getpixel((650, 180))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert min(left) > 240, left  # transparent: on white
    assert right[2] > 200 and right[0] < 40, right  # blue
