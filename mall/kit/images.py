"""The image pipeline: read an upload with a size cap, let Pillow verify it, refuse
decompression bombs before decoding pixels, apply EXIF orientation, strip metadata,
and store content-addressed variants (WebP and JPEG) under `uploads_dir`.

Decoding runs in a worker thread with a small concurrency cap, so the event loop never
blocks. Memory is bounded from the header, before any pixel is decoded: the pixel limit,
JPEG decoding at a reduced scale, and a budget of decoded bytes shared by all decodes
(one image of the largest size at a time, smaller ones side by side); freed memory is
handed back to the system after a large decode. A hostile file raises a MallError before
anything is written; writes go to a temporary name and are renamed into place."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import anyio
import anyio.to_thread
from PIL import Image, ImageCms, ImageFile, ImageOps, PngImagePlugin, UnidentifiedImageError
from pydantic import BaseModel
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from mall.config import get_settings
from mall.errors import ErrorCode, MallError
from mall.i18n import _

log = logging.getLogger("mall.images")

IMAGE_TOO_LARGE = ErrorCode(
    "IMAGE_TOO_LARGE", 413, _("The file is too large; the limit is {max_mb} MB")
)
IMAGE_TYPE_NOT_ALLOWED = ErrorCode(
    "IMAGE_TYPE_NOT_ALLOWED", 415, _("Only JPEG, PNG and WebP images are accepted")
)
IMAGE_TOO_MANY_PIXELS = ErrorCode(
    "IMAGE_TOO_MANY_PIXELS",
    422,
    _(
        "The image has too many pixels; the limit is {max_megapixels} megapixels "
        "and {max_side} per side"
    ),
)
IMAGE_INVALID = ErrorCode("IMAGE_INVALID", 422, _("The image is damaged or incomplete"))
UPLOAD_FILE_MISSING = ErrorCode(
    "UPLOAD_FILE_MISSING", 422, _('Send one image in the multipart form field "{field}"')
)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
# WebP cannot encode a side longer than this; we never upscale, so checking the source suffices.
MAX_SIDE = 16383
URL_PREFIX = "/static/uploads"
# room for the multipart boundary and part headers around the file itself
MULTIPART_SLACK = 16 * 1024
_WEBP_QUALITY = 82
_JPEG_QUALITY = 85
_MAX_CONCURRENT_DECODES = 2

# MALL_UPLOAD_MAX_PIXELS is checked from each header before any pixel is decoded;
# Pillow's own process-wide Image.MAX_IMAGE_PIXELS (its bomb error at ~179 MP) stays as
# a backstop rather than being rewritten per request from another thread.
# Never decode a truncated file into a half-grey picture: it is refused instead.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# PNG text chunks are dropped with the rest of the metadata, but Pillow inflates them
# while reading the header (64 MB by default: a zTXt bomb of a few KB); a real photo's
# text (XMP, comments) is far smaller.
PngImagePlugin.MAX_TEXT_CHUNK = 256 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 1024 * 1024

# Peak bytes per decoded pixel the pipeline holds, measured with Pillow 13 on 24 MP files
# of each mode: WebP is decoded through two full RGBA canvases (~15.7); PNG up to ~8.7
# (a transparent palette widened to RGBA, then premultiplied to reduce); JPEG, counted at
# its draft scale, ~9 with the file itself.
_PEAK_BYTES_PER_PIXEL = {"WEBP": 16, "PNG": 9, "JPEG": 10}


class Variant(BaseModel):
    width: int
    height: int
    format: str
    url: str


class StoredImage(BaseModel):
    id: str
    width: int
    height: int
    url: str
    variants: list[Variant]


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


# --- reading the request ---------------------------------------------------


class _Collector:
    """python-multipart callbacks that keep the first `field` part, capped at `max_bytes`."""

    def __init__(self, field: str, max_bytes: int) -> None:
        self.field = field
        self.max_bytes = max_bytes
        self.found: Upload | None = None
        self._buffer: bytearray | None = None
        self._filename = ""
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}

    def on_part_begin(self) -> None:
        self._headers = {}
        self._buffer = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == self.field and self.found is None:
            self._buffer = bytearray()
            self._filename = options.get(b"filename", b"").decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._buffer is None:  # another field: skipped; the stream cap bounds it
            return
        if len(self._buffer) + size > self.max_bytes:
            raise too_large(self.max_bytes)
        self._buffer += data[start:end]

    def on_part_end(self) -> None:
        if self._buffer is not None and self.found is None:
            content_type = self._headers.get(b"content-type", b"").decode("latin-1")
            self.found = Upload(self._filename[:255], content_type[:100], bytes(self._buffer))
        self._buffer = None


def too_large(max_bytes: int) -> MallError:
    return IMAGE_TOO_LARGE(max_mb=round(max_bytes / (1024 * 1024), 1))


async def read_upload(request: Request, field: str, max_bytes: int) -> Upload:
    """Read one file part from a multipart request, refusing it as soon as it passes
    `max_bytes` (by Content-Length before reading, else while the body streams in)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UPLOAD_FILE_MISSING(field=field)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + MULTIPART_SLACK:
        raise too_large(max_bytes)
    _ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UPLOAD_FILE_MISSING(field=field)
    collector = _Collector(field, max_bytes)
    parser = MultipartParser(
        boundary,
        {  # type: ignore[arg-type]
            "on_part_begin": collector.on_part_begin,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
        },
    )
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes + MULTIPART_SLACK:
                raise too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except (FormParserError, ClientDisconnect):  # malformed, or the client went away
        raise UPLOAD_FILE_MISSING(field=field) from None
    if collector.found is None:
        raise UPLOAD_FILE_MISSING(field=field)
    return collector.found


# --- the pipeline (runs in a worker thread) --------------------------------


def _check_dimensions(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise IMAGE_INVALID()
    if width * height > max_pixels or width > MAX_SIDE or height > MAX_SIDE:
        raise IMAGE_TOO_MANY_PIXELS(
            width=width,
            height=height,
            max_megapixels=round(max_pixels / 1_000_000, 1),
            max_side=MAX_SIDE,
        )


def _bomb_error(max_pixels: int) -> MallError:
    # Pillow refused it while reading the header, before we could look at its size
    return IMAGE_TOO_MANY_PIXELS(max_megapixels=round(max_pixels / 1_000_000, 1), max_side=MAX_SIDE)


class DecodeBudget:
    """Bytes of decoded pixels all pipeline threads may hold at once. A decode waits for
    room; one costing more than the whole budget runs alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.used = 0
        self.peak = 0  # the most held at once (read by tests)

    @contextmanager
    def take(self, amount: int, total: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.used == 0 or self.used + amount <= total)
            self.used += amount
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= amount
                self._cond.notify_all()


DECODE_BUDGET = DecodeBudget()
# above this, freed pixel memory is handed back to the system after the decode
_TRIM_AFTER_BYTES = 32 * 1024 * 1024


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


def _release_freed_memory() -> None:
    """glibc keeps large freed blocks in its arenas (one per thread) for reuse, so each
    big decode would stay in the process's memory; malloc_trim returns them."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def _reducible_mode(im: Image.Image) -> str:
    if _has_alpha(im):
        return "RGBA"
    return "L" if im.mode == "1" else "RGB"


def _to_srgb(im: Image.Image) -> Image.Image:
    """RGB in sRGB, transparency flattened onto white (product shots sit on white)."""
    icc = im.info.get("icc_profile")
    if icc and im.mode in ("RGB", "RGBA", "CMYK"):
        try:
            source = ImageCms.ImageCmsProfile(BytesIO(icc))
            target = ImageCms.createProfile("sRGB")
            mode = "RGBA" if im.mode == "RGBA" else "RGB"
            converted = ImageCms.profileToProfile(im, source, target, outputMode=mode)
            if converted is not None:
                im = converted
        except Exception:  # a broken profile only costs colour accuracy
            log.info("ignoring unusable ICC profile")
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def _encode(im: Image.Image, fmt: str) -> bytes:
    out = BytesIO()
    if fmt == "webp":
        im.save(out, "WEBP", quality=_WEBP_QUALITY, method=4)
    else:
        im.save(out, "JPEG", quality=_JPEG_QUALITY, optimize=True, progressive=True)
    return out.getvalue()


def _write_once(path: Path, payload: bytes, created: list[Path]) -> None:
    """Write to a temporary name and rename into place; an existing file is the same
    content (the name is its hash), so it is left as it is."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    created.append(path)


def process_image(
    data: bytes,
    *,
    out_dir: Path,
    widths: Sequence[int],
    max_pixels: int,
    url_prefix: str = URL_PREFIX,
) -> StoredImage:
    """Validate, normalise and store `data`; raise a MallError for anything unacceptable."""
    if not data:
        raise IMAGE_INVALID()
    widths = [w for w in widths if w > 0] or [max(MAX_SIDE, 1)]
    digest = hashlib.sha256(data).hexdigest()
    held = ExitStack()
    reserved = 0

    def reserve(cost: int) -> None:
        nonlocal reserved
        reserved = cost
        budget = max_pixels * max(_PEAK_BYTES_PER_PIXEL.values())
        held.enter_context(DECODE_BUDGET.take(cost, budget))

    try:
        with _refusing_broken(digest, max_pixels):
            clean, width, height = _decode(data, widths, max_pixels, reserve)
        encoded = _encode_variants(clean, width, height, widths, digest, out_dir, url_prefix)
        del clean
    finally:
        held.close()
        if reserved > _TRIM_AFTER_BYTES:
            _release_freed_memory()

    created: list[Path] = []
    try:
        for _variant, path, payload in encoded:
            _write_once(path, payload, created)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    variants = [v for v, _p, _b in encoded]
    largest_jpeg = next(v for v in variants if v.format == "jpeg")
    return StoredImage(
        id=digest, width=width, height=height, url=largest_jpeg.url, variants=variants
    )


@contextmanager
def _refusing_broken(digest: str, max_pixels: int) -> Iterator[None]:
    """Pillow's errors as the upload's MallErrors."""
    try:
        yield
    except MallError:
        raise
    except Image.DecompressionBombError:
        raise _bomb_error(max_pixels) from None
    except UnidentifiedImageError:
        raise IMAGE_TYPE_NOT_ALLOWED() from None
    except Exception as exc:  # truncated, corrupt, or a decoder error: refuse it
        log.info("refused broken image sha256=%s: %s", digest[:16], exc)
        raise IMAGE_INVALID() from None


def _decode(
    data: bytes, widths: Sequence[int], max_pixels: int, reserve: Callable[[int], None]
) -> tuple[Image.Image, int, int]:
    """The picture upright, in sRGB, shrunk by whole factors towards the largest
    variant, and its upright size. `reserve(bytes)` is called (and may wait) once the
    size to decode is known, before any pixel is decoded."""
    # 1. identify by content (not name) among allowed decoders only, size before pixels
    with Image.open(BytesIO(data), formats=ALLOWED_FORMATS) as probe:
        _check_dimensions(probe.width, probe.height, max_pixels)
        probe.verify()
    # 2. reopen (verify leaves the image unusable) and decode
    with Image.open(BytesIO(data), formats=ALLOWED_FORMATS) as im:
        _check_dimensions(im.width, im.height, max_pixels)
        try:
            orientation = int(im.getexif().get(0x0112, 1))
        except Exception:
            orientation = 1
        width, height = im.size
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        biggest = min(max(widths), width)
        if im.format == "JPEG":  # decode at 1/2..1/8 scale when that still covers it
            im.draft("RGB", (biggest, biggest))
        per_pixel = _PEAK_BYTES_PER_PIXEL.get(im.format or "", max(_PEAK_BYTES_PER_PIXEL.values()))
        reserve(im.width * im.height * per_pixel)
        im.load()
        decoded: Image.Image = im
        # shrink big decodes by whole factors first, so later copies stay small
        rotated = orientation in (5, 6, 7, 8)
        factor = (im.height if rotated else im.width) // biggest
        if factor >= 2:
            if decoded.mode not in ("RGB", "RGBA", "L", "LA"):  # palette, 1-bit, 16-bit
                decoded = decoded.convert(_reducible_mode(decoded))
            decoded = decoded.reduce(factor)
        try:
            oriented = ImageOps.exif_transpose(decoded) or decoded
        except Exception:  # an unreadable EXIF block is dropped with the rest
            oriented = decoded
        clean = _to_srgb(oriented)
    clean.info = {}  # no EXIF, ICC, XMP or comments leave with the pixels
    return clean, width, height


def _encode_variants(
    clean: Image.Image,
    width: int,
    height: int,
    widths: Sequence[int],
    digest: str,
    out_dir: Path,
    url_prefix: str,
) -> list[tuple[Variant, Path, bytes]]:
    encoded: list[tuple[Variant, Path, bytes]] = []
    resized = clean
    try:
        for target in sorted({min(w, width) for w in widths}, reverse=True):
            target_height = max(1, round(height * target / width))
            if resized.size != (target, target_height):  # each from the previous: cheaper
                resized = resized.resize(
                    (target, target_height), Image.Resampling.LANCZOS, reducing_gap=3.0
                )
            for fmt in ("webp", "jpg"):
                name = f"{digest[:2]}/{digest}-{target}.{fmt}"
                variant = Variant(
                    width=target,
                    height=target_height,
                    format="webp" if fmt == "webp" else "jpeg",
                    url=f"{url_prefix}/{name}",
                )
                encoded.append((variant, out_dir / name, _encode(resized, fmt)))
    except Exception as exc:
        log.warning("could not encode image sha256=%s: %s", digest[:16], exc)
        raise IMAGE_INVALID() from None
    return encoded


_limiter: anyio.CapacityLimiter | None = None


def _decode_limiter() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(_MAX_CONCURRENT_DECODES)
    return _limiter


async def store_image(data: bytes) -> StoredImage:
    """Run the pipeline in a worker thread with the configured limits."""
    settings = get_settings()
    if len(data) > settings.upload_max_bytes:
        raise too_large(settings.upload_max_bytes)

    def work() -> StoredImage:
        return process_image(
            data,
            out_dir=settings.uploads_dir,
            widths=settings.upload_variant_widths,
            max_pixels=settings.upload_max_pixels,
        )

    return await anyio.to_thread.run_sync(work, limiter=_decode_limiter())
