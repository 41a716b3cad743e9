"""The models the service serves: reads ``models/``, checks each one against the artifact contract.

docs/architecture.md is the contract, and contract/card.py checks it (the same code that export
writes cards through): ``models/<id>/card.json`` names the graphs, their sha256 and the code shape;
every graph has one float32 input and one float32 output with fixed names and shapes and a dynamic
batch axis. A directory that breaks it is skipped at start-up with one log line naming the file
(the others are served) and refused by a reload, so a broken model never turns into 500s at request
time; start-up fails if no model loads or a configured default is missing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import ood
from contract.card import AUTOENCODER as AUTOENCODER  # the roles, re-exported for the routes
from contract.card import DECODER as DECODER
from contract.card import ENCODER as ENCODER
from contract.card import CardError, check_metadata, graph_io, graph_path, read_card
from service.inference import (
    CPU,
    CUDA,
    INT8_DOT_PRODUCT_FLAGS,
    Device,
    GraphSession,
    InferenceError,
    TensorSpec,
    int8_dot_products,
    select_providers,
    session_options,
)

logger = logging.getLogger(__name__)

_FLOAT = "tensor(float)"


class ModelError(Exception):
    """A model directory breaks the artifact contract; the message names the file."""


class UnknownModel(LookupError):
    """A request named a model the registry does not hold."""

    def __init__(self, model_id: str, known: list[str]) -> None:
        super().__init__(f"unknown model {model_id!r}; known models: {', '.join(known)}")
        self.model_id = model_id
        self.known = known


@dataclass(frozen=True)
class Model:
    """One loaded model: its card as shipped and one session per graph."""

    id: str
    arch: str
    code_shape: tuple[int, ...] | None
    card: dict[str, Any]
    graphs: dict[str, GraphSession]
    # The out-of-distribution calibration (card["ood"] and ood.npz), None for an uncalibrated model.
    ood: ood.Calibration | None = None
    # Whether graphs["autoencoder"] is the calibration's scored graph (contract.ood, "The scored
    # graph"): the same first output, then the denoise view's percentile.
    scored: bool = False

    @property
    def has_code(self) -> bool:
        """Whether the model has encoder and decoder graphs (every arch but ``unet``)."""
        return self.code_shape is not None

    @property
    def code_size(self) -> int:
        return math.prod(self.code_shape) if self.code_shape is not None else 0

    @property
    def provider(self) -> str:
        return self.graphs[AUTOENCODER].provider

    @property
    def code_limits(self) -> tuple[float, float] | None:
        """The codes the decoder takes: the card's ``code_range`` widened by its width on each side.

        Room to interpolate and edit codes, while a value far beyond what training produced (where
        the decoder may overflow) is refused. None when the card records no range.
        """
        recorded = self.card.get("code_range")
        if recorded is None:
            return None
        low, high = float(recorded["min"]), float(recorded["max"])
        width = high - low
        return low - width, high + width


class Registry:
    """The loaded models by id, plus the two defaults; read-only once built.

    ``default_model`` is what ``/denoise`` gets when it names no model, ``default_code_model`` what
    ``/encode`` and ``/decode`` get; it must have a code. ``None`` (``AE_DEFAULT_CODE_MODEL=none``):
    there is no default for them, and a request must name its model (a models folder of codeless
    denoisers only).
    """

    def __init__(
        self, models: dict[str, Model], default_model: str, default_code_model: str | None = None
    ) -> None:
        loaded = ", ".join(models)
        if default_model not in models:
            raise ModelError(
                f"AE_DEFAULT_DENOISE_MODEL={default_model!r} is not among the loaded models ({loaded})"
            )
        if default_code_model is not None:
            if default_code_model not in models:
                raise ModelError(
                    f"AE_DEFAULT_CODE_MODEL={default_code_model!r} is not among the loaded models "
                    f"({loaded}); set it to one of them, or to none"
                )
            if not models[default_code_model].has_code:
                with_codes = ", ".join(m.id for m in models.values() if m.has_code) or "none"
                raise ModelError(
                    f"AE_DEFAULT_CODE_MODEL={default_code_model!r} has no latent code (arch "
                    f"{models[default_code_model].arch}); models with codes: {with_codes}"
                )
        self._models = dict(sorted(models.items()))
        self.default_model = default_model
        self.default_code_model = default_code_model

    def no_code_reason(self, model_id: str | None) -> str | None:
        """Why ``/encode`` or ``/decode`` cannot use ``model_id`` (None: the default); None when it can."""
        with_codes = ", ".join(self.with_codes()) or "none (every model here is a codeless denoiser)"
        if model_id is None and self.default_code_model is None:
            return (
                "no default model for codes (AE_DEFAULT_CODE_MODEL=none): name one with ?model=; "
                f"models with codes: {with_codes}"
            )
        model = self.get(model_id if model_id is not None else self.default_code_model)
        if model.has_code:
            return None
        return (
            f"model {model.id!r} (arch {model.arch}) has no latent code, so it cannot encode or decode; "
            f"models with codes: {with_codes}"
        )

    def get(self, model_id: str | None = None) -> Model:
        """The model called ``model_id`` (the default when None); :class:`UnknownModel` otherwise."""
        key = self.default_model if model_id is None else model_id
        try:
            return self._models[key]
        except KeyError:
            raise UnknownModel(key, self.ids) from None

    @property
    def ids(self) -> list[str]:
        return list(self._models)

    def with_codes(self) -> list[str]:
        """Ids of the models that have encoder/decoder graphs."""
        return [m.id for m in self._models.values() if m.has_code]

    @property
    def providers(self) -> list[str]:
        """Every execution provider in use, without repeats."""
        return sorted({g.provider for m in self for g in m.graphs.values()})

    def __iter__(self) -> Iterator[Model]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)


def _check_tensor(path: Path, what: str, specs: list[TensorSpec], name: str, dims: tuple[int, ...]) -> None:
    if len(specs) != 1:
        raise ModelError(f"{path}: expected exactly one {what}, found {[s.name for s in specs]}")
    spec = specs[0]
    want = f"{name!r} float32 [batch, {', '.join(map(str, dims))}]"
    batch_is_dynamic = bool(spec.shape) and not isinstance(spec.shape[0], int)
    if spec.name != name or spec.dtype != _FLOAT or not batch_is_dynamic or tuple(spec.shape[1:]) != dims:
        raise ModelError(f"{path}: {what} is {spec.name!r} {spec.dtype} {list(spec.shape)}; expected {want}")


def _check_graph(
    path: Path, role: str, session: GraphSession, card: dict[str, Any], extras: tuple[str, ...] = ()
) -> None:
    """Names, shapes and metadata as the card says; ``extras``: the scored graph's extra outputs."""
    (in_name, in_dims), (out_name, out_dims) = graph_io(role, card["code_shape"])
    _check_tensor(path, "input", session.inputs, in_name, in_dims)
    _check_tensor(path, "output", session.outputs[:1], out_name, out_dims)
    extra = tuple(spec.name for spec in session.outputs[1:])
    if extra != extras:
        raise ModelError(f"{path}: outputs after {out_name!r} are {list(extra)}; expected {list(extras)}")
    try:
        check_metadata(path, session.metadata, card)
    except CardError as exc:
        raise ModelError(str(exc)) from None


def load_model(
    model_dir: Path,
    device: Device,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    *,
    scored: bool = True,
) -> Model:
    """Check one model directory against the contract and open a session per graph.

    ``scored`` (AE_OOD_SCORES): where the calibration has a scored graph, the autoencoder role runs
    that graph instead (its first output is the autoencoder's, from the same nodes), so that a
    batch's out-of-distribution percentiles come out of the same onnxruntime call."""
    try:
        card = read_card(model_dir)
    except CardError as exc:
        raise ModelError(str(exc)) from None
    try:
        providers = select_providers(device)
    except InferenceError as exc:
        raise ModelError(str(exc)) from exc
    try:
        calibration = ood.load(model_dir, card)
    except (ood.CalibrationError, OSError, KeyError, ValueError) as exc:
        raise ModelError(f"{model_dir}: out-of-distribution calibration unusable ({exc})") from exc
    scored_graph = calibration.graph if scored and calibration is not None else None
    if scored_graph is not None and scored_graph.stale:
        logger.warning(
            "model %s: not using its scored graph (numpy scores instead): %s", card["id"], scored_graph.stale
        )
        scored_graph = None
    options = session_options(intra_op_threads, inter_op_threads)
    graphs: dict[str, GraphSession] = {}
    for role in sorted(card["graphs"]):
        try:
            path = graph_path(model_dir, card, role)
        except CardError as exc:
            raise ModelError(str(exc)) from None
        extras: tuple[str, ...] = ()
        if role == AUTOENCODER and scored_graph is not None:
            path, extras = scored_graph.path, scored_graph.outputs
        try:
            session = GraphSession(path, providers, options)
        except InferenceError as exc:
            raise ModelError(str(exc)) from exc
        _check_graph(path, role, session, card, extras)
        if device == "cuda" and session.provider != CUDA:
            raise ModelError(f"{path}: AE_DEVICE=cuda but onnxruntime placed it on {session.provider}")
        graphs[role] = session
    code_shape = card["code_shape"]
    return Model(
        id=card["id"],
        arch=card["arch"],
        code_shape=tuple(code_shape) if code_shape is not None else None,
        card=card,
        graphs=graphs,
        ood=calibration,
        scored=scored_graph is not None,
    )


def load_registry(
    models_dir: Path,
    default_model: str,
    default_code_model: str | None = None,
    device: Device = "auto",
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    *,
    strict: bool = False,
    scored: bool = True,
) -> Registry:
    """Load every ``models_dir/<id>/`` (hidden entries, such as an export's temp dir, are skipped).

    A directory that breaks the contract is skipped with one log line naming it and why, and the
    others are served; ``strict`` (a reload) raises :class:`ModelError` naming it instead, so the
    models already serving stay. Either way a registry without any model, or without a configured
    default, is a :class:`ModelError`.
    """
    if not models_dir.is_dir():
        raise ModelError(f"{models_dir}: models directory does not exist (set AE_MODELS_DIR)")
    dirs = sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not dirs:
        raise ModelError(f"{models_dir}: no model directories found")
    models: dict[str, Model] = {}
    skipped: list[str] = []
    for model_dir in dirs:
        try:
            model = load_model(model_dir, device, intra_op_threads, inter_op_threads, scored=scored)
        except ModelError as exc:
            if strict:
                raise
            logger.error("skipping model directory %s: %s", model_dir, exc)
            skipped.append(f"{model_dir.name} ({exc})")
            continue
        models[model.id] = model
        logger.info("loaded model %s (%s) on %s", model.id, ", ".join(model.graphs), model.provider)
        if "quantization" in model.card and model.provider == CPU and int8_dot_products() is False:
            logger.warning(
                "model %s is int8, and this CPU has no 8-bit dot-product instructions (%s): it runs "
                "no faster here than its float model %s",
                model.id,
                ", ".join(sorted(INT8_DOT_PRODUCT_FLAGS)),
                model.card["quantization"].get("source", "?"),
            )
    if not models:
        raise ModelError(f"{models_dir}: no model loads; " + "; ".join(skipped))
    return Registry(models, default_model, default_code_model)
