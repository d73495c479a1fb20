"""Tuning records in the farm's database (``tuning_workloads``, ``tuning_records``), moved to
and from a MetaSchedule ``JSONDatabase`` work directory.

A search (:func:`harness.tuning.search.search`) and a build read and write a work directory;
before, :func:`load_records` writes into it every record the database holds for the device
class, target and TVM version; after a search, :func:`save_records` stores what is new. So a
later tuning continues from all earlier ones, and a build for that class applies them. A build
gets one record per workload (``applied=True``): the fastest of those its latest confirmation
timed again (``confirmed_s``, :mod:`harness.tuning.confirm`), else the fastest the search
measured, which is the one MetaSchedule would pick among them all. A build
reads only the records of its own workloads (``workloads``: the structural hashes of its TIR
functions, :func:`harness.compile.build.model_workloads`), so that its artifact key and
provenance change when a record it applies is added, and not when another model is tuned. No
TVM import here: the files are MetaSchedule's JSON lines (a workload: ``[shash, module]``; a
record: ``[workload index, [trace, run_secs, target, args_info]]``).

The functions take ``*, session`` and never commit: their callers own the transactions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from harness.db.models import TuningRecord, TuningWorkload
from harness.errors import JobError
from harness.tuning.search import FAILED_RUN_S, RECORDS_FILE, WORKLOADS_FILE


@dataclass(frozen=True)
class RecordsKey:
    """Records that are interchangeable: one device class, one compile target (its label:
    edgefarm's name, and the CPU of a ``host`` build, e.g. ``host/x86-64-v4``), one TVM
    version."""

    device_class: str
    target: str
    software: str


@dataclass(frozen=True)
class RecordsSummary:
    """What the database holds for a key (and workloads): how many records and workloads, and
    a digest that changes whenever one of those records is added (for artifact keys and
    provenance)."""

    records: int
    workloads: int
    digest: str


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run_s(record: list[object]) -> float | None:
    secs = record[1] if len(record) > 1 else None
    if not isinstance(secs, list) or not secs:
        return None
    values = [float(s) for s in secs if isinstance(s, int | float)]
    return sum(values) / len(values) if values else None


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line for line in path.read_text().splitlines() if line.strip()]


@dataclass
class SaveCursor:
    """How much of a work directory :func:`save_records` has stored: a search only appends to
    its files, so each save after the first reads only what was appended since (a tuning
    saves after every batch; reading every record each time made a long tuning's saves grow
    with the square of its records)."""

    records: int = 0  # lines of the records file stored
    workload_ids: list[int] = field(default_factory=list)  # of the workloads file's lines


def save_records(
    work_dir: Path,
    key: RecordsKey,
    *,
    device: str = "",
    session: Session,
    cursor: SaveCursor | None = None,
) -> int:
    """Store the records of ``work_dir`` the database lacks under ``key``; returns how many
    were new. ``cursor``: where the previous save of this work directory stopped (advanced
    here)."""
    cursor = cursor if cursor is not None else SaveCursor()
    workloads = _lines(work_dir / WORKLOADS_FILE)
    ids = cursor.workload_ids
    for line in workloads[len(ids) :]:
        parsed = json.loads(line)
        if not isinstance(parsed, list) or len(parsed) != 2:
            raise JobError("compile", f"{work_dir / WORKLOADS_FILE}: not a workload: {line[:80]}")
        digest = _sha(line)
        found = session.scalar(select(TuningWorkload.id).where(TuningWorkload.sha256 == digest))
        if found is None:
            row = TuningWorkload(sha256=digest, shash=str(parsed[0])[:32], workload=line)
            session.add(row)
            session.flush()
            found = row.id
        ids.append(found)
    new = 0
    records = _lines(work_dir / RECORDS_FILE)
    for line in records[cursor.records :]:
        parsed = json.loads(line)
        if not isinstance(parsed, list) or len(parsed) != 2 or not 0 <= parsed[0] < len(ids):
            raise JobError("compile", f"{work_dir / RECORDS_FILE}: not a record: {line[:80]}")
        text = json.dumps(parsed[1], separators=(",", ":"))
        digest = _sha(text)
        exists = session.scalar(
            select(TuningRecord.id).where(
                TuningRecord.device_class == key.device_class,
                TuningRecord.target == key.target,
                TuningRecord.software == key.software,
                TuningRecord.workload_id == ids[parsed[0]],
                TuningRecord.sha256 == digest,
            )
        )
        if exists is not None:
            continue
        session.add(
            TuningRecord(
                workload_id=ids[parsed[0]],
                device_class=key.device_class,
                target=key.target,
                software=key.software,
                sha256=digest,
                record=text,
                run_s=_run_s(parsed[1]),
                device=device[:128],
            )
        )
        new += 1
    session.flush()
    cursor.records = len(records)
    return new


def _where(key: RecordsKey, workloads: Collection[str] | None) -> list[Any]:
    where: list[Any] = [
        TuningRecord.device_class == key.device_class,
        TuningRecord.target == key.target,
        TuningRecord.software == key.software,
    ]
    if workloads is not None:
        where.append(TuningWorkload.shash.in_(sorted(set(workloads))))
    return where


def measured(run_s: float | None) -> bool:
    """A record of a candidate that ran (not one that failed, recorded as 1e10 s)."""
    return run_s is not None and run_s < FAILED_RUN_S


def applied_record(records: list[TuningRecord], *, confirmed: bool = True) -> TuningRecord | None:
    """Which of one workload's records a build applies: the fastest confirmed one if its
    latest confirmation timed any (and ``confirmed``), else the fastest measured (None: none
    ran)."""
    confirmed_ones = [r for r in records if r.confirmed_s is not None] if confirmed else []
    if confirmed_ones:
        return min(confirmed_ones, key=lambda r: (r.confirmed_s, r.id))
    ran = [r for r in records if measured(r.run_s)]
    return min(ran, key=lambda r: (r.run_s, r.id)) if ran else None


def load_records(
    work_dir: Path,
    key: RecordsKey,
    *,
    workloads: Collection[str] | None = None,
    applied: bool = False,
    confirmed: bool = True,
    session: Session,
) -> RecordsSummary:
    """Write every record stored under ``key`` (only those of ``workloads``, structural
    hashes, when given) into ``work_dir`` as a MetaSchedule JSONDatabase (replacing its
    files); returns the summary of the records stored (all of them, also with ``applied``).
    ``applied``: only the record a build applies of each workload (:func:`applied_record`):
    a build needs no other, and parses every record it is given. ``confirmed=False``: as if
    no confirmation had timed any (the records' digest too)."""
    rows = session.execute(
        select(TuningRecord, TuningWorkload)
        .join(TuningWorkload, TuningRecord.workload_id == TuningWorkload.id)
        .where(*_where(key, workloads))
        .order_by(TuningRecord.id)
    ).all()
    summary = summary_of(
        [(r.sha256, r.confirmed_s if confirmed else None) for r, _ in rows],
        len({w.id for _, w in rows}),
    )
    written = [record for record, _ in rows]
    if applied:
        of_workload: dict[int, list[TuningRecord]] = {}
        for record, _ in rows:
            of_workload.setdefault(record.workload_id, []).append(record)
        picks = (applied_record(records, confirmed=confirmed) for records in of_workload.values())
        chosen = {pick.id for pick in picks if pick is not None}
        written = [record for record in written if record.id in chosen]
    texts = {workload.id: workload.workload for _, workload in rows}
    index: dict[int, int] = {}
    lines: list[str] = []
    records: list[str] = []
    for record in written:
        if record.workload_id not in index:
            index[record.workload_id] = len(lines)
            lines.append(texts[record.workload_id])
        records.append(f"[{index[record.workload_id]},{record.record}]")
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / WORKLOADS_FILE).write_text("".join(w + "\n" for w in lines))
    (work_dir / RECORDS_FILE).write_text("".join(r + "\n" for r in records))
    return summary


def summary_of(records: list[tuple[str, float | None]], workloads: int) -> RecordsSummary:
    """The summary of records given as (sha256, confirmed_s): the digest changes when one is
    added and when a confirmation changes which a build applies."""
    parts = sorted(
        sha if confirmed is None else f"{sha}:{confirmed!r}" for sha, confirmed in records
    )
    digest = _sha("\n".join(parts))[:16] if parts else ""
    return RecordsSummary(records=len(records), workloads=workloads, digest=digest)


def records_summary(
    key: RecordsKey,
    *,
    workloads: Collection[str] | None = None,
    confirmed: bool = True,
    session: Session,
) -> RecordsSummary:
    """How many records and workloads ``key`` has (only those of ``workloads``, structural
    hashes, when given), and their digest (no files written; ``confirmed=False``: as if no
    confirmation had timed any)."""
    rows = session.execute(
        select(TuningRecord.sha256, TuningRecord.confirmed_s, TuningRecord.workload_id)
        .join(TuningWorkload, TuningRecord.workload_id == TuningWorkload.id)
        .where(*_where(key, workloads))
    ).all()
    return summary_of(
        [(sha, seconds if confirmed else None) for sha, seconds, _ in rows],
        len({w for _, _, w in rows}),
    )


def has_records(key: RecordsKey, *, session: Session) -> bool:
    """Whether ``key`` has any record at all (a build for a class never tuned needs no
    workloads of its model)."""
    found = session.scalar(
        select(TuningRecord.id)
        .where(
            TuningRecord.device_class == key.device_class,
            TuningRecord.target == key.target,
            TuningRecord.software == key.software,
        )
        .limit(1)
    )
    return found is not None


@dataclass(frozen=True)
class Contender:
    """A record in the running for what a build applies of its workload."""

    record_id: int
    workload_id: int
    shash: str
    workload: str  # the workload's JSON line
    record: str  # the record's JSON
    run_s: float  # as its search measured it
    confirmed_s: float | None  # its latest confirmation's median


def contenders(
    key: RecordsKey, *, workloads: Collection[str], top: int, session: Session
) -> dict[int, list[Contender]]:
    """For each workload of ``workloads`` (structural hashes) under ``key``: its ``top``
    fastest measured records, and those its latest confirmation timed (so the record a build
    applies now is timed again beside the newcomers), fastest measured first."""
    rows = session.execute(
        select(
            TuningRecord.id, TuningRecord.workload_id, TuningRecord.run_s, TuningRecord.confirmed_s
        )
        .join(TuningWorkload, TuningRecord.workload_id == TuningWorkload.id)
        .where(*_where(key, workloads))
    ).all()
    by_workload: dict[int, list[Any]] = {}
    for row in rows:
        if measured(row.run_s):
            by_workload.setdefault(row.workload_id, []).append(row)
    chosen: dict[int, Any] = {}
    for records in by_workload.values():
        records.sort(key=lambda r: (r.run_s, r.id))
        for row in records[:top] + [r for r in records[top:] if r.confirmed_s is not None]:
            chosen[row.id] = row
    if not chosen:
        return {}
    texts = dict(
        session.execute(
            select(TuningRecord.id, TuningRecord.record).where(TuningRecord.id.in_(sorted(chosen)))
        ).all()
    )
    workload_rows = session.execute(
        select(TuningWorkload.id, TuningWorkload.shash, TuningWorkload.workload).where(
            TuningWorkload.id.in_(sorted({r.workload_id for r in chosen.values()}))
        )
    ).all()
    workload_of = {w.id: (w.shash, w.workload) for w in workload_rows}
    found: dict[int, list[Contender]] = {}
    for row in sorted(chosen.values(), key=lambda r: (r.workload_id, r.run_s, r.id)):
        shash, workload = workload_of[row.workload_id]
        found.setdefault(row.workload_id, []).append(
            Contender(
                row.id, row.workload_id, shash, workload, texts[row.id], row.run_s, row.confirmed_s
            )
        )
    return found


def save_confirmation(
    key: RecordsKey, workload_id: int, medians: dict[int, float], *, session: Session
) -> None:
    """A workload's new confirmation: ``medians`` (record id: seconds) replace whatever its
    earlier one said of every record of the workload under ``key``."""
    session.execute(
        update(TuningRecord)
        .where(*_where(key, None), TuningRecord.workload_id == workload_id)
        .values(confirmed_s=None)
    )
    for record_id, seconds in medians.items():
        session.execute(
            update(TuningRecord)
            .where(TuningRecord.id == record_id, TuningRecord.workload_id == workload_id)
            .values(confirmed_s=seconds)
        )
    session.flush()
