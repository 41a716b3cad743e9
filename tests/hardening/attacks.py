"""Hostile inputs for the intake tests, and what the tests measure on the server while sending them.

Each builder returns bytes under the default body limit (AE_MAX_UPLOAD_BYTES, 2 MiB). The *bombs*
declare the most pixels the default AE_MAX_PIXELS admits (2048×2048) in few bytes; the *floods*
declare a tiny image and fill the body with what a parser must walk through (chunks, markers,
extension blocks, tags).
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

SIDE = 2048  # the default AE_MAX_PIXELS is SIDE² exactly
BODY_LIMIT = 2 * 1024 * 1024
# Room for the multipart framing around an upload.
_ROOM = 4096


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def _flat_rgba(side: int = SIDE) -> Image.Image:
    return Image.new("RGBA", (side, side), (200, 100, 50, 128))


def _bmp_rle8(width: int, height: int) -> bytes:
    """An 8-bit RLE-compressed BMP of one colour: 2048×2048 in about 35 KB."""
    row = b"".join(struct.pack("BB", 255, 1) for _ in range(width // 255))
    if width % 255:
        row += struct.pack("BB", width % 255, 1)
    data = (row + b"\x00\x00") * height + b"\x00\x01"
    palette = b"".join(struct.pack("BBBB", v, v, v, 0) for v in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    head = b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset)
    return head + info + palette + data


def bombs() -> dict[str, bytes]:
    """format → a small file declaring 2048×2048 (RGBA where the format has alpha)."""
    flat = _flat_rgba()
    return {
        "PNG": _save(flat, "PNG"),
        "PNG 16-bit": _save(Image.new("I;16", (SIDE, SIDE), 30000), "PNG"),
        "GIF": _save(flat.convert("P"), "GIF"),
        "JPEG": _save(flat.convert("RGB"), "JPEG", quality=90),
        "WebP": _save(flat, "WEBP", lossless=True),
        "BMP": _bmp_rle8(SIDE, SIDE),
        "TIFF": _save(flat, "TIFF", compression="tiff_deflate"),
        "TGA": _save(flat, "TGA", rle=True),
    }


def _png_text_flood(kind: bytes) -> bytes:
    grey = _save(Image.new("L", (28, 28), 0), "PNG")
    ihdr_end = 8 + 25
    payload = b"k\x00" + (zlib.compress(b"v") if kind == b"zTXt" else b"v")
    if kind == b"zTXt":
        payload = b"k\x00\x00" + zlib.compress(b"v")
    one = _chunk(kind, payload)
    count = (BODY_LIMIT - _ROOM - len(grey)) // len(one)
    return grey[:ihdr_end] + one * count + grey[ihdr_end:]


def _gif_comment_flood() -> bytes:
    gif = _save(Image.new("L", (28, 28), 0), "GIF")
    block = b"\x21\xfe\x01x\x00"  # a comment extension holding one byte
    count = (BODY_LIMIT - _ROOM - len(gif)) // len(block)
    return gif[:-1] + block * count + gif[-1:]


def _jpeg_marker_flood() -> bytes:
    jpeg = _save(Image.new("L", (28, 28), 0), "JPEG")
    marker = b"\xff\xfe\x00\x03x"  # COM segment, one byte
    count = (BODY_LIMIT - _ROOM - len(jpeg)) // len(marker)
    return jpeg[:2] + marker * count + jpeg[2:]


def _webp_chunk_flood() -> bytes:
    webp = _save(Image.new("RGB", (28, 28)), "WEBP", lossless=True)
    chunk = b"XTRA" + struct.pack("<I", 2) + b"xx"
    count = (BODY_LIMIT - _ROOM - len(webp)) // len(chunk)
    body = webp[12:] + chunk * count
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _tiff_tag_flood() -> bytes:
    """A 28×28 TIFF whose IFD has thousands of unknown tags (the IFD entry count is 16 bits)."""
    base = Image.new("L", (28, 28), 0)
    out = io.BytesIO()
    extra = {60000 + i: "x" * 64 for i in range(2000)}
    base.save(out, "TIFF", tiffinfo=extra)
    return out.getvalue()


def floods() -> dict[str, bytes]:
    """format → a file under the body limit that declares 28×28 and is mostly parser work."""
    return {
        "PNG tEXt": _png_text_flood(b"tEXt"),
        "PNG zTXt": _png_text_flood(b"zTXt"),
        "GIF comments": _gif_comment_flood(),
        "JPEG COM markers": _jpeg_marker_flood(),
        "WebP unknown chunks": _webp_chunk_flood(),
        "TIFF unknown tags": _tiff_tag_flood(),
    }


def corrupt(data: bytes, seed: int) -> bytes:
    """The bytes with a few flipped past the first 16, then cut at a random point."""
    rng = np.random.default_rng(seed)
    damaged = bytearray(data)
    for pos in rng.integers(16, len(damaged), size=8):
        damaged[pos] ^= 0xFF
    return bytes(damaged[: int(rng.integers(len(damaged) // 2, len(damaged)))])


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


@dataclass
class Watch:
    """What happened on the server while an attack ran."""

    rss_start_mib: float
    rss_peak_mib: float = 0.0
    healthz_gaps_ms: list[float] = field(default_factory=list)
    healthz_failures: int = 0

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_peak_mib - self.rss_start_mib

    @property
    def longest_gap_ms(self) -> float:
        return max(self.healthz_gaps_ms, default=0.0)


@contextmanager
def watch(url: str, pid: int, sample_s: float = 0.005) -> Iterator[Watch]:
    """Samples the server's RSS and keeps a ``/healthz`` probe going (one request after another)."""
    result = Watch(rss_start_mib=rss_mib(pid))
    result.rss_peak_mib = result.rss_start_mib
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result.rss_peak_mib = max(result.rss_peak_mib, rss_mib(pid))
            stop.wait(sample_s)

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            last = time.perf_counter()
            while not stop.is_set():
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    ok = False
                now = time.perf_counter()
                result.healthz_gaps_ms.append((now - last) * 1000)
                result.healthz_failures += not ok
                last = now
                stop.wait(0.002)

    threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
    for thread in threads:
        thread.start()
    try:
        yield result
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def post_concurrently(
    send: Callable[[httpx.Client, int], httpx.Response], count: int, concurrency: int
) -> list[httpx.Response]:
    """``send(client, i)`` for i in range(count), ``concurrency`` at a time, each thread its own client."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def run(i: int) -> httpx.Response:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=120)
            clients.append(local.client)
        return send(local.client, i)

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(run, range(count)))
    finally:
        for client in clients:
            client.close()
