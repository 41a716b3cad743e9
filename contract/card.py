"""The model card and the artifact contract of docs/architecture.md, in code.

A model directory ``models/<id>/`` holds ``card.json`` and the ONNX graphs it names. Export writes
cards (and the evaluation adds their metrics) through :func:`write_card` and :func:`update_card`
only; the service's registry reads them through :func:`read_card`. Both ends run the same
:func:`check_card`, so a card the service would refuse is never written.

The contract:

- ``id`` (the directory's name), ``arch`` and ``dataset`` are non-empty strings;
- ``code_shape`` is a list of positive integers (autoencoders) or ``null`` (codeless denoisers);
- ``graphs`` maps each role to a plain file name: exactly ``autoencoder`` for ``code_shape``
  ``null``, exactly ``encoder``, ``decoder`` and ``autoencoder`` otherwise;
- ``sha256`` holds the hex digest of every graph file;
- ``code_range`` (autoencoders, optional) is ``{"min": a, "max": b, ...}`` with finite a <= b;
- every graph has the single float32 input and output of :func:`graph_io`, batch axis dynamic, and
  the ONNX ``metadata_props`` of :func:`graph_metadata` (``model_id``, ``arch``, ``code_shape``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

CARD_FILE = "card.json"
ENCODER, DECODER, AUTOENCODER = "encoder", "decoder", "autoencoder"
ROLES = (ENCODER, DECODER, AUTOENCODER)
# Every graph's file: `<role>.onnx`.
GRAPH_FILES = {role: f"{role}.onnx" for role in ROLES}
IMAGE_DIMS = (1, 28, 28)
BATCH_AXIS = "batch"
# The ONNX metadata_props every graph carries (docs/architecture.md).
METADATA_KEYS = ("model_id", "arch", "code_shape")


class CardError(Exception):
    """A card, or a graph file it names, breaks the artifact contract; the message names the file."""


def graph_roles(code_shape: list[int] | tuple[int, ...] | None) -> tuple[str, ...]:
    """The graphs a model with this code shape ships: the autoencoder, plus encoder and decoder."""
    return (AUTOENCODER,) if code_shape is None else (ENCODER, DECODER, AUTOENCODER)


def graph_io(
    role: str, code_shape: list[int] | tuple[int, ...] | None
) -> tuple[tuple[str, tuple[int, ...]], tuple[str, tuple[int, ...]]]:
    """((input name, dims after the batch axis), (output name, dims)) of one graph."""
    code = tuple(code_shape or ())
    return {
        ENCODER: (("image", IMAGE_DIMS), ("code", code)),
        DECODER: (("code", code), ("image", IMAGE_DIMS)),
        AUTOENCODER: (("image", IMAGE_DIMS), ("denoised", IMAGE_DIMS)),
    }[role]


def graph_metadata(card: dict[str, Any]) -> dict[str, str]:
    """The ONNX ``metadata_props`` every graph of this card carries."""
    return {
        "model_id": card["id"],
        "arch": card["arch"],
        "code_shape": json.dumps(card["code_shape"]),
        "description": card.get("description", ""),
    }


def check_metadata(path: Path, meta: dict[str, str], card: dict[str, Any]) -> None:
    """:class:`CardError` unless a graph's metadata names this card's model id and code shape."""
    if meta.get("model_id") != card["id"]:
        raise CardError(
            f"{path}: metadata model_id is {meta.get('model_id')!r}; card.json says {card['id']!r}"
        )
    try:
        meta_code = json.loads(meta.get("code_shape", ""))
    except json.JSONDecodeError:
        meta_code = "unreadable"
    if meta_code != card["code_shape"]:
        raise CardError(
            f"{path}: metadata code_shape is {meta.get('code_shape')!r}; card.json says {card['code_shape']}"
        )


def _is_shape(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    )


def _is_range(value: object) -> bool:
    return (
        isinstance(value, dict)
        and all(
            isinstance(value.get(k), int | float) and not isinstance(value.get(k), bool)
            for k in ("min", "max")
        )
        and math.isfinite(value["min"])
        and math.isfinite(value["max"])
        and value["min"] <= value["max"]
    )


def check_card(card: object, where: str = CARD_FILE, model_dir_name: str | None = None) -> dict[str, Any]:
    """The card itself, or :class:`CardError` naming ``where`` and the first breach of the contract."""
    if not isinstance(card, dict):
        raise CardError(f"{where}: must hold a JSON object")
    for key in ("id", "arch"):
        if not isinstance(card.get(key), str) or not card[key]:
            raise CardError(f"{where}: field {key!r} missing or not a non-empty str")
    for key in ("graphs", "sha256"):
        if not isinstance(card.get(key), dict):
            raise CardError(f"{where}: field {key!r} missing or not a dict")
    if "dataset" in card and not isinstance(card["dataset"], str):
        raise CardError(f"{where}: field 'dataset' must be a str")
    if model_dir_name is not None and card["id"] != model_dir_name:
        raise CardError(f"{where}: id {card['id']!r} differs from the directory name {model_dir_name!r}")
    if "code_shape" not in card:
        raise CardError(f"{where}: field 'code_shape' missing (a list of positive integers, or null)")
    code_shape = card["code_shape"]
    if code_shape is not None and not _is_shape(code_shape):
        raise CardError(
            f"{where}: code_shape must be a list of positive integers or null, not {code_shape!r}"
        )
    code_range = card.get("code_range")
    if code_range is not None:
        if not _is_range(code_range):
            raise CardError(f"{where}: code_range must be {{'min': a, 'max': b}} with finite a <= b")
        if code_shape is None:
            raise CardError(f"{where}: code_range given for a model without a code (code_shape null)")
    expected = set(graph_roles(code_shape))
    if set(card["graphs"]) != expected:
        raise CardError(
            f"{where}: graphs must be exactly {sorted(expected)} for code_shape {code_shape}, "
            f"not {sorted(card['graphs'])}"
        )
    for role, filename in card["graphs"].items():
        if not isinstance(filename, str) or Path(filename).name != filename or filename in ("", ".", ".."):
            raise CardError(f"{where}: graph file name {filename!r} ({role}) must be a plain file name")
        if not isinstance(card["sha256"].get(filename), str):
            raise CardError(f"{where}: no sha256 for {filename}")
    return card


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def graph_path(model_dir: Path, card: dict[str, Any], role: str) -> Path:
    """The graph file of ``role``, present and matching the card's sha256; :class:`CardError` otherwise."""
    card_path = model_dir / CARD_FILE
    filename = card["graphs"][role]
    path = model_dir / filename
    if not path.is_file():
        raise CardError(f"{path}: missing (named in {card_path})")
    expected = card["sha256"][filename]
    actual = sha256(path)
    if actual != expected.lower():
        raise CardError(f"{path}: sha256 mismatch (card.json says {expected}, the file has {actual})")
    return path


def read_card(model_dir: Path, *, served: bool = True) -> dict[str, Any]:
    """``model_dir/card.json``, checked against the contract (graph files not yet opened).

    ``served``: the directory is where the service finds the model, so it must be named after the
    card's id (models/<id>/); a run's output elsewhere (``--out runs/x``) need not be.
    """
    path = model_dir / CARD_FILE
    if not path.is_file():
        raise CardError(f"{path}: missing (every model directory needs a card.json)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"{path}: not readable JSON ({exc})") from exc
    return check_card(card, str(path), model_dir.name if served else None)


def check_model_dir(model_dir: Path, *, served: bool = True) -> dict[str, Any]:
    """The card of ``model_dir`` once it and every graph file it names (sha256) keep the contract."""
    card = read_card(model_dir, served=served)
    for role in card["graphs"]:
        graph_path(model_dir, card, role)
    return card


def model_dirs(models_dir: Path) -> list[Path]:
    """The model directories under ``models_dir``: those holding a card, sorted."""
    return sorted(p.parent for p in models_dir.glob(f"*/{CARD_FILE}"))


def write_card(model_dir: Path, card: dict[str, Any]) -> None:
    """Write ``card.json`` atomically (mode 0644) after checking it and the graphs it names.

    The one writer of cards: a card the service would refuse raises :class:`CardError` and
    nothing is written. (The service serves it from a directory named after its id.)
    """
    check_card(card, str(model_dir / CARD_FILE))
    for role in card["graphs"]:
        graph_path(model_dir, card, role)
    fd, tmp = tempfile.mkstemp(prefix=".card.", suffix=".tmp", dir=model_dir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(card, indent=2) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the service may run as another user
        os.replace(tmp, model_dir / CARD_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_card(model_dir: Path, **entries: Any) -> dict[str, Any]:
    """Replace some of a card's fields (``metrics``, ``code_range``); the graphs stay as they are."""
    card = read_card(model_dir, served=False)
    card.update(entries)
    write_card(model_dir, card)
    return card
