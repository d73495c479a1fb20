"""What became of the runs of a chaos soak (bench/chaos.py): read from the database, the worker
log and the monitor; and printed as a table.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from harness.db import Result, Run, RunStatus

from chaos_config import (
    ATTEMPT_LINE,
    END_LINE,
    PROTOCOL,
    REAPER_END_LINE,
    RESTART_LINE,
    SUPERSEDED_LINE,
    WORKER_DEATHS,
    Phase,
    SoakConfig,
    aware,
)
from chaos_farm import SoakFarm
from chaos_faults import FaultInjector
from chaos_load import Monitor

# -- what became of the runs ---------------------------------------------------------------------


def _reason(stage: str | None, message: str | None) -> str:
    """A failure's reason with its particulars (numbers, addresses) left out, for counting."""
    text = re.sub(r"tcp:127\.0\.0\.1:\d+", "tcp:PHONE", message or "")
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return f"{stage}: {text[:110]}"


def scan_log(path: Path) -> dict[str, Any]:
    ends: Counter[int] = Counter()
    attempts: Counter[int] = Counter()
    superseded = 0
    restarts: Counter[str] = Counter()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        if (m := END_LINE.search(line)) or (m := REAPER_END_LINE.search(line)):
            ends[int(m.group(1))] += 1
        elif m := ATTEMPT_LINE.search(line):
            attempts[int(m.group(1))] += 1
        elif SUPERSEDED_LINE.search(line):
            superseded += 1
        elif m := RESTART_LINE.search(line):
            restarts[m.group(1).split("@")[0]] += 1
    return {"ends": ends, "attempts": attempts, "superseded": superseded, "restarts": restarts}


def analyse(
    farm: SoakFarm,
    config: SoakConfig,
    phases: list[Phase],
    monitor: Monitor,
    injector: FaultInjector | None,
) -> dict[str, Any]:
    logs = scan_log(farm.log_path)
    with farm.engine.connect() as conn:
        runs = conn.execute(
            select(
                Run.id,
                Run.status,
                Run.attempts,
                Run.created_at,
                Run.finished_at,
                Run.error_stage,
                Run.error_message,
            )
        ).all()
        results: dict[int, list[Any]] = defaultdict(list)
        for r in conn.execute(select(Result.run_id, Result.status, Result.document)):
            results[r.run_id].append(r)

    def summary(rows: list[Any], phase: Phase | None) -> dict[str, Any]:
        out: dict[str, Any] = Counter()
        infra: Counter[str] = Counter()
        other: Counter[str] = Counter()
        doubled_runs: list[int] = []
        for run in rows:
            status = RunStatus(run.status)
            mine = results.get(run.id, [])
            ended_lines = logs["ends"].get(run.id, 0)
            out["submitted"] += 1
            if not status.ended:
                out["lost"] += 1
                continue
            out["ended"] += 1
            doubled = len(mine) > 1 or ended_lines > 1 or run.id in monitor.changed
            if doubled:
                doubled_runs.append(run.id)
            agrees = len(mine) == 1 and (mine[0].status == "ok") == (status == RunStatus.done)
            if agrees and ended_lines == 1 and not doubled:
                out["ended exactly once"] += 1
            if not mine:
                out["ended without a result"] += 1
            elif not agrees:
                out["result disagrees with run"] += 1
            if ended_lines == 0:
                out["end not logged"] += 1
            if status == RunStatus.done:
                out["done"] += 1
                continue
            document = (mine[0].document or {}) if mine else {}
            error = document.get("error") or {}
            reason = _reason(run.error_stage, run.error_message)
            if error.get("retryable"):
                out["failed (infrastructure)"] += 1
                infra[reason] += 1
            else:
                out["failed (other)"] += 1
                other[reason] += 1
        out["doubled"] = len(doubled_runs)
        report: dict[str, Any] = {
            k: out.get(k, 0)
            for k in (
                "submitted",
                "ended",
                "ended exactly once",
                "done",
                "failed (infrastructure)",
                "failed (other)",
                "lost",
                "doubled",
                "ended without a result",
                "result disagrees with run",
                "end not logged",
            )
        }
        report["doubled runs"] = doubled_runs
        report["infrastructure reasons"] = dict(infra.most_common())
        report["other reasons"] = dict(other.most_common())
        if phase is not None:
            done_in_window = [
                r
                for r in runs
                if RunStatus(r.status) == RunStatus.done
                and r.finished_at is not None
                and phase.start <= aware(r.finished_at) <= phase.end  # type: ignore[operator]
            ]
            report["minutes"] = round(phase.minutes, 2)
            report["done per minute"] = round(len(done_in_window) / max(phase.minutes, 1e-9), 1)
            report["drained"] = phase.drained_ok
            report["drain seconds"] = round(
                ((phase.drained or phase.end) - phase.end).total_seconds(), 1
            )
            report["submissions"] = phase.submissions
        return report

    by_phase: dict[str, dict[str, Any]] = {}
    for phase in phases:
        upto = phase.drained or phase.end
        mine = [r for r in runs if phase.start <= aware(r.created_at) <= upto]  # type: ignore[operator]
        by_phase[phase.name] = summary(mine, phase)
    report: dict[str, Any] = {
        "farm": farm.kind,
        "settings": farm.settings,
        "config": {
            "minutes": config.minutes,
            "phones": config.phones,
            "fault_every_s": config.fault_every_s,
            "seed": config.seed,
            "backends": list(config.backends),
            "backlog": config.backlog,
            "protocol": PROTOCOL,
        },
        "phases": by_phase,
        "all runs": summary(list(runs), None),
        "superseded attempts (logged)": logs["superseded"],
        "attempts logged": sum(logs["attempts"].values()),
        "restarts (logged)": dict(logs["restarts"]),
        "monitor read errors": monitor.errors,
        "changed after ending": {
            str(k): [list(map(str, s)) for s in v] for k, v in monitor.changed.items()
        },
    }
    if injector is not None:
        kinds = Counter(f.kind for f in injector.faults)
        report["faults"] = {k: kinds.get(k, 0) for k in injector.kinds}
        report["faults drawn but not injected"] = dict(injector.skipped)
        waits: dict[str, Any] = {}
        for kind in WORKER_DEATHS:
            mine = [w for w in monitor.waits if w.fault == kind]
            resolved = [w.waited_s for w in mine if w.waited_s is not None]
            waits[kind] = {
                "runs held": len(mine),
                "longest wait s": round(max(resolved), 1) if resolved else None,
                "median wait s": round(float(np.median(resolved)), 1) if resolved else None,
                "never resolved": len(mine) - len(resolved),
            }
        report["waits after a worker died"] = waits
        report["fault log"] = [
            {"kind": f.kind, "at": f.at_utc.isoformat(), "target": f.target, "held": f.held}
            for f in injector.faults
        ]
    return report


# -- printing ------------------------------------------------------------------------------------


def print_report(reports: list[dict[str, Any]]) -> None:
    columns: list[tuple[str, dict[str, Any]]] = []
    for report in reports:
        for name in ("fault-free", "chaos"):
            if name in report["phases"]:
                columns.append((f"{report['farm']} {name}", report["phases"][name]))
    rows = [
        "minutes",
        "submitted",
        "ended exactly once",
        "done",
        "failed (infrastructure)",
        "failed (other)",
        "lost",
        "doubled",
        "done per minute",
        "drain seconds",
    ]
    width = max([22, *(len(c[0]) + 2 for c in columns)])
    print()
    print("runs".ljust(26) + "".join(name.rjust(width) for name, _ in columns))
    for row in rows:
        print(row.ljust(26) + "".join(str(col.get(row, "")).rjust(width) for _, col in columns))
    for report in reports:
        every = report["all runs"]
        print(
            f"\n{report['farm']} farm, all runs (warm-up included): {every['submitted']} "
            f"submitted, {every['ended exactly once']} ended exactly once, "
            f"{every['lost']} lost, {every['doubled']} doubled"
        )
        if "faults" in report:
            faults = ", ".join(f"{k} {v}" for k, v in report["faults"].items())
            print(f"  faults injected ({sum(report['faults'].values())}): {faults}")
            for kind, wait in report["waits after a worker died"].items():
                print(
                    f"  after {kind}: {wait['runs held']} run(s) held, longest wait "
                    f"{wait['longest wait s']} s, median {wait['median wait s']} s "
                    "(kill -> next attempt started or run ended)"
                )
        chaos = report["phases"].get("chaos", {})
        for label in ("infrastructure reasons", "other reasons"):
            for reason, count in list(chaos.get(label, {}).items())[:6]:
                print(f"  chaos failed, {label.split()[0]}: {count} x {reason}")
        print(f"  supervisor restarts (from the worker log): {report['restarts (logged)']}")
        superseded = report["superseded attempts (logged)"]
        print(f"  attempts superseded (their outcome dropped): {superseded}")
        print(f"  chaos submissions: {chaos.get('submissions')}")
        print(f"  settings: {report['settings']}")
