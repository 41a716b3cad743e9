"""``multipart/form-data`` bodies parsed in memory with ``bytes.find``.

The uploads this service takes are a few hundred bytes each and the body is capped (AE_MAX_UPLOAD_BYTES)
before it gets here, so the whole body is in memory and each part is a slice of it: no spooled
temporary file, no ``UploadFile``, no byte-at-a-time state machine. Starlette's ``request.form()``
(python-multipart underneath) spent about a fifth of the event loop's time on a 28×28 PNG upload;
this takes a few microseconds (docs/benchmarks.md). python-multipart still parses the header
parameters (quoting, escapes), and tests/service/test_multipart.py checks that both parsers agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import parse_options_header


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


def _headers(block: bytes, index: int) -> dict[bytes, bytes]:
    headers = {}
    for line in block.split(b"\r\n") if block else ():
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise MultipartError(f"malformed multipart body: part {index} has a header line without a name")
        headers[name.strip().lower()] = value.strip()
    return headers


def _part(block: bytes, data: bytes, index: int) -> Part:
    headers = _headers(block, index)
    _, options = parse_options_header(headers.get(b"content-disposition", b""))
    name = options.get(b"name")
    if name is None:
        raise MultipartError(f'part {index} has no Content-Disposition "name"')
    filename = options.get(b"filename")
    media = headers.get(b"content-type")
    return Part(
        name=_text(name),
        filename=None if filename is None else _text(filename),
        content_type=None if media is None else _text(media),
        data=data,
    )


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """Every part of ``body``, in order; :class:`MultipartError` when it is malformed or has too many.

    RFC 7578 / RFC 2046 §5.1.1: a preamble before the first boundary and an epilogue after the
    closing one are ignored; each part is header lines, a blank line, then bytes up to the next
    CRLF + boundary. A part not closed by a boundary is an error, never a half-read file.
    """
    delimiter = b"--" + _boundary(content_type)
    separator = b"\r\n" + delimiter
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        first = body.find(separator)
        if first < 0:
            raise MultipartError("malformed multipart body: the boundary never occurs in it")
        pos = first + len(separator)
    parts: list[Part] = []
    while not body.startswith(b"--", pos):  # "--" after a boundary closes the body
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise MultipartError("malformed multipart body: a boundary line does not end after the boundary")
        if len(parts) >= max_parts:
            raise TooManyParts(f"more than {max_parts} parts in the multipart body")
        data_end = body.find(separator, line_end)
        # Headers end at the first blank line; a part with no headers starts with it.
        head_end = body.find(b"\r\n\r\n", line_end)
        if data_end < 0 or head_end < 0 or head_end > data_end:
            raise MultipartError(f"malformed multipart body: part {len(parts)} is not closed by the boundary")
        parts.append(_part(body[line_end + 2 : head_end], body[head_end + 4 : data_end], len(parts)))
        pos = data_end + len(separator)
    return parts
