"""The inference service: FastAPI + onnxruntime serving the exported autoencoders."""
