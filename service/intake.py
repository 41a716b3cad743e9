"""Requests → model inputs, the one path for the REST routes, v2 and the tests.

Each request is read (the body, already capped by AE_MAX_UPLOAD_BYTES), parsed (multipart by the
``multipart`` package's ``PushMultipartParser``; v2 bodies by service/v2_protocol.py), decoded
(service/imaging.py) and validated here, and each failure raises an :class:`IntakeError` (or an
``imaging.ImageError``) that service/errors.py turns into a status code.

What a request may cost is bounded by what its bytes cost, not only by what its header declares:

- an upload of at most AE_INLINE_DECODE_BYTES declaring at most 64×64 pixels is decoded on the
  event loop (the usual 28×28 PNG: a few microseconds); any other upload, whatever it declares (a
  flood of PNG text chunks declares 28×28), is decoded off the loop by AE_DECODE_WORKERS threads;
- an off-loop decode first reserves what its header says it will allocate
  (``imaging.decode_cost``) from AE_DECODE_MEMORY_MB; past that budget, or with AE_DECODE_QUEUE
  decodes already waiting, the request gets 503 + Retry-After at once;
- codes must lie within the range the model's card records, widened by that range's width on each
  side (:meth:`service.registry.Model.code_limits`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import multipart
import numpy as np

from service import imaging, v2_protocol
from service.config import Settings
from service.registry import Model

logger = logging.getLogger(__name__)

# Decoding a 28×28 image takes well under a millisecond; larger ones move off the loop.
INLINE_DECODE_PIXELS = 64 * 64
_ACCEPTED_PART_TYPES = ("image/", "application/octet-stream")
# Form fields other than the files a request may carry (ignored, but parsed).
_SPARE_PARTS = 16
# Headers per multipart part (Content-Disposition, Content-Type and a few more) and their length.
_PART_HEADERS = 8
_PART_HEADER_BYTES = 4096
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# A released reservation at least this large hands freed memory back to the system (malloc_trim).
_TRIM_BYTES = 8 << 20


class IntakeError(Exception):
    """A request that cannot become a model input; subclasses say why (service/errors.py maps them)."""


class UnsupportedMediaType(IntakeError):
    """A Content-Type or Content-Encoding this service does not take."""


class MalformedBody(IntakeError):
    """The body is not what its Content-Type says (a broken multipart body)."""


class InvalidInput(IntakeError):
    """A well-formed body that does not fit the model: fields, counts, shapes, values."""


class DecodeBusy(IntakeError):
    """The decode memory budget or queue is full: try again shortly."""

    retry_after = 1


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_identity_encoding(content_encoding: str | None) -> None:
    """415 for a compressed body on routes that take none (only v2 inflates, bounded)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {encoding!r}: send the body uncompressed "
            "(only /v2 inference takes gzip or deflate)"
        )


def _unsupported(media: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"unsupported media type {media or '(none)'!r}: send the image as multipart/form-data field "
        "'file', or as the raw body with an image/* Content-Type (e.g. image/png)"
    )


def check_count(count: int, limit: int, what: str, *, batch: bool = True) -> None:
    """The one batch limit (AE_MAX_BATCH_ITEMS) of images, codes and v2 tensors alike."""
    if count < 1:
        raise InvalidInput(f"no {what} sent; send 1 to {limit}")
    if count > limit:
        hint = (
            f"at most {limit} per request (AE_MAX_BATCH_ITEMS)" if batch else "one; use the /batch endpoint"
        )
        raise InvalidInput(f"{count} {what} sent; {hint}")


def check_values(values: np.ndarray, where: str, limits: tuple[float, float] | None, hint: str = "") -> None:
    """The one value check of model inputs: finite, within float32, within ``limits`` when given."""
    if values.size == 0:
        return
    if not np.isfinite(values).all():
        raise InvalidInput(f"{where} contains NaN or infinite values")
    if np.abs(values).max() > _FLOAT32_MAX:
        raise InvalidInput(f"{where} has values beyond the float32 range")
    if limits is not None:
        low, high = limits
        if values.min() < low or values.max() > high:
            raise InvalidInput(
                f"{where} has values in [{values.min():.4g}, {values.max():.4g}]; it takes values in "
                f"[{low:.4g}, {high:.4g}]{hint}"
            )


@dataclass
class _Part:
    name: str | None
    filename: str | None
    content_type: str | None
    chunks: list[bytes]


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[_Part]:
    """Every part of a ``multipart/form-data`` body, in order; :class:`MalformedBody` or
    :class:`InvalidInput` (too many parts) otherwise."""
    _, options = multipart.parse_options_header(content_type)
    boundary = options.get("boundary")
    if not boundary:
        raise MalformedBody("the multipart Content-Type has no boundary parameter")
    parts: list[_Part] = []
    try:
        with multipart.PushMultipartParser(
            boundary,
            content_length=len(body),
            max_header_size=_PART_HEADER_BYTES,
            max_header_count=_PART_HEADERS,
            max_segment_count=max_parts,
        ) as parser:
            for event in (*parser.parse(body), *parser.parse(b"")):
                if isinstance(event, multipart.MultipartSegment):
                    parts.append(_Part(event.name, event.filename, event.content_type, []))
                elif event:
                    parts[-1].chunks.append(event)
    except multipart.ParserLimitReached as exc:
        raise InvalidInput(f"the multipart body has too many parts or too long headers ({exc})") from None
    except multipart.MultipartError as exc:
        raise MalformedBody(f"malformed multipart body ({exc})") from None
    return parts


def read_uploads(
    body: bytes, content_type: str | None, content_encoding: str | None, *, batch: bool, max_items: int
) -> list[Upload]:
    """The image(s) of a body: multipart field ``file`` (``files`` too for batches) or the raw body."""
    check_identity_encoding(content_encoding)
    media = media_type(content_type)
    if media.startswith("image/") or media == "application/octet-stream":
        return [Upload(body, None)]
    if media != "multipart/form-data" or content_type is None:
        raise _unsupported(media)
    fields = ("file", "files") if batch else ("file",)
    limit = max_items if batch else 1
    # Parts beyond the limit (plus room for a few text fields) are refused while parsing.
    parts = parse_multipart(body, content_type, limit + _SPARE_PARTS)
    uploads: list[Upload] = []
    for part in parts:
        if part.name not in fields:
            continue
        if part.filename is None:
            raise InvalidInput(f"form field {fields[0]!r} must be a file upload, not a text value")
        part_media = media_type(part.content_type)
        if part_media and not part_media.startswith(_ACCEPTED_PART_TYPES):
            raise _unsupported(part_media)
        data = part.chunks[0] if len(part.chunks) == 1 else b"".join(part.chunks)
        uploads.append(Upload(bytes(data), part.filename))
    if not uploads:
        names = " or ".join(repr(f) for f in fields)
        raise InvalidInput(f"the multipart body has no file field {names}")
    check_count(len(uploads), limit, "files", batch=batch)
    return uploads


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None elsewhere: freed decode buffers go back to the system."""
    return getattr(_libc(), "malloc_trim", None)


_M_MMAP_THRESHOLD = -3


@functools.cache
def map_large_allocations() -> bool:
    """Have glibc serve every allocation of 1 MiB or more by its own mapping, returned when freed.

    By default glibc raises that threshold each time such a block is freed, up to 32 MiB, after
    which decode buffers come from the heap: they stay resident once freed, and a ``calloc`` there
    touches every page (libwebp callocs two RGBA canvases on open). False where there is no glibc.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, 1 << 20))


class DecodeBudget:
    """Bytes that concurrent off-loop decodes may allocate, and how many may wait for a thread."""

    def __init__(self, limit_bytes: int, max_pending: int) -> None:
        self.limit_bytes = limit_bytes
        self.max_pending = max_pending
        self.pending = 0  # event-loop side only
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return self._used

    @contextmanager
    def admit(self) -> Iterator[None]:
        """A place in the decode queue, or :class:`DecodeBusy` (called on the event loop)."""
        if self.pending >= self.max_pending:
            raise DecodeBusy(
                f"{self.pending} large images are already waiting to be decoded (AE_DECODE_QUEUE); "
                "retry shortly"
            )
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the budget while decoding (called in a decode thread)."""
        limit_mb = self.limit_bytes / 2**20
        if nbytes > self.limit_bytes:
            raise imaging.ImageTooLarge(
                f"the image needs about {nbytes / 2**20:.0f} MB to decode; the limit is "
                f"{limit_mb:.0f} MB (AE_DECODE_MEMORY_MB): send a smaller image"
            )
        with self._lock:
            if self._used + nbytes > self.limit_bytes:
                raise DecodeBusy(
                    f"the decode memory budget of {limit_mb:.0f} MB (AE_DECODE_MEMORY_MB) is in use by "
                    "other large images; retry shortly"
                )
            self._used += nbytes
        try:
            yield
        finally:
            with self._lock:
                self._used -= nbytes
                idle = self._used == 0
            trim = _malloc_trim()
            if idle and nbytes >= _TRIM_BYTES and trim is not None:
                trim(0)


class Intake:
    """The decode threads and memory budget of one service; :meth:`close` releases the threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.budget = DecodeBudget(settings.decode_memory_mb * 2**20, settings.decode_queue)
        map_large_allocations()
        self._executor: ThreadPoolExecutor | None = None  # started by the first large upload

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _decode_threads(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.settings.decode_workers, thread_name_prefix="ae-decode")
        return self._executor

    def decode_bytes(self, data: bytes, *, resize: bool, invert: bool) -> np.ndarray:
        """One upload → float32 [28, 28], in the calling thread, under the memory budget."""
        return imaging.decode_image(
            data,
            max_pixels=self.settings.max_pixels,
            resize=resize,
            invert=invert,
            reserve=self.budget.reserve,
        )

    async def decode(self, upload: Upload, *, resize: bool, invert: bool) -> np.ndarray:
        """One upload → float32 [28, 28]: on the loop when its bytes are few, else in a decode thread."""
        data = upload.data
        if len(data) <= self.settings.inline_decode_bytes:
            common = imaging.decode_common(data, invert=invert)
            if common is not None:
                return common
            image = imaging.open_image(data, self.settings.max_pixels)
            try:
                if image.width * image.height <= INLINE_DECODE_PIXELS:
                    return imaging.to_array(image, resize=resize, invert=invert)
            finally:
                # Some decoders allocate their canvas on open (libwebp): none may outlive this
                # check while the request waits for a decode thread.
                image.close()
                del image
        with self.budget.admit():
            loop = asyncio.get_running_loop()
            work = functools.partial(self.decode_bytes, data, resize=resize, invert=invert)
            return await loop.run_in_executor(self._decode_threads(), work)

    async def images(
        self,
        body: bytes,
        content_type: str | None,
        content_encoding: str | None,
        *,
        batch: bool,
        resize: bool,
        invert: bool,
    ) -> np.ndarray:
        """A body's uploads → float32 [n, 1, 28, 28]; an error names its file when there are several."""
        uploads = read_uploads(
            body, content_type, content_encoding, batch=batch, max_items=self.settings.max_batch_items
        )
        images = []
        for index, upload in enumerate(uploads):
            try:
                images.append(await self.decode(upload, resize=resize, invert=invert))
            except imaging.ImageError as exc:
                if len(uploads) == 1:
                    raise
                name = f" ({upload.filename})" if upload.filename else ""
                raise type(exc)(f"file {index}{name}: {exc}") from exc
        return np.stack(images)[:, None]

    def codes(
        self, body: bytes, content_encoding: str | None, *, batch: bool
    ) -> tuple[str | None, list[Any]]:
        """A /decode body → the model it names (if any) and its code(s), not yet checked against a model.

        ``{"model"?, "code": [...]}``, or ``{"model"?, "codes": [[...], ...]}`` for batches. Not JSON:
        400; JSON of another shape: 422.
        """
        check_identity_encoding(content_encoding)
        try:
            document = json.loads(body)
        except ValueError as exc:  # not UTF-8, not JSON, or an integer of more digits than Python converts
            raise MalformedBody(f"the body is not valid JSON ({exc})") from None
        except RecursionError:
            raise MalformedBody("the JSON body nests too deeply") from None
        field = "codes" if batch else "code"
        if not isinstance(document, dict) or not isinstance(document.get(field), list):
            raise InvalidInput(f'the body must be a JSON object with a "{field}" list')
        model = document.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidInput('"model" must be a model id (a string)')
        if not batch:
            return model, [document[field]]
        codes = document[field]
        check_count(len(codes), self.settings.max_batch_items, "codes")
        if not all(isinstance(code, list) for code in codes):
            raise InvalidInput('"codes" must be a list of codes, each a list of numbers')
        return model, codes

    def tensors(
        self,
        body: bytes,
        content_encoding: str | None,
        header_length: str | None,
        meta: v2_protocol.TensorMeta,
        limits: tuple[float, float] | None,
    ) -> tuple[v2_protocol.InferenceRequest, np.ndarray]:
        """A v2 ``infer`` body → the parsed request and its one input as float32 ``[N, ...]``.

        gzip and deflate bodies inflate to AE_MAX_UPLOAD_BYTES at most.
        """
        body = v2_protocol.decompress(body, content_encoding, self.settings.max_upload_bytes)
        parsed, tensors = v2_protocol.parse_request(body, header_length)
        values = v2_protocol.check_input(tensors, meta)
        check_count(len(values), self.settings.max_batch_items, f"rows of input {meta.name!r}")
        check_values(values, f"input {meta.name!r}", limits)
        return parsed, values.astype(np.float32)


def code_array(code: Any, model: Model, where: str = "code") -> np.ndarray:
    """A JSON code (flat, or nested to the code shape) → float32 ``code_shape``; :class:`InvalidInput`
    when it has the wrong shape, a non-finite value, or values outside the model's code limits."""
    shape = model.code_shape or ()
    expected = f"{model.code_size} numbers, flat or nested as {list(shape)}"
    try:
        values = np.asarray(code, dtype=np.float64)
    except (ValueError, TypeError, OverflowError, RecursionError):
        # Ragged, non-numeric, nested past numpy's 64 dimensions, or an integer beyond float64.
        raise InvalidInput(f"{where} must be {expected} (model {model.id})") from None
    if values.shape not in (shape, (model.code_size,)):
        raise InvalidInput(f"{where} has shape {list(values.shape)}; model {model.id} expects {expected}")
    check_values(values, where, model.code_limits, _trained_range(model))
    return values.astype(np.float32).reshape(shape)


def code_rows(codes: list[Any], model: Model) -> np.ndarray:
    """Codes of a request → float32 ``[n, *code_shape]``, each checked as :func:`code_array` does."""
    if len(codes) == 1:
        return code_array(codes[0], model)[None]
    return np.stack([code_array(code, model, f"codes[{i}]") for i, code in enumerate(codes)])


def _trained_range(model: Model) -> str:
    trained = model.card.get("code_range")
    if trained is None:
        return ""
    return (
        f" for model {model.id}: its training codes span [{trained['min']:.4g}, {trained['max']:.4g}], "
        "and the decoder is not meant for values far outside that"
    )
