"""Confirming what a build applies: each workload's best records timed again, side by side.

A search measures each candidate once (three calls, at least 40 ms) and a build applies, of
each workload, the candidate measured fastest. On a shared machine one lucky measurement among
hundreds can win, and nothing would catch it (bench/retime_records.py times a store's best
records again: they mostly hold, within about 10%, README "Why, probed"). So at the end of a
tuning, for each workload the tuning covers, the ``top`` records measured fastest and those
its last confirmation timed (the record builds apply now defends its place) are built again
and timed on the device in ``rounds`` interleaved rounds; each gets the median of its rounds
(``tuning_records.confirmed_s``), and builds apply the fastest confirmed record
(:func:`harness.tuning.store.applied_record`). A workload with nothing new since its last
confirmation, or with one record, is not timed again.

Contenders are built as the search builds its candidates (the weight re-layout split off, the
record's own argument shapes), so a confirmed time and a search's time measure the same code.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from harness.db import session_scope
from harness.errors import one_line
from harness.tuning import DEFAULT_CONFIRM_ROUNDS, DEFAULT_CONFIRM_TOP
from harness.tuning.device import KernelTimer, arg_text
from harness.tuning.search import RECORDS_FILE, WORKLOADS_FILE, search_threads
from harness.tuning.store import Contender, RecordsKey, contenders, save_confirmation

log = logging.getLogger(__name__)

KERNELS_PER_CALL = 32  # one runner invocation: well inside its timeout at >= 40 ms a kernel


@dataclass
class ConfirmReport:
    """What a confirmation did. ``fastest_measured_us`` and ``applied_us`` sum, over the
    workloads timed again, the confirmed time of the record the search measured fastest and
    of the one builds apply now: what the confirmation bought, measured in the same rounds;
    ``recorded_us`` the search's own measurements of the records measured fastest (how lucky
    those were)."""

    workloads: int = 0  # workloads timed again
    records: int = 0  # records timed again
    skipped: int = 0  # workloads with one record, or nothing new since their confirmation
    changed: int = 0  # workloads whose applied record is not the one measured fastest
    failed: int = 0  # records that did not build or run again (no longer applied)
    rounds: int = 0
    recorded_us: float = 0.0
    fastest_measured_us: float = 0.0
    applied_us: float = 0.0
    seconds: float = 0.0
    stopped: bool = False  # stopped before its last round: nothing saved


def _quiet(event: str, message: str) -> None:
    del event, message


def build_contender(
    contender: Contender, where: Path, target: Any, export: dict[str, Any]
) -> tuple[Path, list[str]] | str:
    """The contender built in the new directory ``where`` as a search builds its candidate
    (its library and argument texts, what a :class:`KernelTimer` times), or why it did not
    build."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    try:
        where.mkdir()
        (where / WORKLOADS_FILE).write_text(contender.workload + "\n")
        (where / RECORDS_FILE).write_text(f"[0,{contender.record}]\n")
        (record,) = ms.database.JSONDatabase(work_dir=str(where)).get_all_tuning_records()
        candidate = record.as_measure_candidate()
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(candidate.sch.mod)
        library = where / "k.so"
        tvm.compile(mod, target=target).export_library(str(library), **export)
        return library, [arg_text(a) for a in candidate.args_info]
    except Exception as exc:  # a record TVM no longer builds: it is not applied
        return one_line(str(exc), 300)


def confirm_records(
    key: RecordsKey,
    workloads: Collection[str],
    *,
    factory: sessionmaker[Session],
    timer: KernelTimer,
    target: Any,
    export: dict[str, Any],
    top: int = DEFAULT_CONFIRM_TOP,
    rounds: int = DEFAULT_CONFIRM_ROUNDS,
    stop: Callable[[], bool] | None = None,
    progress: Callable[[str, str], None] = _quiet,
    on: str = "the device",
) -> ConfirmReport:
    """Time again, with ``timer``, the contenders of each of ``workloads`` (structural
    hashes) under ``key`` (:func:`harness.tuning.store.contenders`) in ``rounds`` rounds, each
    round every contender once, a workload's contenders next to each other in an order that
    turns each round; save their medians. A contender that fails to build or in any round
    gets none. ``stop()`` is asked before each runner call; once it is true, or a timing
    comes back not run (a farm withdrew it), nothing is saved."""
    import tvm

    report = ConfirmReport()
    start = time.perf_counter()
    try:
        with session_scope(factory) as session:
            found = contenders(key, workloads=workloads, top=top, session=session)
        timed = {
            wid: group
            for wid, group in found.items()
            if len(group) > 1 and any(c.confirmed_s is None for c in group)
        }
        report.skipped = len(found) - len(timed)
        if not timed:
            return report
        every = [c for group in timed.values() for c in group]
        progress(
            "confirm",
            f"building the {len(every)} best records of {len(timed)} workload(s) again",
        )
        target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
        work = Path(tempfile.mkdtemp(prefix="edgefarm-confirm-"))
        try:
            ready = _build_all(every, work, target, export)
            rounds_run = _Rounds(timed, ready, rounds)
            if not rounds_run.time(timer, stop=stop, progress=progress, on=on):
                report.stopped = True
                return report
            report.rounds = rounds
            with session_scope(factory) as session:
                _save_medians(key, rounds_run, report, session=session)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report.recorded_us = round(report.recorded_us, 3)
        report.fastest_measured_us = round(report.fastest_measured_us, 3)
        report.applied_us = round(report.applied_us, 3)
    finally:
        report.seconds = round(time.perf_counter() - start, 3)
    return report


def _build_all(
    every: list[Contender], work: Path, target: Any, export: dict[str, Any]
) -> dict[int, tuple[Path, list[str]]]:
    """Each contender built in its own directory under ``work``, on the search's threads: the
    built ones by record id (a record that no longer builds is left out, with a warning)."""
    places = [work / f"r{c.record_id}" for c in every]
    threads = min(search_threads(), len(every))
    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(lambda c, p: build_contender(c, p, target, export), every, places))
    ready: dict[int, tuple[Path, list[str]]] = {}
    for contender, outcome in zip(every, outcomes, strict=True):
        if isinstance(outcome, str):
            log.warning("record %d did not build again: %s", contender.record_id, outcome)
        else:
            ready[contender.record_id] = outcome
    return ready


class _Rounds:
    """The interleaved rounds of one confirmation: every built contender timed once a round,
    a workload's contenders next to each other, their order turned by one each round."""

    def __init__(
        self,
        timed: dict[int, list[Contender]],  # by workload id
        ready: dict[int, tuple[Path, list[str]]],
        rounds: int,
    ) -> None:
        self.timed = timed
        self.ready = ready
        self.rounds = rounds
        self.times: dict[int, list[float]] = {
            c.record_id: [] for group in timed.values() for c in group
        }
        # Records that did not build, or failed in a round: they get no confirmed time.
        self.broken = {rid for rid in self.times if rid not in ready}

    def _order(self, round_no: int) -> list[Contender]:
        order: list[Contender] = []
        for group in self.timed.values():
            turn = round_no % len(group)
            order.extend(c for c in group[turn:] + group[:turn] if c.record_id not in self.broken)
        return order

    def time(
        self,
        timer: KernelTimer,
        *,
        stop: Callable[[], bool] | None,
        progress: Callable[[str, str], None],
        on: str,
    ) -> bool:
        """Run every round, ``KERNELS_PER_CALL`` kernels a runner call; False when stopped
        (``stop()`` before a call, or a timing that came back not run)."""
        for round_no in range(self.rounds):
            order = self._order(round_no)
            progress(
                "confirm",
                f"round {round_no + 1} of {self.rounds}: {len(order)} record(s) on {on}",
            )
            for i in range(0, len(order), KERNELS_PER_CALL):
                if stop is not None and stop():
                    return False
                chunk = order[i : i + KERNELS_PER_CALL]
                timings = timer.time([self.ready[c.record_id] for c in chunk])
                for c, timing in zip(chunk, timings, strict=True):
                    if not timing.was_run:
                        return False
                    if timing.error is not None or not timing.costs_s:
                        self.broken.add(c.record_id)
                    else:
                        self.times[c.record_id].append(statistics.mean(timing.costs_s))
        return True

    def medians(self, group: list[Contender]) -> dict[int, float]:
        """The median of each of ``group``'s contenders timed in every round."""
        return {
            c.record_id: statistics.median(self.times[c.record_id])
            for c in group
            if c.record_id not in self.broken and len(self.times[c.record_id]) == self.rounds
        }


def _save_medians(
    key: RecordsKey, rounds: _Rounds, report: ConfirmReport, *, session: Session
) -> None:
    """Save each workload's medians as its records' confirmed times and add to ``report`` what
    the confirmation changed and what it bought."""
    for wid, group in rounds.timed.items():
        medians = rounds.medians(group)
        report.failed += len(group) - len(medians)
        if not medians:
            continue  # none timed: the workload keeps what it had
        save_confirmation(key, wid, medians, session=session)
        report.workloads += 1
        report.records += len(medians)
        applied = min(medians, key=lambda rid: (medians[rid], rid))
        fastest = group[0].record_id  # contenders come fastest measured first
        if applied != fastest:
            report.changed += 1
        if fastest in medians:
            report.recorded_us += group[0].run_s * 1e6
            report.fastest_measured_us += medians[fastest] * 1e6
            report.applied_us += medians[applied] * 1e6
