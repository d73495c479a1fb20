"""edgefarm's core library: model import, TVM compilation, devices, native runner, measurement.

`harness` imports neither `api` nor `workers` (nor fastapi, celery).
"""

__version__ = "0.1.0"
