"""A build's use of tuning records: which records (if any) a tvm-cpu build applies.

The backend option ``tuning`` chooses: ``auto`` (the default) applies the records the store
holds for the device's class, target and TVM version when there are any; ``on`` requires
them; ``off`` builds untuned. The option itself never reaches the build: what does is an
:class:`~harness.compile.tuned.AppliedRecords`, whose digest enters the artifact's cache key
and whose summary the result's provenance carries (``tuning: {records, trials, workloads,
device_class}``), so a tuned and an untuned result are never mistaken for one another. No TVM
import here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from harness.compile.tuned import AppliedRecords
from harness.db.session import SessionScope
from harness.errors import JobError
from harness.jsontypes import BackendOptions
from harness.tuning.store import RecordsKey, load_records, records_summary

TUNING_OPTION = "tuning"
TuningMode = Literal["auto", "on", "off"]
MODES: tuple[TuningMode, ...] = ("auto", "on", "off")


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
    key: RecordsKey, mode: TuningMode, *, sessions: SessionScope, cache_dir: Path
) -> AppliedRecords | None:
    """The records a build for ``key`` applies under ``mode`` (None: untuned), written into
    ``cache_dir/tuning/<digest>`` once (a directory named by its records' digest never
    changes)."""
    if mode == "off":
        return None
    with sessions() as session:
        summary = records_summary(key, session=session)
        if summary.records == 0:
            if mode == "on":
                raise JobError(
                    "compile",
                    f"no tuning records for {key.device_class} ({key.target}, {key.software}); "
                    "run edgefarm tune for this device first, or build --untuned",
                )
            return None
        where = cache_dir / "tuning" / summary.digest
        if not where.is_dir():
            where.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".records-", dir=where.parent))
            loaded = load_records(staging, key, session=session)
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
