"""Example models for trying the farm: the MLPerf Tiny reference architectures as ONNX.

``python -m harness.examples NAME... -o DIR`` writes them; see :mod:`.mlperf_tiny`.
"""

from harness.examples.mlperf_tiny import (
    EXAMPLES,
    autoencoder,
    build_example,
    ds_cnn,
    example_bytes,
    macs,
    mobilenet_v1_025,
    resnet8,
    write_example,
)

__all__ = [
    "EXAMPLES",
    "autoencoder",
    "build_example",
    "ds_cnn",
    "example_bytes",
    "macs",
    "mobilenet_v1_025",
    "resnet8",
    "write_example",
]
