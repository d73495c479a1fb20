"""Measurement: latency statistics, accuracy against a reference, inputs and reference outputs;
running the benchmark runner on a device (``device_run``) and calibrating per-candidate costs
with it (``calibration``).

The modules are imported on their own (``from harness.measure.stats import summarize``);
importing this package loads neither onnxruntime nor LiteRT.
"""
