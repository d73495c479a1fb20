"""BYOC offload to NNAPI-family accelerators: pattern tables, partitioning and its report, one
C source codegen for two API dialects (NNAPI, MediaTek Neuron), and a host reference driver.

See ``README.md`` in this package for how phone builds link the real libraries.
"""

from harness.byoc.codegen import register_codegens
from harness.byoc.dialect import DIALECTS, Dialect
from harness.byoc.partition import MODES, Partitioned, partition, report_of

__all__ = [
    "DIALECTS",
    "MODES",
    "Dialect",
    "Partitioned",
    "partition",
    "register_codegens",
    "report_of",
]
