"""Image files for upload tests, built in memory."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO

from PIL import Image


def exif_photo(width: int = 1200, height: int = 800, orientation: int = 6) -> bytes:
    """A JPEG whose raw left half is red and right half blue, with an EXIF orientation
    tag and a camera make that must not survive the pipeline."""
    im = Image.new("RGB", (width, height), (220, 20, 20))
    im.paste((20, 20, 220), (width // 2, 0, width, height))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "SecretCam"
    out = BytesIO()
    im.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def noisy_jpeg(width: int = 600, height: int = 600) -> bytes:
    im = Image.effect_noise((width, height), 80).convert("RGB")
    out = BytesIO()
    im.save(out, "JPEG", quality=92)
    return out.getvalue()


def png(width: int, height: int, mode: str = "RGB", color: object = (10, 160, 90)) -> bytes:
    out = BytesIO()
    Image.new(mode, (width, height), color).save(out, "PNG")  # type: ignore[arg-type]
    return out.getvalue()


def gif() -> bytes:
    out = BytesIO()
    Image.new("P", (40, 40)).save(out, "GIF")
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A complete, valid 1-bit PNG of `width`x`height` zeros: tens of KB on disk,
    hundreds of MB once decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )
