"""Out-of-distribution scores on the answers: one call per request, and how an answer shows them.

The scoring itself is ``contract.ood`` with the model's calibration (its card's ``ood`` block,
loaded with the model). A handler calls :func:`score` once with what it computed (the output of the
autoencoder graph, or the code); the view (``denoise`` or ``encode``) may need the other one, which
:func:`score` runs through the same batcher. docs/api.md, "Out-of-distribution score", is the
reference for clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.ood import Scores
from service.registry import AUTOENCODER, ENCODER, Model
from service.state import ServiceState

PERCENTILE_HEADER = "X-OOD-Percentile"
FLAG_HEADER = "X-In-Distribution"
THRESHOLD_HEADER = "X-OOD-Threshold"
REJECT_PARAMETER = "reject_ood"


@dataclass(frozen=True)
class Outcome:
    """A batch's scores and the model that gave them (for the words of a refusal)."""

    model: Model
    view: str
    scores: Scores

    def field(self, i: int = 0) -> dict[str, Any]:
        """The JSON form for image ``i``: ``{"percentile", "in_distribution", "threshold"}``."""
        return {
            "percentile": round(float(self.scores.percentile[i]), 2),
            "in_distribution": bool(self.scores.in_distribution[i]),
            "threshold": self.scores.threshold,
        }

    def headers(self, i: int = 0) -> dict[str, str]:
        """Response headers for an image body (a PNG has no room for the score)."""
        return {
            PERCENTILE_HEADER: f"{float(self.scores.percentile[i]):.2f}",
            FLAG_HEADER: "true" if self.scores.in_distribution[i] else "false",
            THRESHOLD_HEADER: f"{self.scores.threshold:g}",
        }

    def parameters(self) -> dict[str, Any]:
        """The Open Inference Protocol response's ``parameters``: one entry per input, in order."""
        return {
            "ood_percentile": [round(float(p), 2) for p in self.scores.percentile],
            "in_distribution": [bool(f) for f in self.scores.in_distribution],
            "ood_threshold": self.scores.threshold,
        }

    @property
    def outsiders(self) -> list[int]:
        """Indices of the images past the threshold."""
        return [int(i) for i in np.flatnonzero(~self.scores.in_distribution)]

    def refusal(self) -> dict[str, Any]:
        """The 422 body for ``reject_ood=true`` when some image is past the threshold."""
        worst = int(np.argmax(self.scores.percentile))
        words = "does not look like" if len(self.scores) == 1 else "has images that do not look like"
        return {
            "detail": (
                f"the input {words} what model {self.model.id!r} was trained on "
                f"({self.model.card.get('dataset')}): percentile {float(self.scores.percentile[worst]):.2f} "
                f"of its validation images, past the {self.scores.threshold:g}th (reject_ood=true)"
            ),
            "ood": [self.field(i) for i in range(len(self.scores))],
            "outsiders": self.outsiders,
        }


async def score(
    state: ServiceState,
    model: Model,
    view: str,
    images: np.ndarray,
    *,
    outputs: np.ndarray | None = None,
    codes: np.ndarray | None = None,
    scores: Scores | None = None,
) -> Outcome | None:
    """Score a request's images (``[n, 1, 28, 28]``), or None when the model has no calibration
    for the view or AE_OOD_SCORES is off. Runs the graph the view needs and the request did not
    (the encoder for a ``denoise`` view over the code, the autoencoder for an ``encode`` view).
    ``scores``: what the request's batch already computed and counted in the metrics
    (``ServiceState.infer_scored``); scores computed here are counted here."""
    calibration = model.ood
    if calibration is None or view not in calibration.block["views"] or not state.settings.ood_scores:
        return None
    if scores is None:
        needs = calibration.needs(view)
        if "code" in needs and codes is None:
            codes = await state.infer(model, ENCODER, images)
        if "output" in needs and outputs is None:
            outputs = await state.infer(model, AUTOENCODER, images)
        scores = calibration.score(view, images, outputs=outputs, codes=codes)
        state.metrics.ood_observer(model.id, view)(scores.percentile)
    return Outcome(model, view, scores)
