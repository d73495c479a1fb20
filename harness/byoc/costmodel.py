"""Cost-guided partitioning: which offload candidates should go to the accelerator.

A *candidate* is one match of the pattern table the codegen accepted (e.g. conv2d + bias +
relu). For each, calibration measured on the device class (:mod:`harness.measure.calibration`):

* ``cpu_ms``: the candidate compiled by TVM for the CPU, called alone, minus the cost of a
  call (the intercept of the CPU probe fit);
* ``accel_ms``: the candidate offloaded alone, minus the call and its own boundary transfer.

The boundary model is a straight line ``fixed_ms + ms_per_byte * bytes`` fitted to probe
subgraphs of three sizes (a ReLU offloaded alone: a call into the accelerator, the copies and
layout changes in and out, and a pass over the data), less the CPU call intercept.

The latency of a choice ``S`` (the candidates offloaded) is predicted from the whole model on
the CPU (``baseline_ms``, measured)::

    baseline - sum(cpu_ms of S) + sum over subgraphs g of S
                                    (sum(accel_ms of g) + fixed_ms + ms_per_byte * bytes(g))

where the subgraphs are the connected parts of ``S`` (adjacent offloaded candidates become one
accelerator call, as MergeCompositeFunctions makes them) and ``bytes(g)`` is what crosses g's
boundary per inference. :func:`choose` searches for the ``S`` with the lowest prediction:
single flips from three starts (everything, nothing, each candidate that wins alone) until no
flip helps. Pure Python: no TVM here, so the search is tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import TypeAdapter
from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness.jsontypes import JsonObject
from harness.partition_report import CandidateRecord


class LineRecord(TypedDict):
    fixed_ms: float
    ms_per_byte: float


class CostsRecord(TypedDict):
    """:class:`Costs` as JSON: how measured costs travel in a build's options (``costs``)."""

    device_class: str
    baseline_ms: float
    cpu_ms: dict[str, float]
    accel_ms: dict[str, float]
    boundary: LineRecord


_COSTS = TypeAdapter(CostsRecord)


def costs_json(record: CostsRecord) -> JsonObject:
    """``record`` as the JSON a build's ``costs`` option holds."""
    dumped: JsonObject = _COSTS.dump_python(record, mode="json")
    return dumped


@dataclass(frozen=True)
class Candidate:
    """One offload candidate in the model's main function."""

    name: str  # the var its root binds: unique in main
    ops: tuple[str, ...]
    signature: str  # what its cost depends on (ops, attributes, shapes, dtypes)
    members: tuple[str, ...]  # the vars of all its bindings
    inputs: tuple[tuple[str, int], ...]  # (var, bytes) of non-constant inputs from outside
    output_bytes: int
    users: tuple[str, ...] = ()  # candidates that use its output
    used_outside: bool = False  # a CPU operator or the model's output uses it

    @property
    def standalone_bytes(self) -> int:
        return sum(b for _, b in self.inputs) + self.output_bytes

    def to_dict(self) -> CandidateRecord:
        return {
            "name": self.name,
            "ops": list(self.ops),
            "signature": self.signature,
            "members": list(self.members),
            "inputs": [(var, nbytes) for var, nbytes in self.inputs],
            "output_bytes": self.output_bytes,
            "users": list(self.users),
            "used_outside": self.used_outside,
        }


@dataclass(frozen=True)
class Line:
    """``fixed_ms + ms_per_byte * bytes``."""

    fixed_ms: float
    ms_per_byte: float

    def __call__(self, nbytes: int) -> float:
        return self.fixed_ms + self.ms_per_byte * nbytes

    @classmethod
    def fit(cls, points: Sequence[tuple[int, float]]) -> Line:
        """Least squares through (bytes, ms); both coefficients kept >= 0."""
        if not points:
            raise ValueError("no points to fit")
        n = len(points)
        mx = sum(x for x, _ in points) / n
        my = sum(y for _, y in points) / n
        sxx = sum((x - mx) ** 2 for x, _ in points)
        slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
        slope = max(slope, 0.0)
        return cls(max(my - slope * mx, 0.0), slope)


@dataclass(frozen=True)
class Costs:
    """Measured costs of one device class, per candidate signature (see the module doc)."""

    device_class: str
    baseline_ms: float
    cpu_ms: dict[str, float]
    accel_ms: dict[str, float]
    boundary: Line

    @classmethod
    def from_measurements(
        cls,
        *,
        device_class: str,
        baseline_ms: float,
        cpu_standalone_ms: dict[str, float],
        accel_standalone_ms: dict[str, float],
        standalone_bytes: dict[str, int],
        cpu_probes: Sequence[tuple[int, float]],
        accel_probes: Sequence[tuple[int, float]],
    ) -> Costs:
        """Costs from what calibration measured: standalone calls and the probes."""
        call = Line.fit(cpu_probes).fixed_ms
        accel_line = Line.fit(accel_probes)
        boundary = Line(max(accel_line.fixed_ms - call, 0.0), accel_line.ms_per_byte)
        cpu = {s: max(ms - call, 0.0) for s, ms in cpu_standalone_ms.items()}
        accel = {
            s: max(ms - call - boundary(standalone_bytes[s]), 0.0)
            for s, ms in accel_standalone_ms.items()
        }
        return cls(device_class, baseline_ms, cpu, accel, boundary)

    def to_dict(self) -> CostsRecord:
        return {
            "device_class": self.device_class,
            "baseline_ms": self.baseline_ms,
            "cpu_ms": dict(sorted(self.cpu_ms.items())),
            "accel_ms": dict(sorted(self.accel_ms.items())),
            "boundary": {
                "fixed_ms": self.boundary.fixed_ms,
                "ms_per_byte": self.boundary.ms_per_byte,
            },
        }

    @classmethod
    def from_dict(cls, given: object) -> Costs:
        """Costs from their JSON (:meth:`to_dict`); a ValueError naming what is malformed."""
        d = _COSTS.validate_python(given)
        b = d["boundary"]
        return cls(
            device_class=d["device_class"],
            baseline_ms=d["baseline_ms"],
            cpu_ms=d["cpu_ms"],
            accel_ms=d["accel_ms"],
            boundary=Line(b["fixed_ms"], b["ms_per_byte"]),
        )

    def missing(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        return [
            c
            for c in candidates
            if c.signature not in self.cpu_ms or c.signature not in self.accel_ms
        ]


@dataclass
class Subgraph:
    members: list[str]
    accel_ms: float
    boundary_bytes: int
    boundary_ms: float


@dataclass
class Prediction:
    offloaded: frozenset[str]
    latency_ms: float
    subgraphs: list[Subgraph] = field(default_factory=list)


class Planner:
    """Predicts latencies of choices over ``candidates`` with ``costs``."""

    def __init__(self, candidates: Sequence[Candidate], costs: Costs) -> None:
        missing = costs.missing(candidates)
        if missing:
            raise KeyError(", ".join(sorted({c.signature for c in missing})))
        self.candidates = list(candidates)
        self.by_name = {c.name: c for c in candidates}
        self.costs = costs
        # Which candidate produces a var (a candidate's root is its only var used outside it).
        self.producer = {c.name: c.name for c in candidates}

    def predict(self, offloaded: Iterable[str]) -> Prediction:
        chosen = frozenset(offloaded)
        costs = self.costs
        total = costs.baseline_ms
        for name in chosen:
            total -= costs.cpu_ms[self.by_name[name].signature]
        subgraphs = []
        for members in self._components(chosen):
            group = set(members)
            accel = sum(costs.accel_ms[self.by_name[m].signature] for m in members)
            nbytes = self._boundary_bytes(group)
            boundary = costs.boundary(nbytes)
            subgraphs.append(Subgraph(members, accel, nbytes, boundary))
            total += accel + boundary
        return Prediction(chosen, total, subgraphs)

    def _components(self, chosen: frozenset[str]) -> list[list[str]]:
        parent = {n: n for n in chosen}

        def root(n: str) -> str:
            while parent[n] != n:
                parent[n] = parent[parent[n]]
                n = parent[n]
            return n

        for name in chosen:
            for user in self.by_name[name].users:
                if user in chosen:
                    parent[root(user)] = root(name)
        groups: dict[str, list[str]] = {}
        for c in self.candidates:  # model order, so the result is deterministic
            if c.name in chosen:
                groups.setdefault(root(c.name), []).append(c.name)
        return list(groups.values())

    def _boundary_bytes(self, group: set[str]) -> int:
        seen: set[str] = set()
        total = 0
        for name in group:
            c = self.by_name[name]
            for var, nbytes in c.inputs:
                if self.producer.get(var) in group or var in seen:
                    continue
                seen.add(var)
                total += nbytes
            if c.used_outside or any(u not in group for u in c.users):
                total += c.output_bytes
        return total

    def choose(self) -> Prediction:
        """The lowest predicted latency found by single flips from three starts."""
        everything = frozenset(c.name for c in self.candidates)
        alone = frozenset(
            c.name
            for c in self.candidates
            if self.predict({c.name}).latency_ms < self.costs.baseline_ms
        )
        best: Prediction | None = None
        for start in (everything, frozenset(), alone):
            found = self._descend(start)
            if best is None or found.latency_ms < best.latency_ms - 1e-12:
                best = found
        assert best is not None
        return best

    def _descend(self, start: frozenset[str]) -> Prediction:
        current = self.predict(start)
        while True:
            step = current
            for c in self.candidates:
                flipped = current.offloaded ^ {c.name}
                trial = self.predict(flipped)
                if trial.latency_ms < step.latency_ms - 1e-12:
                    step = trial
            if step is current:
                return current
            current = step
