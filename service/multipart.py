"""``multipart/form-data`` bodies parsed in memory, in one pass, with python-multipart.

The uploads this service takes are a few hundred bytes each and the body is capped (AE_MAX_UPLOAD_BYTES)
before it gets here, so the parts are kept as bytes: no spooled temporary file, no ``UploadFile``,
no thread hop per part, as Starlette's general-purpose ``request.form()`` does. On a 28×28 PNG that
is about a tenth of a millisecond of event-loop time per request (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header


class MultipartError(ValueError):
    """The body is not a well-formed ``multipart/form-data`` body."""


class TooManyParts(MultipartError):
    """The body has more parts than the caller allows; parsing stopped there."""


@dataclass(frozen=True)
class Part:
    """One part: its form field name, the file name if it is a file upload, its type and bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class _Building:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _boundary(content_type: str) -> bytes:
    media, options = parse_options_header(content_type)
    if media != b"multipart/form-data":
        raise MultipartError(f"not a multipart/form-data body ({_text(media)!r})")
    boundary = options.get(b"boundary")
    if not boundary:
        raise MultipartError("the multipart Content-Type has no boundary parameter")
    return boundary


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """Every part of ``body``, in order; :class:`MultipartError` when it is malformed or has too many."""
    boundary = _boundary(content_type)
    parts: list[Part] = []
    current = _Building()
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal current
        if len(parts) >= max_parts:
            raise TooManyParts(f"more than {max_parts} parts in the multipart body")
        current = _Building()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current.headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current.chunks.append(data[start:end])

    def on_part_end() -> None:
        _, options = parse_options_header(current.headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise MultipartError('a part has no Content-Disposition "name"')
        filename = options.get(b"filename")
        media = current.headers.get(b"content-type")
        parts.append(
            Part(
                name=_text(name),
                filename=None if filename is None else _text(filename),
                content_type=None if media is None else _text(media),
                data=b"".join(current.chunks),
            )
        )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise MultipartError(f"malformed multipart body ({exc})") from None
    return parts
