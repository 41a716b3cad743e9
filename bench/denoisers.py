"""The denoisers side by side: onnxruntime images/s on one thread at batch 1 and 32, MFLOP, size.

Every graph is timed in interleaved rounds (A B C, A B C, ...), so a drift of the shared machine
hits all of them alike; the ratio column divides each graph's median by the reference's median
of the same run. MFLOP counts the multiply-adds of every Conv / Gemm / MatMul (x2) at batch 1,
from onnx's shape inference.

    .venv/bin/python -m bench.denoisers                           # the shipped denoisers
    .venv/bin/python -m bench.denoisers --models mnist-unet mnist-s2d --reference mnist-unet

``--candidate LABEL ARCH [FIELD=VALUE ...]`` adds an untrained network of the shipped preset of ARCH
with those ModelConfig fields changed (exported by training.export to a temporary folder; its
speed does not depend on its weights), to price an architecture before training it:

    .venv/bin/python -m bench.denoisers --models fashion-unet fashion-s2d --reference fashion-unet \
        --candidate s2d-7x7 s2d deep_width=32 deep_convs=2 lowres_convs=4
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import shape_inference

from bench._common import ROOT, command_line, machine_state, median, write_json
from service.inference import CPU, session_options

MODELS = ROOT / "models"
DEFAULT_MODELS = ("mnist-unet", "mnist-s2d", "mnist-denoise", "fashion-unet", "fashion-s2d")


def _dims(value_info: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else 1 for d in value_info.type.tensor_type.shape.dim]


def mflop(path: Path) -> float:
    """Multiply-adds x 2 of the graph's Conv, Gemm and MatMul nodes for one image, in millions."""
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model)
    shapes = {
        v.name: _dims(v) for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    weights = {t.name: list(t.dims) for t in inferred.graph.initializer}
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            w = weights.get(node.input[1]) or shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if w and out:
                total += 2 * math.prod(out) * math.prod(w[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                total += 2 * math.prod(out) * a[-1]
    return total / 1e6


def open_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), sess_options=session_options(1, 1), providers=[CPU])


def window(session: ort.InferenceSession, feed: dict[str, np.ndarray], batch: int, seconds: float) -> float:
    runs, started = 0, time.perf_counter()
    while True:
        session.run(None, feed)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 3:
            return runs * batch / elapsed


def export_candidate(spec: list[str], folder: Path) -> Path:
    """``[label, arch, field=value, ...]`` → the path of that untrained network's ONNX graph."""
    import torch

    from training.export import export_model
    from training.models import ModelConfig, build_model, preset

    if len(spec) < 2:
        raise SystemExit("--candidate needs a label and an arch, then FIELD=VALUE pairs")
    label, arch, *pairs = spec
    known = {f.name for f in fields(ModelConfig)}
    changes: dict[str, object] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in known or not value:
            raise SystemExit(f"--candidate {label}: {pair!r} is not FIELD=VALUE of a ModelConfig field")
        if "," in value:  # a tuple field, e.g. lowres_dilations=1,2,4,2,1,1
            changes[name] = tuple(int(v) for v in value.split(","))
        else:
            changes[name] = int(value) if value.lstrip("-").isdigit() else value
    torch.manual_seed(0)
    model = build_model(replace(preset(arch), **changes))  # type: ignore[arg-type]
    # Through training's own exporter, so that the graph timed is the graph training would ship.
    export_model(model, folder / label, dataset="mnist5k", description=f"untrained candidate {label}")
    return folder / label / "autoencoder.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="model ids or directories")
    parser.add_argument("--reference", default="mnist-unet", help="the model the ratio column divides by")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one timed window")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--candidate",
        nargs="+",
        action="append",
        default=[],
        metavar="LABEL ARCH FIELD=VALUE",
        help="an untrained network to time beside the models (repeatable)",
    )
    args = parser.parse_args()

    paths = {m: (Path(m) if "/" in m else MODELS / m) / "autoencoder.onnx" for m in args.models}
    scratch = tempfile.TemporaryDirectory(prefix="ae-candidates-")
    for spec in args.candidate:
        paths[spec[0]] = export_candidate(spec, Path(scratch.name))
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"no such graph: {', '.join(missing)}")
    if args.reference not in paths:
        raise SystemExit(f"--reference {args.reference!r} is not among --models")
    print(f"command: {command_line('bench.denoisers')}")
    print(f"onnxruntime {ort.__version__}, 1 intra-op thread; machine before: {machine_state()}")
    sessions = {m: open_session(p) for m, p in paths.items()}
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, float]] = {
        m: {"mflop": round(mflop(p), 2), "kib": round(p.stat().st_size / 1024, 1)} for m, p in paths.items()
    }
    for batch in args.batches:
        feed = {"image": rng.random((batch, 1, 28, 28), dtype=np.float32)}
        for s in sessions.values():
            s.run(None, feed)  # warm-up: allocations for this batch size
        rates: dict[str, list[float]] = {m: [] for m in sessions}
        for _ in range(args.rounds):
            for m, s in sessions.items():
                rates[m].append(window(s, feed, batch, args.seconds))
        for m in sessions:
            results[m][f"batch{batch}"] = round(median(rates[m]), 1)
            results[m][f"ratio{batch}"] = round(median(rates[m]) / median(rates[args.reference]), 3)
    cols = " | ".join(f"img/s b={b} | × {args.reference} b={b}" for b in args.batches)
    print(f"\n| model | MFLOP | graph KiB | {cols} |")
    print("|" + "---|" * (3 + 2 * len(args.batches)))
    for m, r in results.items():
        cells = " | ".join(f"{r[f'batch{b}']:,.0f} | {r[f'ratio{b}']:.2f}" for b in args.batches)
        print(f"| {m} | {r['mflop']:.1f} | {r['kib']:.0f} | {cells} |")
    print(f"\nmachine after: {machine_state()}")
    write_json(args.json, {"command": command_line("bench.denoisers"), "results": results})


if __name__ == "__main__":
    main()
