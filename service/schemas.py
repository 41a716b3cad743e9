"""Request and response bodies of the JSON endpoints (they also document the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class OodScore(BaseModel):
    """How far the input is from what the model was trained on (docs/api.md, "Out-of-distribution score")."""

    percentile: float = Field(
        description="percentile of the input's score among the model's validation images "
        "(all noise levels); 100 past every one of them",
        examples=[42.5],
    )
    in_distribution: bool = Field(description="false when the percentile is past the threshold")
    threshold: float = Field(description="the percentile past which the card calls an input an outsider")


class PixelsResponse(BaseModel):
    """An image as floats in [0, 1], rows of columns."""

    model: str = Field(description="id of the model that produced it")
    shape: list[int] = Field(examples=[[28, 28]])
    pixels: list[list[float]]
    ood: OodScore | None = Field(None, description="absent for a model whose card has no calibration")


class CodeResponse(BaseModel):
    """A latent code, flattened in C order; ``shape`` is the model's code shape."""

    model: str
    shape: list[int] = Field(examples=[[16, 4, 4]])
    code: list[float]
    ood: OodScore | None = Field(None, description="absent for a model whose card has no calibration")


class OodRefusal(BaseModel):
    """422 for ``reject_ood=true`` when an input is past the model's threshold."""

    detail: str
    ood: list[OodScore] = Field(description="one score per input, in order")
    outsiders: list[int] = Field(description="indices of the inputs past the threshold")


class DecodeRequest(BaseModel):
    """One code, flat (``prod(shape)`` numbers) or nested with the model's code shape."""

    model: str | None = Field(None, description="model id; the default model when absent")
    code: list[Any] = Field(description="numbers, flat or nested to the code shape")


class DecodeBatchRequest(BaseModel):
    """Several codes for one model, each flat or nested."""

    model: str | None = None
    codes: list[list[Any]] = Field(min_length=1)


class ReadyResponse(BaseModel):
    status: str = Field(examples=["ready"])
    provider: str = Field(description="the execution provider of the default model")
    providers: list[str]
    models: dict[str, str] = Field(description="model id → execution provider")


class StatusResponse(BaseModel):
    status: str


class ErrorResponse(BaseModel):
    detail: Any


class ReloadResponse(BaseModel):
    status: str = Field(examples=["reloaded"])
    generation: int = Field(description="1 for the models loaded at start-up, one more per successful reload")
    models: list[str] = Field(description="the model ids now served")
    seconds: float = Field(description="time taken to load, check and warm up the new models")
