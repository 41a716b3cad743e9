"""A peer for bench/targets.py: LitServe serving the same ONNX graph as ``/denoise``, its own way.

The same multipart PNG upload in, the denoised PNG out, onnxruntime with one intra-op thread per
worker, LitServe's own dynamic batching (``max_batch_size`` 32, as ``ae-serve``). It runs in its own
virtual environment (``make bench`` makes ``.venv-peers``), so that LitServe's dependencies never
meet the service's:

    PEER_MODEL=models/mnist-s2d/autoencoder.onnx AE_PORT=8002 \\
        .venv-peers/bin/python bench/peers/litserve_app.py

``PEER_WORKERS`` sets LitServe's ``workers_per_device`` (default 1).
"""

from __future__ import annotations

import io
import os

import litserve as ls
import numpy as np
import onnxruntime as ort
from fastapi import Response
from PIL import Image


class DenoiseAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.environ["PEER_MODEL"], options, providers=["CPUExecutionProvider"]
        )

    def decode_request(self, request):
        data = request["file"].file.read()
        return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)[None] / 255.0

    def batch(self, inputs):
        return np.stack(inputs)

    def predict(self, x):
        return self.session.run(None, {"image": x})[0]

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        pixels = np.clip(np.rint(output[0] * 255), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
        return Response(buffer.getvalue(), media_type="image/png")


if __name__ == "__main__":
    server = ls.LitServer(
        DenoiseAPI(max_batch_size=32, batch_timeout=0.001),
        accelerator="cpu",
        workers_per_device=int(os.environ.get("PEER_WORKERS", "1")),
        timeout=30,
    )
    server.run(
        host=os.environ.get("AE_HOST", "127.0.0.1"),
        port=int(os.environ["AE_PORT"]),
        generate_client_file=False,
    )
