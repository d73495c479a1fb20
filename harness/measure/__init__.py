"""Measurement: latency statistics, accuracy against a reference, inputs and reference outputs.

The modules are imported on their own (``from harness.measure.stats import summarize``);
importing this package loads neither onnxruntime nor LiteRT.
"""
