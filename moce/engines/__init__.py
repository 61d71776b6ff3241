"""Precision variants (FP16/INT8 in ONNX) and TensorRT engines per graph, with an engine cache."""
