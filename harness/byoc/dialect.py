"""The two API dialects of the NNAPI family that the codegen writes: names, not semantics.

NNAPI (``ANeuralNetworks*``) and MediaTek's Neuron Adapter API (``Neuron*``) build a model the
same way and share operand type codes, operation codes and fused-activation codes; they differ
in their prefixes, in how a computation is awaited, in their result codes and in which library
a phone links against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DialectName = Literal["nnapi", "neuron"]

# Feature level the codegen assumes when it is not told (the newest it knows: Android 14).
DEFAULT_FEATURE_LEVEL = 7
# Neuron has no feature levels; its operation set is at least NNAPI's level 6 for what we emit.
NEURON_LEVEL = 99

PREFERENCES = ("fast_single_answer", "sustained_speed", "low_power")


@dataclass(frozen=True)
class Dialect:
    """How generated C spells one API."""

    name: DialectName
    label: str  # as people call it
    type_prefix: str  # ANeuralNetworks / Neuron: model, compilation, execution types
    const_prefix: str  # ANEURALNETWORKS_ / NEURON_
    android_lib: str  # what a phone build links (-l<name>)

    def fn(self, name: str) -> str:
        """``fn("Model_create")`` -> ``ANeuralNetworksModel_create``."""
        return f"{self.type_prefix}{name}"

    def const(self, name: str) -> str:
        return f"{self.const_prefix}{name}"

    def preference(self, name: str) -> str:
        if name not in PREFERENCES:
            raise ValueError(f"unknown execution preference {name!r} (one of {PREFERENCES})")
        return self.const(f"PREFER_{name.upper()}")


NNAPI = Dialect("nnapi", "NNAPI", "ANeuralNetworks", "ANEURALNETWORKS_", "neuralnetworks")
NEURON = Dialect("neuron", "Neuron Adapter", "Neuron", "NEURON_", "neuron_adapter")
DIALECTS: dict[str, Dialect] = {d.name: d for d in (NNAPI, NEURON)}
