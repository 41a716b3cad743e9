"""The in-memory multipart parser, alone and through POST /denoise and /denoise/batch."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from service.multipart import MultipartError, TooManyParts, parse_multipart
from tests.service.conftest import png_bytes

CT = "multipart/form-data; boundary=XyZ"
BROKEN_HEADER = b"--XyZ\r\nContent-Disposition form-data broken header\r\n\r\nx\r\n--XyZ--\r\n"
TRUNCATED = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\ncut off here'


def _body(*parts: tuple[str, str | None, str | None, bytes], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, filename, media, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if media:
            out += f"Content-Type: {media}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_parts_keep_order_names_filenames_types_and_exact_bytes() -> None:
    payload = bytes(range(256)) * 3 + b"\r\n--XyY almost the boundary\r\n--Xy"
    parts = parse_multipart(
        _body(("file", "a.png", "image/png", payload), ("note", None, None, b"hello")), CT, max_parts=4
    )
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("file", "a.png", "image/png"),
        ("note", None, None),
    ]
    assert parts[0].data == payload and parts[1].data == b"hello"


def test_same_result_as_httpx_encoding() -> None:
    request = httpx.Request("POST", "http://x/", files=[("files", ("0.png", b"\x89PNG0", "image/png"))] * 3)
    body = request.read()
    parts = parse_multipart(body, request.headers["content-type"], max_parts=8)
    assert [(p.name, p.filename, p.data) for p in parts] == [("files", "0.png", b"\x89PNG0")] * 3


def test_too_many_parts_stops_with_its_own_error() -> None:
    body = _body(*[("files", f"{i}.png", "image/png", b"x") for i in range(5)])
    with pytest.raises(TooManyParts, match="more than 4 parts"):
        parse_multipart(body, CT, max_parts=4)


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("multipart/form-data", "no boundary"),
        ("multipart/form-data; boundary=", "no boundary"),
        ("text/plain; boundary=XyZ", "not a multipart/form-data body"),
    ],
)
def test_content_type_without_a_usable_boundary_is_refused(content_type: str, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        parse_multipart(_body(("file", "a.png", None, b"x")), content_type, max_parts=4)


def test_part_without_a_name_is_refused() -> None:
    body = b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--\r\n"
    with pytest.raises(MultipartError, match="no Content-Disposition"):
        parse_multipart(body, CT, max_parts=4)


@pytest.mark.parametrize(
    "body",
    [
        b"garbage that never mentions the boundary",
        b"--XyZ\r\nContent-Disposition form-data broken header\r\n\r\nx\r\n--XyZ--\r\n",
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\ncut off here',
        b"",
    ],
    ids=["no-boundary-in-body", "header-without-colon", "truncated", "empty"],
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(MultipartError, match="malformed multipart body"):  # never a half-read part
        parse_multipart(body, CT, max_parts=4)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (
            b"--XyZ\r\nContent-Disposition form-data broken\r\n\r\nx\r\n--XyZ--\r\n",
            400,
            "malformed multipart",
        ),
        (b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--\r\n", 400, "no Content-Disposition"),
        (TRUNCATED, 400, "part 0 is not closed by the boundary"),
        (b"", 400, "the boundary never occurs"),
    ],
    ids=["broken-header", "no-name", "truncated", "empty"],
)
def test_malformed_multipart_gets_a_4xx_naming_the_problem(
    client: TestClient, body: bytes, status: int, fragment: str
) -> None:
    r = client.post("/denoise", content=body, headers={"content-type": CT})
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_multipart_without_boundary_is_400(client: TestClient) -> None:
    r = client.post("/denoise", content=b"x", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and "boundary" in r.json()["detail"]


def test_text_value_in_the_file_field_is_422(client: TestClient) -> None:
    r = client.post("/denoise", content=_body(("file", None, None, b"hello")), headers={"content-type": CT})
    assert r.status_code == 422 and "must be a file upload" in r.json()["detail"]


def test_extra_text_fields_are_ignored(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    png = png_bytes(digits[1][0])
    body = _body(("comment", None, None, b"hi"), ("file", "d.png", "image/png", png), ("x", None, None, b"y"))
    with_fields = client.post("/denoise", content=body, headers={"content-type": CT})
    plain = client.post("/denoise", files={"file": ("d.png", png, "image/png")})
    assert with_fields.status_code == plain.status_code == 200
    assert with_fields.content == plain.content


def test_batch_over_the_part_limit_is_422_naming_the_setting(client: TestClient) -> None:
    limit = client.app.state.service.settings.max_batch_items  # type: ignore[attr-defined]
    body = _body(*[("files", f"{i}.png", "image/png", b"x") for i in range(limit + 40)])
    r = client.post("/denoise/batch", content=body, headers={"content-type": CT})
    assert r.status_code == 422 and "AE_MAX_BATCH_ITEMS" in r.json()["detail"]


def _reference(body: bytes, boundary: bytes) -> list[tuple[str, str | None, str | None, bytes]]:
    """python-multipart's own parser (what Starlette uses), for comparison."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    parts: list[tuple[str, str | None, str | None, bytes]] = []
    headers: dict[bytes, bytes] = {}
    name, value, data = bytearray(), bytearray(), bytearray()

    def header_end() -> None:
        headers[bytes(name).lower()] = bytes(value)
        name.clear()
        value.clear()

    def part_end() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        media = headers.get(b"content-type")
        filename = options.get(b"filename")
        parts.append(
            (
                options[b"name"].decode(),
                None if filename is None else filename.decode(),
                None if media is None else media.decode(),
                bytes(data),
            )
        )
        headers.clear()
        data.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": lambda d, s, e: name.extend(d[s:e]),
            "on_header_value": lambda d, s, e: value.extend(d[s:e]),
            "on_header_end": header_end,
            "on_part_data": lambda d, s, e: data.extend(d[s:e]),
            "on_part_end": part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return parts


_names = st.text(st.characters(codec="ascii", exclude_characters='"\\\r\n'), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            _names,
            st.one_of(st.none(), _names),
            st.sampled_from([None, "image/png", "application/octet-stream", "text/plain; charset=utf-8"]),
            st.binary(max_size=300),
        ),
        min_size=1,
        max_size=6,
    ),
    st.binary(max_size=20).filter(lambda b: b"--" not in b and b"\r" not in b),
)
def test_agrees_with_python_multipart_on_any_well_formed_body(
    parts: list[tuple[str, str | None, str | None, bytes]], preamble: bytes
) -> None:
    boundary = b"Bnd7f3a9e"
    body = preamble + b"\r\n" if preamble else b""
    for name, filename, media, data in parts:
        body += b"--" + boundary + b"\r\n"
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"Content-Disposition: {disposition}\r\n".encode()
        if media:
            body += f"Content-Type: {media}\r\n".encode()
        body += b"\r\n" + data + b"\r\n"
    body += b"--" + boundary + b"--\r\nepilogue"
    if boundary in body[: -len(b"--\r\nepilogue")].replace(b"--" + boundary, b""):
        return  # a payload that contains the boundary is not a well-formed body
    ours = parse_multipart(body, f"multipart/form-data; boundary={boundary.decode()}", max_parts=10)
    expected = [(n, f or None, m, d) for n, f, m, d in parts]
    assert [(p.name, p.filename, p.content_type, p.data) for p in ours] == expected
    if not preamble:  # python-multipart requires the body to open with the boundary
        assert _reference(body, boundary) == expected
