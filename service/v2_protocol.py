"""Open Inference Protocol v2 (KServe / Triton HTTP) bodies: inference requests in, responses out.

Knows neither FastAPI nor ONNX. Implements the JSON tensor form and the binary tensor data
extension: when ``Inference-Header-Content-Length`` is present, the body is that many bytes of JSON
followed by the raw tensors (little-endian, row major) in input order, each sized by its
``binary_data_size`` parameter. Outputs go back as binary when asked for by ``binary_data`` on an
output or ``binary_data_output`` on the request, else as JSON ``data``.

Every fault raises :class:`ProtocolError` with its status: 400 when the body is not a well-formed
inference request, 413/415 for the body's encoding, 422 when a well-formed request does not fit the
graph it names (tensor name, datatype, shape, values).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field, StrictInt, ValidationError

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_SIZE = "binary_data_size"
FP32 = "FP32"
_FP32_BYTES = 4
# Parameters of other extensions (shared memory, classification) that this server does not implement.
_UNSUPPORTED = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset", "classification")


class ProtocolError(Exception):
    """A request the protocol layer refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TensorMeta:
    """A graph input or output as the protocol describes it; ``-1`` marks the batch axis."""

    name: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": FP32, "shape": list(self.shape)}


Dim = Annotated[StrictInt, Field(ge=0)]


class RequestInput(BaseModel):
    name: str
    shape: list[Dim]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


@dataclass(frozen=True)
class Tensor:
    """One decoded input: float64 values with the shape the request declared."""

    name: str
    datatype: str
    values: np.ndarray


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` gzip or deflate (tritonclient offers both), at most ``limit`` bytes out."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    # gzip: a gzip header (wbits 16+); deflate: the zlib format, as HTTP means it and tritonclient sends.
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise ProtocolError(415, f"unsupported Content-Encoding {encoding!r}: use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits)
    try:
        # max_length bounds the output: a small compressed body cannot inflate past the upload limit.
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(400, f"the {encoding} body cannot be decompressed ({exc})") from None
    if len(out) > limit:
        raise ProtocolError(413, f"the decompressed body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise ProtocolError(400, f"the {encoding} body is truncated")
    return out


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not text.isdigit() or int(text) > len(body):
        raise ProtocolError(
            400, f"{HEADER_LENGTH} is {header_length!r}; it must be the JSON length, at most {len(body)}"
        )
    return body[: int(text)], body[int(text) :]


def _validation_message(exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3]]
    return "not a valid inference request: " + "; ".join(parts)


def _refuse_unsupported(where: str, parameters: dict[str, Any]) -> None:
    used = [name for name in _UNSUPPORTED if name in parameters]
    if used:
        raise ProtocolError(400, f"{where}: parameters {used} belong to an extension this server lacks")


def _json_values(item: RequestInput) -> np.ndarray:
    where = f"input {item.name!r}"
    try:
        values = np.array(item.data)
    except ValueError:
        # Ragged nesting, or more than numpy's 64 dimensions.
        raise ProtocolError(400, f"{where}: data must be numbers, flat or nested to the shape") from None
    # Booleans, strings and nulls are not FP32 data (np.array would turn "1" or true into numbers).
    if values.dtype.kind not in "iuf":
        raise ProtocolError(400, f"{where}: data must hold numbers only")
    return values.astype(np.float64)


def _binary_values(item: RequestInput, raw: bytes) -> np.ndarray:
    if item.datatype != FP32:
        raise ProtocolError(422, f"input {item.name!r}: datatype {item.datatype}; this server takes {FP32}")
    return np.frombuffer(raw, dtype="<f4").astype(np.float64)


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, list[Tensor]]:
    """An inference request body (JSON, or JSON + binary tensors) → the request and its inputs."""
    head, binary = _split(body, header_length)
    try:
        document = json.loads(head)
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of more digits than Python converts
        raise ProtocolError(400, f"the inference request is not valid JSON ({exc})") from None
    except RecursionError:
        raise ProtocolError(400, "the inference request nests too deeply") from None
    try:
        request = InferenceRequest.model_validate(document)
    except ValidationError as exc:
        raise ProtocolError(400, _validation_message(exc)) from None
    _refuse_unsupported("request", request.parameters)
    tensors, offset = [], 0
    for item in request.inputs:
        where = f"input {item.name!r}"
        _refuse_unsupported(where, item.parameters)
        count = math.prod(item.shape)
        size = item.parameters.get(BINARY_SIZE)
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(400, f"{where}: {BINARY_SIZE} must be a non-negative integer")
            if item.data is not None:
                raise ProtocolError(400, f"{where}: has both {BINARY_SIZE} and JSON data")
            if offset + size > len(binary):
                raise ProtocolError(400, f"{where}: {BINARY_SIZE} runs past the end of the body")
            if item.datatype == FP32 and size != count * _FP32_BYTES:
                raise ProtocolError(
                    400, f"{where}: {size} bytes of binary data for shape {item.shape} ({count} FP32 values)"
                )
            values = _binary_values(item, binary[offset : offset + size])
            offset += size
        elif item.data is None:
            raise ProtocolError(400, f"{where}: no data (send JSON data or {BINARY_SIZE} + binary data)")
        else:
            values = _json_values(item)
            if values.size != count:
                raise ProtocolError(400, f"{where}: {values.size} values for shape {item.shape} ({count})")
        tensors.append(Tensor(item.name, item.datatype, values.reshape(item.shape)))
    if offset != len(binary):
        raise ProtocolError(400, f"{len(binary) - offset} bytes of binary data after the last input's")
    return request, tensors


def check_input(tensors: list[Tensor], meta: TensorMeta) -> np.ndarray:
    """The one input of a graph (float64, the declared shape), or 422 naming what does not fit.

    Only names, datatype and shape: the batch limit and the values are checked by the service's
    intake (service/intake.py), as for every other input.
    """
    if len(tensors) != 1 or tensors[0].name != meta.name:
        names = [t.name for t in tensors]
        raise ProtocolError(422, f"inputs {names}; this model takes exactly one input, {meta.name!r}")
    tensor = tensors[0]
    expected = f"{FP32} {list(meta.shape)}"
    if tensor.datatype != FP32:
        raise ProtocolError(422, f"input {meta.name!r}: datatype {tensor.datatype}; expected {expected}")
    shape = tensor.values.shape
    if len(shape) != len(meta.shape) or shape[1:] != meta.shape[1:]:
        raise ProtocolError(422, f"input {meta.name!r}: shape {list(shape)}; expected {expected}")
    return tensor.values


def wants_binary(request: InferenceRequest, output: TensorMeta) -> bool:
    """Whether to send the graph's output as binary data; 422 for an output the graph does not have."""
    default = request.parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise ProtocolError(400, "parameter binary_data_output must be true or false")
    binary = default
    for item in request.outputs or ():
        if item.name != output.name:
            raise ProtocolError(422, f"output {item.name!r}: this model has one output, {output.name!r}")
        _refuse_unsupported(f"output {item.name!r}", item.parameters)
        binary = item.parameters.get("binary_data", default)
        if not isinstance(binary, bool):
            raise ProtocolError(400, f"output {item.name!r}: parameter binary_data must be true or false")
    return binary


def encode_response(
    model_name: str,
    version: str,
    request_id: str | None,
    output: TensorMeta,
    values: np.ndarray,
    *,
    binary: bool,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (``Inference-Header-Content-Length`` for binary).

    ``parameters`` become the response's ``parameters`` object (the out-of-distribution scores).
    """
    data = np.ascontiguousarray(values, dtype="<f4")
    tensor: dict[str, Any] = {"name": output.name, "datatype": FP32, "shape": list(data.shape)}
    if binary:
        tensor["parameters"] = {BINARY_SIZE: data.nbytes}
    else:
        tensor["data"] = data.reshape(-1).tolist()
    document: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": [tensor]}
    if request_id is not None:
        document["id"] = request_id
    if parameters:
        document["parameters"] = parameters
    head = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    if not binary:
        return head, {}
    return head + data.tobytes(), {HEADER_LENGTH: str(len(head))}
