"""Open Inference Protocol v2 over HTTP (KServe / Triton REST), so that stock clients work.

Each model is exposed as up to three protocol models, one per graph:

- ``<id>``: the autoencoder, ``image`` FP32 ``[-1, 1, 28, 28]`` → ``denoised`` (every model);
- ``<id>.encoder``: ``image`` → ``code`` ``[-1, *code_shape]`` (models with a code);
- ``<id>.decoder``: ``code`` → ``image`` (models with a code).

Inference goes through the service's batchers (``ServiceState.infer``), so v2 requests batch with
``/denoise``, ``/encode`` and ``/decode`` and share their queue limits and metrics. Errors answer in
the protocol's ``{"error": "..."}`` form, whichever layer raised them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.responses import Response

from service import ood
from service.calls import Call, Reply
from service.core import WorkRoute
from service.deps import ReadyState, StateDep, require_api_key
from service.inference import TensorSpec
from service.registry import AUTOENCODER, DECODER, ENCODER, Model, Registry, UnknownModel
from service.routes._route import RequestOnlyRoute, endpoint
from service.v2_protocol import HEADER_LENGTH, ProtocolError, TensorMeta, encode_response, wants_binary

SERVER_NAME = "ae-denoise"
EXTENSIONS = ["binary_tensor_data"]
# Models are not versioned: the one version of each is "1".
VERSION = "1"
PLATFORM = "onnxruntime_onnx"
# Images are [0, 1] floats by the artifact contract; codes lie within the model's code limits.
_IMAGE_RANGE = (0.0, 1.0)


# Errors under /v2 are the protocol's {"error": ...} (service/errors.py decides by the path).
router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])
_protected = [Depends(require_api_key)]


class ProtocolErrorBody(BaseModel):
    """Every v2 failure: the protocol's error object."""

    error: str


def _documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the statuses a v2 route can answer, all with the protocol's error body."""
    return {code: {"model": ProtocolErrorBody} for code in codes}


@dataclass(frozen=True)
class Endpoint:
    """One protocol model: a graph of a loaded model and its input and output."""

    name: str
    model: Model
    graph: str
    input: TensorMeta
    output: TensorMeta

    @property
    def value_range(self) -> tuple[float, float] | None:
        return _IMAGE_RANGE if self.input.name == "image" else self.model.code_limits

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": PLATFORM,
            "inputs": [self.input.as_json()],
            "outputs": [self.output.as_json()],
        }


def _names(model: Model) -> dict[str, str]:
    """Protocol model name → graph role, for one model."""
    names = {model.id: AUTOENCODER}
    if model.has_code:
        names.update({f"{model.id}.{ENCODER}": ENCODER, f"{model.id}.{DECODER}": DECODER})
    return names


def protocol_names(registry: Registry) -> list[str]:
    """Every protocol model name the registry exposes."""
    return [name for model in registry for name in _names(model)]


def resolve(registry: Registry, name: str, version: str | None = None) -> Endpoint:
    """The protocol model called ``name``; 404 naming the known ones otherwise."""
    model_id, _, role = name.rpartition(".")
    try:
        model = registry.get(model_id if role in (ENCODER, DECODER) else name)
    except UnknownModel:
        model = None
    graph = _names(model).get(name) if model is not None else None
    if model is None or graph is None:
        raise ProtocolError(
            404, f"unknown model {name!r}; known models: {', '.join(protocol_names(registry))}"
        )
    if version not in (None, "", VERSION):
        raise ProtocolError(404, f"model {name!r} has no version {version!r}; its only version is {VERSION}")
    session = model.graphs[graph]
    return Endpoint(name, model, graph, _meta(session.inputs[0]), _meta(session.outputs[0]))


def _meta(spec: TensorSpec) -> TensorMeta:
    # The registry checked every tensor against the contract: a dynamic batch axis, then fixed dims.
    dims = [d for d in spec.shape[1:] if isinstance(d, int)]
    return TensorMeta(spec.name, (-1, *dims))


@router.get("", summary="Server metadata: name, version, protocol extensions")
async def server_metadata(request: Request) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": request.app.version, "extensions": EXTENSIONS}


@router.get("/health/live", summary="200 while the process is alive")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="200 once every model is loaded and warmed up; 503 before")
async def server_ready(state: StateDep) -> JSONResponse:
    if not state.ready:
        return JSONResponse({"ready": False}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"ready": True})


@router.get(
    "/models/{model_name}",
    dependencies=_protected,
    responses=_documented(401, 404, 503),
    summary="A model's inputs and outputs",
)
@router.get("/models/{model_name}/versions/{version}", dependencies=_protected, include_in_schema=False)
async def model_metadata(model_name: str, state: ReadyState, version: str | None = None) -> dict[str, Any]:
    return resolve(state.registry, model_name, version).metadata()


@router.get(
    "/models/{model_name}/ready",
    dependencies=_protected,
    responses=_documented(401, 404, 503),
    summary="200 when the model can infer",
)
@router.get("/models/{model_name}/versions/{version}/ready", dependencies=_protected, include_in_schema=False)
async def model_ready(model_name: str, state: ReadyState, version: str | None = None) -> dict[str, Any]:
    # Every graph loads and warms up before the service is ready, so a known model is ready then.
    return {"name": resolve(state.registry, model_name, version).name, "ready": True}


async def infer(call: Call) -> Reply:
    """Run a model on JSON or binary tensors."""
    state = call.state
    endpoint_ = resolve(state.registry, call.params["model_name"], call.params.get("version"))
    parsed, rows = state.intake.tensors(
        call.body,
        call.header("content-encoding"),
        call.header(HEADER_LENGTH.lower()),
        endpoint_.input,
        endpoint_.value_range,
    )
    binary = wants_binary(parsed, endpoint_.output)
    outputs, batch_scores = await state.infer_scored(endpoint_.model, endpoint_.graph, rows)
    scored = None
    if endpoint_.graph == AUTOENCODER:
        scored = await ood.score(
            state, endpoint_.model, "denoise", rows, outputs=outputs, scores=batch_scores
        )
    elif endpoint_.graph == ENCODER:
        scored = await ood.score(state, endpoint_.model, "encode", rows, codes=outputs)
    content, headers = encode_response(
        endpoint_.name,
        VERSION,
        parsed.id,
        endpoint_.output,
        outputs,
        binary=binary,
        parameters=scored.parameters() if scored is not None else None,
    )
    return Reply(content, "application/octet-stream" if binary else "application/json", headers)


WORK = [
    WorkRoute("POST", "/v2/models/{model_name}/infer", infer),
    WorkRoute("POST", "/v2/models/{model_name}/versions/{version}/infer", infer),
]

_NAME_PARAMETER = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_INFER_BODY: dict[str, Any] = {
    "parameters": [_NAME_PARAMETER],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}
_infer_route = endpoint(infer)
router.add_api_route(
    "/models/{model_name}/infer",
    _infer_route,
    methods=["POST"],
    route_class_override=RequestOnlyRoute,
    response_class=Response,
    responses=_documented(400, 401, 404, 413, 415, 422, 503),
    openapi_extra=_INFER_BODY,
    summary="Run a model on JSON or binary tensors",
)
router.add_api_route(
    "/models/{model_name}/versions/{version}/infer",
    _infer_route,
    methods=["POST"],
    route_class_override=RequestOnlyRoute,
    include_in_schema=False,
)
