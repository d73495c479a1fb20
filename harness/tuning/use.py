"""A build's use of tuning records: which records (if any) a TVM build (tvm-cpu, and the CPU
part of tvm-nnapi and tvm-neuron) applies.

The backend option ``tuning`` chooses: ``auto`` (the default) applies the records the store
holds for the device's class, target and TVM version on the model's own workloads (the
structural hashes of the TIR functions its build has) when there are any; ``on`` requires
them; ``off`` builds untuned; ``unconfirmed`` requires them too but applies, of each
workload, the record its search measured fastest, as if no confirmation had timed them again
(:mod:`harness.tuning.confirm`; to measure what the confirmation buys, bench/tuning.py).
Otherwise a build applies of each workload the fastest confirmed record, or the fastest
measured where none is confirmed (:func:`harness.tuning.store.applied_record`).

The option itself never reaches the build: what does is an
:class:`~harness.compile.tuned.AppliedRecords`, whose digest enters the artifact's cache key
and whose summary the result's provenance carries (``tuning: {records, trials, workloads,
device_class}``; the build adds the functions the records ``scheduled``), so a tuned and an
untuned result are never mistaken for one another. The digest and the counts cover only the
records of the model's workloads: tuning another model for the class changes neither this
model's artifact key nor its provenance, unless it adds records for a workload this model has
too. No TVM import here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Literal

from harness.compile.tuned import AppliedRecords
from harness.db.session import SessionScope
from harness.errors import JobError
from harness.jsontypes import BackendOptions
from harness.tuning.store import RecordsKey, has_records, load_records, records_summary

TUNING_OPTION = "tuning"
TuningMode = Literal["auto", "on", "off", "unconfirmed"]
MODES: tuple[TuningMode, ...] = ("auto", "on", "off", "unconfirmed")


def split_tuning(options: BackendOptions | None) -> tuple[TuningMode, BackendOptions | None]:
    """The ``tuning`` option (default ``auto``; anything else named is a JobError) and the
    options without it."""
    if options is None or TUNING_OPTION not in options:
        return "auto", options
    rest = {k: v for k, v in options.items() if k != TUNING_OPTION}
    given = options[TUNING_OPTION]
    for mode in MODES:
        if given == mode:
            return mode, rest
    raise JobError(
        "compile", f"option tuning is {', '.join(MODES)}, not {given!r} (edgefarm bench --tuned)"
    )


def tuning_use(
    key: RecordsKey,
    mode: TuningMode,
    *,
    workloads: Callable[[], Collection[str]],
    sessions: SessionScope,
    cache_dir: Path,
) -> AppliedRecords | None:
    """The records a build for ``key`` applies under ``mode`` (None: untuned): those of the
    workloads ``workloads()`` names (structural hashes; called only when ``key`` has records,
    since finding them takes a TVM lowering of the model), written into
    ``cache_dir/tuning/<digest>`` once (a directory named by its records' digest never
    changes): of each workload, the record a build applies."""
    if mode == "off":
        return None
    where_tuned = f"{key.device_class} ({key.target}, {key.software})"
    with sessions() as session:
        tuned_class = has_records(key, session=session)
    required = mode in ("on", "unconfirmed")
    confirmed = mode != "unconfirmed"
    if not tuned_class:
        if required:
            raise JobError(
                "compile",
                f"no tuning records for {where_tuned}; run edgefarm tune for this device "
                "first, or build --untuned",
            )
        return None
    hashes = sorted(set(workloads()))
    with sessions() as session:
        summary = records_summary(key, workloads=hashes, confirmed=confirmed, session=session)
        if summary.records == 0:
            if required:
                raise JobError(
                    "compile",
                    f"the tuning records for {where_tuned} cover none of this model's "
                    f"{len(hashes)} TIR function(s); run edgefarm tune on this model for this "
                    "device first, or build --untuned",
                )
            return None
        where = cache_dir / "tuning" / summary.digest
        if not where.is_dir():
            where.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".records-", dir=where.parent))
            loaded = load_records(
                staging, key, workloads=hashes, applied=True, confirmed=confirmed, session=session
            )
            if loaded.digest != summary.digest:  # a tuning saved a batch meanwhile
                summary = loaded
                where = where.parent / loaded.digest
            try:
                os.rename(staging, where)
            except OSError:  # another build wrote the same records first
                shutil.rmtree(staging, ignore_errors=True)
    return AppliedRecords(
        summary.digest,
        where,
        {
            "records": summary.digest,
            "trials": summary.records,
            "workloads": summary.workloads,
            "device_class": key.device_class,
        },
    )
