"""GET /models and /models/{model_id}: the cards of the loaded models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.deps import ReadyState
from service.registry import Model, Registry
from service.schemas import ErrorResponse

router = APIRouter(tags=["models"])


def card_view(model: Model, registry: Registry) -> dict[str, Any]:
    """The card as shipped, plus where it runs and which routes get it when a request names none.

    ``default_for`` lists those routes; ``default`` says whether it is the ``/denoise`` default.
    """
    default_for = []
    if model.id == registry.default_model:
        default_for.append("denoise")
    if model.id == registry.default_code_model:
        default_for += ["encode", "decode"]
    return {
        **model.card,
        "provider": model.provider,
        "default": model.id == registry.default_model,
        "default_for": default_for,
    }


@router.get("/models", summary="The cards of every loaded model")
async def list_models(state: ReadyState) -> list[dict[str, Any]]:
    registry = state.registry
    return [card_view(model, registry) for model in registry]


@router.get("/models/{model_id}", responses={404: {"model": ErrorResponse}}, summary="One model's card")
async def get_model(model_id: str, state: ReadyState) -> dict[str, Any]:
    registry = state.registry
    return card_view(registry.get(model_id), registry)
