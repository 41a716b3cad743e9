"""GET /models and /models/{model_id}: the cards of the loaded models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.deps import ReadyState
from service.registry import Model, Registry
from service.schemas import ErrorResponse

router = APIRouter(tags=["models"])


def card_view(model: Model, registry: Registry) -> dict[str, Any]:
    """The card as shipped, plus where it runs, which routes get it when a request names none, and
    the noise it was made for.

    ``default_for`` lists those routes; ``default`` says whether it is the ``/denoise`` default.
    """
    default_for = []
    if model.id == registry.default_model:
        default_for.append("denoise")
    if model.id == registry.default_code_model:
        default_for += ["encode", "decode"]
    return {
        **model.card,
        "noise": model.card.get("noise") or _gaussian_noise(model.card),
        "provider": model.provider,
        "default": model.id == registry.default_model,
        "default_for": default_for,
    }


def _gaussian_noise(card: dict[str, Any]) -> dict[str, Any] | None:
    """Cards written before noise models were recorded: Gaussian over the trained range of s."""
    train = (card.get("config") or {}).get("train") or {}
    if "noise_max" not in train:
        return None
    low, high = train.get("noise_min", 0.0), train["noise_max"]
    words = f"gaussian with s ~ uniform[{low:g}, {high:g}]" if low != high else f"gaussian at s {low:g}"
    return {
        "kind": "gaussian",
        "kinds": ["gaussian"],
        "levels": {"gaussian": {"name": "s", "range": [low, high]}},
        "description": words if high > 0 else "none (trained on clean images)",
    }


@router.get("/models", summary="The cards of every loaded model")
async def list_models(state: ReadyState) -> list[dict[str, Any]]:
    registry = state.registry
    return [card_view(model, registry) for model in registry]


@router.get("/models/{model_id}", responses={404: {"model": ErrorResponse}}, summary="One model's card")
async def get_model(model_id: str, state: ReadyState) -> dict[str, Any]:
    registry = state.registry
    return card_view(registry.get(model_id), registry)
