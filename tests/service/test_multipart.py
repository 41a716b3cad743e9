"""The in-memory multipart parser, alone and through POST /denoise and /denoise/batch."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

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
def test_malformed_bodies_raise_or_yield_no_complete_part(body: bytes) -> None:
    try:
        parts = parse_multipart(body, CT, max_parts=4)
    except MultipartError:
        return
    assert parts == []  # a part never closed by its boundary is not handed out half-read


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (
            b"--XyZ\r\nContent-Disposition form-data broken\r\n\r\nx\r\n--XyZ--\r\n",
            400,
            "malformed multipart",
        ),
        (b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--\r\n", 400, "no Content-Disposition"),
        (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\ncut', 422, "no file"),
        (b"", 422, "no file field"),
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
