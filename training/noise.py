"""Noise models: one definition each, in torch (training) and numpy (evaluation, seeded Generator).

Every corruption in this package, training's, the evaluation's, the baselines' and the code range's,
is computed here; training/protocol.py names the levels and seeds the evaluation uses.

Every kind corrupts a clean image ``x`` in [0, 1] and clips the result to [0, 1]; its *level* is the
kind's natural parameter:

| kind | level | noisy image |
|---|---|---|
| ``gaussian`` | std ``s`` | ``clip(x + s·N(0, 1))``, the evaluation protocol's corruption |
| ``salt-pepper`` | fraction ``p`` | each pixel, with probability ``p``, replaced by 0 or 1 (even odds) |
| ``poisson`` | peak ``k`` | ``clip(Poisson(k·x) / k)``: shot noise, mean ``x``, variance ``x / k`` |
| ``speckle`` | std ``s`` | ``clip(x · (1 + s·N(0, 1)))``: multiplicative, variance ``s²·x²`` |
| ``mixed`` | - | one of the four per image (even odds), at a level from that kind's default range |

Training draws a level per image from ``[low, high]``: uniformly, except ``poisson``, whose peak is
drawn log-uniformly (its noise scales as ``1/sqrt(k)``, so a uniform peak would be almost all quiet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Kind = Literal["gaussian", "salt-pepper", "poisson", "speckle"]
KINDS: tuple[Kind, ...] = ("gaussian", "salt-pepper", "poisson", "speckle")
NOISES: tuple[str, ...] = (*KINDS, "mixed")


@dataclass(frozen=True)
class NoiseSpec:
    """A kind's level: what it is called, the default training range, the evaluation levels."""

    kind: Kind
    level_name: str
    default_range: tuple[float, float]
    # Ordered from the least to the most noisy (poisson: decreasing peak).
    eval_levels: tuple[float, ...]
    val_levels: tuple[float, ...]
    log_uniform: bool = False

    def describe(self, low: float, high: float) -> str:
        if low == high:
            return f"{self.kind} at {self.level_name} {low:g}"
        draw = "log-uniform" if self.log_uniform else "uniform"
        return f"{self.kind} with {self.level_name} ~ {draw}[{low:g}, {high:g}]"


SPECS: dict[Kind, NoiseSpec] = {
    "gaussian": NoiseSpec(
        "gaussian", "s", (0.0, 0.6), (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6), (0.05, 0.1, 0.3, 0.6)
    ),
    "salt-pepper": NoiseSpec(
        "salt-pepper", "p", (0.0, 0.3), (0.01, 0.02, 0.05, 0.1, 0.2, 0.3), (0.02, 0.1, 0.3)
    ),
    "poisson": NoiseSpec(
        "poisson", "peak", (2.0, 100.0), (100.0, 50.0, 20.0, 10.0, 5.0, 2.0), (50.0, 10.0, 2.0), True
    ),
    "speckle": NoiseSpec("speckle", "s", (0.0, 1.0), (0.1, 0.2, 0.3, 0.5, 0.7, 1.0), (0.2, 0.5, 1.0)),
}


def kinds_of(noise: str) -> tuple[Kind, ...]:
    """The kinds a model trained with ``noise`` has seen (``mixed``: all four)."""
    if noise == "mixed":
        return KINDS
    if noise not in SPECS:
        raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISES)}")
    return (noise,)  # checked just above: a Kind


def check_range(noise: str, low: float, high: float) -> None:
    """ValueError with a message a user can act on when [low, high] is no valid level range."""
    if noise == "mixed":
        return
    spec = SPECS[kinds_of(noise)[0]]
    if low > high:
        raise ValueError(f"--noise-min {low:g} is above --noise-max {high:g}")
    if noise == "salt-pepper" and not 0 <= low <= high <= 1:
        raise ValueError("salt-pepper levels are fractions of pixels: 0 <= --noise-min <= --noise-max <= 1")
    if noise == "poisson" and low <= 0:
        raise ValueError("poisson levels are peaks (photons at full white): --noise-min must be > 0")
    if low < 0:
        raise ValueError(f"{noise} levels ({spec.level_name}) must be >= 0")


def describe(noise: str, low: float, high: float) -> str:
    if noise == "mixed":
        parts = [SPECS[k].describe(*SPECS[k].default_range) for k in KINDS]
        return "mixed (one per image: " + "; ".join(parts) + ")"
    return SPECS[kinds_of(noise)[0]].describe(low, high)


def card_entry(
    noise: str, low: float, high: float, light_fraction: float = 0.0, light_max: float = 0.15
) -> dict[str, object]:
    """What the card (and GET /models) says about the noise a model was made for.

    ``light_fraction`` of the images drew their level from [low, light_max] instead (training's
    ``--low-noise-fraction``); the card says so.
    """
    ranges = {
        kind: list(SPECS[kind].default_range if noise == "mixed" else (low, high)) for kind in kinds_of(noise)
    }
    entry: dict[str, object] = {
        "kind": noise,
        "kinds": list(kinds_of(noise)),
        "levels": {kind: {"name": SPECS[kind].level_name, "range": ranges[kind]} for kind in ranges},
        "description": describe(noise, low, high),
    }
    if light_fraction:
        entry["light_fraction"] = light_fraction
        entry["light_range"] = [low, min(light_max, high)]
        entry["description"] = (
            f"{entry['description']}, {light_fraction:.0%} of the images from uniform[{low:g}, "
            f"{min(light_max, high):g}] instead"
        )
    return entry


# ---------------------------------------------------------------------------------------------
# numpy (evaluation, baselines): levels are a scalar or one per image.


def _per_image(level: float | np.ndarray, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(level, dtype=np.float64), (n,)).reshape(n, *([1] * 2))


def apply_numpy(kind: Kind, x: np.ndarray, level: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Corrupt ``x`` ``[n, h, w]`` (or ``[h, w]``) in [0, 1]; float32 in [0, 1]."""
    squeeze = x.ndim == 2
    batch = x[None] if squeeze else x
    lv = _per_image(level, len(batch))
    if kind == "gaussian":
        noisy = batch + lv * rng.standard_normal(batch.shape)
    elif kind == "salt-pepper":
        hit = rng.random(batch.shape) < lv
        salt = rng.random(batch.shape) < 0.5
        noisy = np.where(hit, salt.astype(batch.dtype), batch)
    elif kind == "poisson":
        noisy = rng.poisson(np.clip(batch, 0, 1) * lv) / lv
    elif kind == "speckle":
        noisy = batch * (1.0 + lv * rng.standard_normal(batch.shape))
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    out = np.clip(noisy, 0.0, 1.0).astype(np.float32)
    return out[0] if squeeze else out


def noisy_numpy(kind: Kind, clean: np.ndarray, level: float, seed: int) -> np.ndarray:
    """The evaluation input: one draw from a fresh ``default_rng(seed)`` over the whole array.

    For ``gaussian`` this is the protocol's corruption (training/protocol.py, docs/evaluation/README.md).
    """
    return apply_numpy(kind, clean, level, np.random.default_rng(seed))


# ---------------------------------------------------------------------------------------------
# torch (training): x is [n, 1, h, w]; levels are drawn per image from the range.


def draw_levels(kind: Kind, n: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    """``[n, 1, 1, 1]`` levels in [low, high]: uniform, or log-uniform for poisson."""
    u = torch.rand(n, 1, 1, 1, generator=gen)
    if SPECS[kind].log_uniform and low > 0:
        return torch.exp(math.log(low) + (math.log(high) - math.log(low)) * u)
    return low + (high - low) * u


def apply_torch(kind: Kind, x: Tensor, level: Tensor, gen: torch.Generator) -> Tensor:
    """Corrupt ``x`` ``[n, 1, h, w]`` with per-image ``level`` ``[n, 1, 1, 1]``; the numpy twin's law."""
    if kind == "gaussian":
        noisy = x + level * torch.randn(x.shape, generator=gen)
    elif kind == "salt-pepper":
        hit = torch.rand(x.shape, generator=gen) < level
        salt = (torch.rand(x.shape, generator=gen) < 0.5).to(x.dtype)
        noisy = torch.where(hit, salt, x)
    elif kind == "poisson":
        noisy = torch.poisson(x.clamp(0, 1) * level, generator=gen) / level
    elif kind == "speckle":
        noisy = x * (1.0 + level * torch.randn(x.shape, generator=gen))
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return torch.clamp(noisy, 0.0, 1.0)


def corrupt(
    x: Tensor,
    noise: str,
    low: float,
    high: float,
    gen: torch.Generator,
    light_fraction: float = 0.0,
    light_max: float = 0.15,
) -> Tensor:
    """One training corruption of the batch ``x`` ``[n, 1, h, w]``: a fresh level per image.

    ``mixed`` draws a kind per image, then a level from that kind's default range; every kind is
    computed for the whole batch and the image's own is kept, so the draws do not depend on the mix.
    ``light_fraction`` (Gaussian only) of the images draw their level from ``[low, light_max]``
    instead: more practice at the light noise where full-resolution detail decides the score.
    """
    if noise == "gaussian" and light_fraction:
        u = torch.rand(x.shape[0], 1, 1, 1, generator=gen)
        light = torch.rand(x.shape[0], 1, 1, 1, generator=gen) < light_fraction
        top = torch.where(light, torch.full_like(u, min(light_max, high)), torch.full_like(u, high))
        return apply_torch("gaussian", x, low + (top - low) * u, gen)
    if noise != "mixed":
        kind = kinds_of(noise)[0]
        return apply_torch(kind, x, draw_levels(kind, len(x), low, high, gen), gen)
    if light_fraction:
        raise ValueError("a light-noise fraction applies to gaussian noise only")
    choice = torch.randint(0, len(KINDS), (len(x),), generator=gen)
    out = torch.empty_like(x)
    for i, kind in enumerate(KINDS):
        candidate = apply_torch(kind, x, draw_levels(kind, len(x), *SPECS[kind].default_range, gen), gen)
        mask = choice == i
        out[mask] = candidate[mask]
    return out
