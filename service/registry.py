"""The models the service serves: reads ``models/``, checks each one against the artifact contract.

docs/architecture.md is the contract: ``models/<id>/card.json`` names the graphs, their sha256 and
the code shape; every graph has one float32 input and one float32 output with fixed names and
shapes and a dynamic batch axis. Any breach stops start-up with a :class:`ModelError` whose message
names the offending file, so a broken deployment never turns into 500s at request time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import ood
from service.inference import (
    CUDA,
    Device,
    GraphSession,
    InferenceError,
    TensorSpec,
    select_providers,
    session_options,
)

logger = logging.getLogger(__name__)

IMAGE_SHAPE = (1, 28, 28)
ENCODER, DECODER, AUTOENCODER = "encoder", "decoder", "autoencoder"
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
    ``/encode`` and ``/decode`` get; the latter must have a code.
    """

    def __init__(
        self, models: dict[str, Model], default_model: str, default_code_model: str | None = None
    ) -> None:
        loaded = ", ".join(models)
        if default_model not in models:
            raise ModelError(
                f"AE_DEFAULT_DENOISE_MODEL={default_model!r} is not among the loaded models ({loaded})"
            )
        # Named explicitly, the code default must exist and have a code; unnamed, it is the
        # /denoise default, and /encode and /decode answer 422 if that one has no code.
        if default_code_model is not None:
            if default_code_model not in models:
                raise ModelError(
                    f"AE_DEFAULT_CODE_MODEL={default_code_model!r} is not among the loaded models ({loaded})"
                )
            if not models[default_code_model].has_code:
                with_codes = ", ".join(m.id for m in models.values() if m.has_code) or "none"
                raise ModelError(
                    f"AE_DEFAULT_CODE_MODEL={default_code_model!r} has no latent code (arch "
                    f"{models[default_code_model].arch}); models with codes: {with_codes}"
                )
        self._models = dict(sorted(models.items()))
        self.default_model = default_model
        self.default_code_model = default_code_model or default_model

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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "card.json"
    if not path.is_file():
        raise ModelError(f"{path}: missing (every model directory needs a card.json)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(card, dict):
        raise ModelError(f"{path}: must hold a JSON object")
    for key, kind in (("id", str), ("arch", str), ("graphs", dict), ("sha256", dict)):
        if not isinstance(card.get(key), kind):
            raise ModelError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    if card["id"] != model_dir.name:
        raise ModelError(f"{path}: id {card['id']!r} differs from the directory name {model_dir.name!r}")
    code_shape = card.get("code_shape", "absent")
    if code_shape is not None and not (
        isinstance(code_shape, list)
        and code_shape
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in code_shape)
    ):
        raise ModelError(
            f"{path}: code_shape must be a list of positive integers or null, not {code_shape!r}"
        )
    code_range = card.get("code_range")
    if code_range is not None and not (
        isinstance(code_range, dict)
        and all(isinstance(code_range.get(k), int | float) for k in ("min", "max"))
        and math.isfinite(code_range["min"])
        and math.isfinite(code_range["max"])
        and code_range["min"] <= code_range["max"]
    ):
        raise ModelError(f"{path}: code_range must be {{'min': a, 'max': b}} with finite a <= b")
    expected = {AUTOENCODER} if code_shape is None else {ENCODER, DECODER, AUTOENCODER}
    if set(card["graphs"]) != expected:
        raise ModelError(
            f"{path}: graphs must be exactly {sorted(expected)} for code_shape {code_shape}, "
            f"not {sorted(card['graphs'])}"
        )
    return card


def _check_file(model_dir: Path, card: dict[str, Any], filename: object) -> Path:
    card_path = model_dir / "card.json"
    if not isinstance(filename, str) or Path(filename).name != filename or filename in ("", ".", ".."):
        raise ModelError(f"{card_path}: graph file name {filename!r} must be a plain file name")
    path = model_dir / filename
    if not path.is_file():
        raise ModelError(f"{path}: missing (named in {card_path})")
    expected = card["sha256"].get(filename)
    if not isinstance(expected, str):
        raise ModelError(f"{card_path}: no sha256 for {filename}")
    actual = _sha256(path)
    if actual != expected.lower():
        raise ModelError(f"{path}: sha256 mismatch (card.json says {expected}, the file has {actual})")
    return path


def _check_tensor(path: Path, what: str, specs: list[TensorSpec], name: str, dims: tuple[int, ...]) -> None:
    if len(specs) != 1:
        raise ModelError(f"{path}: expected exactly one {what}, found {[s.name for s in specs]}")
    spec = specs[0]
    want = f"{name!r} float32 [batch, {', '.join(map(str, dims))}]"
    batch_is_dynamic = bool(spec.shape) and not isinstance(spec.shape[0], int)
    if spec.name != name or spec.dtype != _FLOAT or not batch_is_dynamic or tuple(spec.shape[1:]) != dims:
        raise ModelError(f"{path}: {what} is {spec.name!r} {spec.dtype} {list(spec.shape)}; expected {want}")


def _check_graph(path: Path, role: str, session: GraphSession, card: dict[str, Any]) -> None:
    code = tuple(card["code_shape"] or ())
    io = {
        ENCODER: (("image", IMAGE_SHAPE), ("code", code)),
        DECODER: (("code", code), ("image", IMAGE_SHAPE)),
        AUTOENCODER: (("image", IMAGE_SHAPE), ("denoised", IMAGE_SHAPE)),
    }[role]
    _check_tensor(path, "input", session.inputs, *io[0])
    _check_tensor(path, "output", session.outputs, *io[1])
    meta = session.metadata
    if meta.get("model_id") != card["id"]:
        raise ModelError(
            f"{path}: metadata model_id is {meta.get('model_id')!r}; card.json says {card['id']!r}"
        )
    try:
        meta_code = json.loads(meta.get("code_shape", ""))
    except json.JSONDecodeError:
        meta_code = "unreadable"
    if meta_code != card["code_shape"]:
        raise ModelError(
            f"{path}: metadata code_shape is {meta.get('code_shape')!r}; card.json says {card['code_shape']}"
        )


def load_model(
    model_dir: Path, device: Device, intra_op_threads: int = 0, inter_op_threads: int = 0
) -> Model:
    """Check one model directory against the contract and open a session per graph."""
    card = _read_card(model_dir)
    try:
        providers = select_providers(device)
    except InferenceError as exc:
        raise ModelError(str(exc)) from exc
    options = session_options(intra_op_threads, inter_op_threads)
    graphs: dict[str, GraphSession] = {}
    for role, filename in sorted(card["graphs"].items()):
        path = _check_file(model_dir, card, filename)
        try:
            session = GraphSession(path, providers, options)
        except InferenceError as exc:
            raise ModelError(str(exc)) from exc
        _check_graph(path, role, session, card)
        if device == "cuda" and session.provider != CUDA:
            raise ModelError(f"{path}: AE_DEVICE=cuda but onnxruntime placed it on {session.provider}")
        graphs[role] = session
    code_shape = card["code_shape"]
    try:
        calibration = ood.load(model_dir, card)
    except (ood.CalibrationError, OSError, KeyError, ValueError) as exc:
        raise ModelError(f"{model_dir}: out-of-distribution calibration unusable ({exc})") from exc
    return Model(
        id=card["id"],
        arch=card["arch"],
        code_shape=tuple(code_shape) if code_shape is not None else None,
        card=card,
        graphs=graphs,
        ood=calibration,
    )


def load_registry(
    models_dir: Path,
    default_model: str,
    default_code_model: str | None = None,
    device: Device = "auto",
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
) -> Registry:
    """Load every ``models_dir/<id>/`` (hidden entries, such as an export's temp dir, are skipped).

    ``default_code_model`` defaults to ``default_model`` (see :class:`Registry`).
    """
    if not models_dir.is_dir():
        raise ModelError(f"{models_dir}: models directory does not exist (set AE_MODELS_DIR)")
    dirs = sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not dirs:
        raise ModelError(f"{models_dir}: no model directories found")
    models = {}
    for model_dir in dirs:
        model = load_model(model_dir, device, intra_op_threads, inter_op_threads)
        models[model.id] = model
        logger.info("loaded model %s (%s) on %s", model.id, ", ".join(model.graphs), model.provider)
    return Registry(models, default_model, default_code_model)
