"""Command-line values more than one command reads: the global ``--debug``, ``--option`` and
``--partition``.

A leaf module (command modules import it, it imports none of them), so the global options can
be set by the app's callback and read by any command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from harness.errors import JobError
from harness.jsontypes import BackendOptions, JsonValue


@dataclass
class GlobalOptions:
    """What the options before the command said; set once per invocation."""

    debug: bool = False


global_options = GlobalOptions()


def parse_options(values: list[str]) -> dict[str, BackendOptions]:
    """``--option BACKEND.KEY=VALUE`` values as {backend: {key: value}}; VALUE is JSON if it
    parses as JSON, else the string itself."""
    options: dict[str, BackendOptions] = {}
    for text in values:
        key, sep, raw = text.partition("=")
        backend, dot, name = key.partition(".")
        if not sep or not dot or not backend or not name:
            raise JobError(
                "compile", f"--option {text!r}: write BACKEND.KEY=VALUE, e.g. ort.threads=1"
            )
        try:
            value: JsonValue = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options.setdefault(backend, {})[name] = value
    return options


PARTITION_MODES = ("all", "cost")


def apply_tuning(
    options: dict[str, BackendOptions], backends: list[str], tuned: bool | None
) -> None:
    """``--tuned/--untuned``: the ``tuning`` option (``on``/``off``) of every backend given
    whose builds apply tuning records."""
    if tuned is None:
        return
    from harness.backends import get_backend

    for name in backends:
        if get_backend(name).tunes():
            options.setdefault(name, {})["tuning"] = "on" if tuned else "off"


def apply_partition(
    options: dict[str, BackendOptions], backends: list[str], mode: str | None
) -> None:
    """``--partition MODE``: the ``partition`` option of every offloading backend given."""
    if mode is None:
        return
    from harness.backends import get_backend

    if mode not in PARTITION_MODES:
        raise JobError("partition", f"--partition {mode!r}: one of {', '.join(PARTITION_MODES)}")
    offloading = [b for b in backends if get_backend(b).offloads()]
    if not offloading:
        raise JobError(
            "partition", "--partition applies to offloading backends (tvm-nnapi, tvm-neuron)"
        )
    for name in offloading:
        options.setdefault(name, {})["partition"] = mode
