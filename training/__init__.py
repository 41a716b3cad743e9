"""Training package: data, models, training loop, evaluation and ONNX export (the `train` extra)."""
