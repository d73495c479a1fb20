"""``edgefarm suite``: nightly regression suites on a farm, over its API — create, list, show,
update, pause, resume, delete, run now (``--wait`` for the night's results), and the suite's
webhooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from harness.cli.render import console, out
from harness.cli.render_nightly import (
    deliveries_table,
    night_results_table,
    nights_table,
    suite_lines,
    suites_table,
    webhooks_table,
    when,
)
from harness.errors import JobError

if TYPE_CHECKING:
    from harness.nightly_client import NightJson, NightlyClient

Url = Annotated[str | None, typer.Option(help="The farm (default: edgefarm up's).")]
Token = Annotated[str | None, typer.Option(help="API token (default: edgefarm up's).")]
Name = Annotated[str, typer.Argument(help="The suite's name.")]

# What a suite measures, as flags (create and update share them).
Models = Annotated[
    list[str] | None,
    typer.Option(
        "--model", "-m", help="A model's name as uploaded (its newest upload runs); repeatable."
    ),
]
Backends = Annotated[
    list[str] | None, typer.Option("--backend", "-b", help="tvm-cpu, ort, ...; repeatable.")
]
Devices = Annotated[
    str | None,
    typer.Option("--devices", "-s", help="all | pool=NAME | soc=NAME | model=TEXT | ids=1,2"),
]
Matrix = Annotated[
    list[str] | None,
    typer.Option(
        "--matrix",
        help="BACKEND.OPTION=V1,V2 (or a JSON list): one series per combination; repeatable.",
    ),
]
Options = Annotated[
    list[str] | None,
    typer.Option("--option", "-o", help="BACKEND.KEY=VALUE, the same every night; repeatable."),
]
Tuning = Annotated[
    str | None,
    typer.Option(
        "--tuning",
        help="A nightly tvm-cpu tuning budget: trials=N (per task, counting the farm's "
        "records) or minutes=M, optionally ,batch=B, ,threads=T (TVM's thread pool while "
        "timing: the threads option of the suite's tvm-cpu runs) and ,population=P (the "
        "search's, 64 by default).",
    ),
]
Inputs = Annotated[
    list[str] | None, typer.Option("--input", "-i", help="NAME:1x3x224x224[:float32].")
]
Warmup = Annotated[int | None, typer.Option(help="Untimed calls first.")]
MinIterations = Annotated[int | None, typer.Option(help="Timed calls, at least.")]
MinSeconds = Annotated[float | None, typer.Option(help="Timed seconds, at least.")]
MaxSeconds = Annotated[float | None, typer.Option(help="Stop timing after this.")]
Seed = Annotated[int | None, typer.Option(help="Seed of the random inputs.")]
Schedule = Annotated[
    str | None, typer.Option(help="Cron: minute hour day-of-month month day-of-week.")
]
TimeZone = Annotated[str | None, typer.Option("--timezone", help="IANA name, e.g. Europe/Paris.")]
Description = Annotated[str | None, typer.Option(help="What the suite is for.")]
SuiteFile = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="JSON: a suite's body ({spec, schedule, ...}) or its spec."),
]


def register(app: typer.Typer) -> None:
    suite_app = typer.Typer(
        help="Nightly regression suites: what the farm measures every night, and when.",
        no_args_is_help=True,
    )
    suite_app.command("create")(suite_create)
    suite_app.command("list")(suite_list)
    suite_app.command("show")(suite_show)
    suite_app.command("update")(suite_update)
    suite_app.command("pause")(suite_pause)
    suite_app.command("resume")(suite_resume)
    suite_app.command("run")(suite_run)
    suite_app.command("delete")(suite_delete)
    webhook_app = typer.Typer(
        help="A suite's webhooks: signed JSON notifications of its nights and alerts.",
        no_args_is_help=True,
    )
    webhook_app.command("add")(webhook_add)
    webhook_app.command("list")(webhook_list)
    webhook_app.command("remove")(webhook_remove)
    webhook_app.command("deliveries")(webhook_deliveries)
    suite_app.add_typer(webhook_app, name="webhook")
    app.add_typer(suite_app, name="suite")


def _usage(message: str) -> NoReturn:
    console.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _client(url: str | None, token: str | None) -> NightlyClient:
    from harness.nightly_client import NightlyClient

    return NightlyClient(url, token)


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_matrix(values: list[str]) -> dict[str, list[Any]]:
    """``--matrix tvm-cpu.opt_level=2,3`` as {"tvm-cpu.opt_level": [2, 3]}; a value that is a
    JSON list is taken whole; each value is JSON if it parses as JSON, else the text."""
    matrix: dict[str, list[Any]] = {}
    for text in values:
        key, sep, raw = text.partition("=")
        backend, dot, option = key.strip().partition(".")
        if not sep or not dot or not backend or not option or not raw.strip():
            _usage(f"--matrix {text!r}: write BACKEND.OPTION=V1,V2, e.g. tvm-cpu.opt_level=2,3")
        parsed = _json_value(raw) if raw.strip().startswith("[") else None
        if isinstance(parsed, list):
            matrix[key.strip()] = parsed
        else:
            matrix[key.strip()] = [_json_value(v.strip()) for v in raw.split(",")]
    return matrix


def _read_file(path: Path) -> dict[str, Any]:
    try:
        given = json.loads(path.read_text())
    except OSError as exc:
        _usage(f"--file {path}: {exc.strerror or exc}")
    except json.JSONDecodeError as exc:
        _usage(f"--file {path} is not JSON: {exc}")
    if not isinstance(given, dict):
        _usage(f"--file {path}: a JSON object is needed (a suite, or its spec)")
    # A suite's body has a spec; anything else is taken for the spec itself.
    return given if "spec" in given else {"spec": given}


def parse_tuning(text: str) -> dict[str, Any]:
    """``--tuning trials=32`` / ``minutes=20,batch=8,threads=2,population=32`` as a suite's
    ``tuning``."""
    budget: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("trials", "minutes", "batch", "threads", "population"):
            _usage(
                f"--tuning {text!r}: write trials=N or minutes=M "
                "(optionally ,batch=B ,threads=T ,population=P)"
            )
        try:
            budget[key] = float(value) if key == "minutes" else int(value)
        except ValueError:
            _usage(f"--tuning {text!r}: {key} takes a number, not {value.strip()!r}")
    return budget


def _spec(
    base: dict[str, Any],
    *,
    models: list[str] | None,
    backends: list[str] | None,
    devices: str | None,
    matrix: list[str] | None,
    options: list[str] | None,
    knobs: dict[str, Any],
    tuning: str | None = None,
) -> dict[str, Any]:
    """``base`` (a spec) with what the flags say."""
    from harness.cli.options import parse_options
    from harness.client import parse_selector

    spec = json.loads(json.dumps(base))  # a deep copy
    if models:
        spec["models"] = models
    if backends:
        spec["backends"] = backends
    try:
        if devices is not None:
            spec["devices"] = parse_selector(devices)
        settings = spec.setdefault("settings", {})
        for backend, given in parse_options(options or []).items():
            settings.setdefault("options", {}).setdefault(backend, {}).update(given)
    except JobError as exc:
        _usage(exc.message)
    if matrix:
        spec["matrix"] = parse_matrix(matrix)
    if tuning is not None:
        spec["tuning"] = parse_tuning(tuning)
    settings.update({k: v for k, v in knobs.items() if v is not None})
    return spec  # type: ignore[no-any-return]


def suite_create(
    name: Name,
    model: Models = None,
    backend: Backends = None,
    devices: Devices = None,
    matrix: Matrix = None,
    option: Options = None,
    tuning: Tuning = None,
    input: Inputs = None,
    warmup: Warmup = None,
    min_iterations: MinIterations = None,
    min_seconds: MinSeconds = None,
    max_seconds: MaxSeconds = None,
    seed: Seed = None,
    schedule: Schedule = None,
    timezone: TimeZone = None,
    description: Description = None,
    paused: Annotated[bool, typer.Option(help="Create it paused (no scheduled nights).")] = False,
    file: SuiteFile = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a suite: models x backends (x option combinations), every night at SCHEDULE."""
    knobs = {
        "inputs": input,
        "warmup": warmup,
        "min_iterations": min_iterations,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "seed": seed,
    }
    spec_flags = bool(model or backend or devices or matrix or option or tuning) or any(
        v is not None for v in knobs.values()
    )
    if file is not None:
        if spec_flags:
            _usage("give what the suite measures by --file or by flags (--model, ...), not both")
        body = _read_file(file)
    else:
        if not model or not backend:
            _usage("a suite needs --model and --backend (or --file)")
        body = {"spec": {}}
        body["spec"] = _spec(
            {"devices": {"all": True}},
            models=model,
            backends=backend,
            devices=devices,
            matrix=matrix,
            options=option,
            knobs=knobs,
            tuning=tuning,
        )
    given = {"schedule": schedule, "timezone": timezone, "description": description}
    body.update({k: v for k, v in given.items() if v is not None})
    if paused:
        body["enabled"] = False
    body["name"] = name
    client = _client(url, token)
    try:
        suite = client.create_suite(body)
    finally:
        client.close()
    out.print(
        f"suite {suite['name']} created (version {suite['version']}); "
        + (f"next night {when(suite['next_run_at'])}" if suite["enabled"] else "paused"),
        highlight=False,
    )


def suite_list(url: Url = None, token: Token = None) -> None:
    """List the farm's suites with their next and last nights."""
    client = _client(url, token)
    try:
        suites = client.suites()
    finally:
        client.close()
    out.print(suites_table(suites))


def suite_show(
    name: Name,
    nights: Annotated[int, typer.Option(min=1, max=1000, help="How many recent nights.")] = 10,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the suite here.")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """A suite: what it measures, when, its recent nights and (with a token) its webhooks."""
    from harness.client import FarmError

    client = _client(url, token)
    try:
        suite = client.suite(name)
        recent = client.nights(name, limit=nights)
        try:
            hooks = client.webhooks(name)
        except FarmError as exc:
            if exc.status != 401:
                raise
            hooks = []  # webhooks are shown to token holders only
    finally:
        client.close()
    for line in suite_lines(suite):
        out.print(line, highlight=False, soft_wrap=True)
    out.print(nights_table(recent))
    if hooks:
        out.print(webhooks_table(hooks))
    if json_path is not None:
        json_path.write_text(json.dumps(suite, indent=2) + "\n")


def suite_update(
    name: Name,
    model: Models = None,
    backend: Backends = None,
    devices: Devices = None,
    matrix: Matrix = None,
    no_matrix: Annotated[bool, typer.Option("--no-matrix", help="Sweep nothing.")] = False,
    option: Options = None,
    tuning: Tuning = None,
    no_tuning: Annotated[bool, typer.Option("--no-tuning", help="Tune nothing at night.")] = False,
    input: Inputs = None,
    warmup: Warmup = None,
    min_iterations: MinIterations = None,
    min_seconds: MinSeconds = None,
    max_seconds: MaxSeconds = None,
    seed: Seed = None,
    schedule: Schedule = None,
    timezone: TimeZone = None,
    description: Description = None,
    file: SuiteFile = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Change a suite (what is not given stays); a change of what it measures is a version."""
    knobs = {
        "inputs": input,
        "warmup": warmup,
        "min_iterations": min_iterations,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "seed": seed,
    }
    spec_flags = bool(
        model or backend or devices or matrix or option or no_matrix or tuning or no_tuning
    ) or any(v is not None for v in knobs.values())
    if file is not None and spec_flags:
        _usage("give what the suite measures by --file or by flags (--model, ...), not both")
    if matrix and no_matrix:
        _usage("--matrix and --no-matrix contradict each other")
    if tuning and no_tuning:
        _usage("--tuning and --no-tuning contradict each other")
    changes: dict[str, Any] = _read_file(file) if file is not None else {}
    given = {"schedule": schedule, "timezone": timezone, "description": description}
    changes.update({k: v for k, v in given.items() if v is not None})
    client = _client(url, token)
    try:
        if spec_flags:
            spec = _spec(
                client.suite(name)["spec"],
                models=model,
                backends=backend,
                devices=devices,
                matrix=matrix,
                options=option,
                knobs=knobs,
                tuning=tuning,
            )
            if no_matrix:
                spec["matrix"] = {}
            if no_tuning:
                spec["tuning"] = None
            changes["spec"] = spec
        if not changes:
            _usage("nothing to change: give a flag (see edgefarm suite update --help)")
        suite = client.update_suite(name, changes)
    finally:
        client.close()
    out.print(f"suite {suite['name']}: version {suite['version']}", highlight=False)


def suite_pause(name: Name, url: Url = None, token: Token = None) -> None:
    """Stop scheduling a suite's nights (it still runs with `edgefarm suite run`)."""
    client = _client(url, token)
    try:
        suite = client.pause_suite(name)
    finally:
        client.close()
    out.print(f"suite {suite['name']} paused", highlight=False)


def suite_resume(name: Name, url: Url = None, token: Token = None) -> None:
    """Schedule a paused suite's nights again."""
    client = _client(url, token)
    try:
        suite = client.resume_suite(name)
    finally:
        client.close()
    out.print(
        f"suite {suite['name']} resumed; next night {when(suite['next_run_at'])}",
        highlight=False,
    )


def suite_delete(
    name: Name,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Delete a suite with its nights, series, alerts and webhooks (its jobs and results stay)."""
    if not yes:
        typer.confirm(
            f"delete suite {name} with its nights, series, alerts and webhooks?", abort=True
        )
    client = _client(url, token)
    try:
        client.delete_suite(name)
    finally:
        client.close()
    out.print(f"suite {name} deleted", highlight=False)


def _night_rows(client: NightlyClient, night: NightJson) -> list[tuple[str, dict[str, Any]]]:
    """(variant, result document) of every run of the night, in job and run order; a run that
    ended without a result gets a failed document saying so."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for summary in night["jobs"]:
        job = client.job_json(summary["id"])
        for run in job["runs"]:
            result = run.get("result")
            if result is not None:
                rows.append((summary["variant"], result["document"]))
                continue
            error = run.get("error") or {}
            rows.append(
                (
                    summary["variant"],
                    {
                        "model": {"name": f"model {job['model_id']}"},
                        "device": {"id": f"device {run['device_id']}"},
                        "backend": run["backend"],
                        "status": "failed",
                        "error": {
                            "stage": error.get("stage") or "run",
                            "message": error.get("message") or f"run ended {run['status']}",
                        },
                    },
                )
            )
    return rows


def suite_run(
    name: Name,
    wait: Annotated[
        bool, typer.Option(help="Wait for the night's results and print them.")
    ] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait at most.")] = 6 * 3600.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the night and its results (--wait).")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Start a night of the suite now; with --wait, print its results when its jobs end."""
    client = _client(url, token)
    try:
        night = client.run_suite(name)
        jobs = len(night["jobs"])
        out.print(
            f"night {night['id']} of suite {night['suite']}: {jobs} job(s) queued at {client.url}",
            highlight=False,
        )
        for problem in night["problems"]:
            console.print(
                f"[red]problem:[/] {problem.get('what')}: {problem.get('message')}",
                highlight=False,
                soft_wrap=True,
            )
        if night["status"] == "failed":
            raise typer.Exit(1)
        if not wait:
            return
        with console.status(f"night {night['id']}: waiting", spinner="dots") as status:

            def on_update(current: NightJson) -> None:
                done = sum(1 for j in current["jobs"] if j["status"] == "done")
                status.update(
                    f"night {current['id']}: {done} of {len(current['jobs'])} job(s) done"
                )

            night = client.wait_night(night["id"], on_update=on_update, timeout_s=timeout)
        rows = _night_rows(client, night)
    finally:
        client.close()
    out.print(night_results_table(f"night {night['id']} of suite {night['suite']}", rows))
    for _, doc in rows:
        if doc.get("status") != "ok" and doc.get("error"):
            console.print(
                f"[red]failed[/] {doc['model'].get('name')} / {doc['device'].get('id')} / "
                f"{doc['backend']} at [bold]{doc['error'].get('stage')}[/]: "
                f"{doc['error'].get('message')}",
                highlight=False,
                soft_wrap=True,
            )
    if json_path is not None:
        results = [{"variant": variant, "document": doc} for variant, doc in rows]
        json_path.write_text(json.dumps({"night": night, "results": results}, indent=2) + "\n")
    raise typer.Exit(0 if rows and all(doc.get("status") == "ok" for _, doc in rows) else 1)


def webhook_add(
    name: Name,
    hook_url: Annotated[str, typer.Argument(metavar="URL", help="http:// or https:// to POST to.")],
    secret: Annotated[
        str | None, typer.Option(help="Keys the signature (16-128 characters); default: made.")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Add a webhook to a suite and print its secret (shown this once)."""
    client = _client(url, token)
    try:
        hook = client.add_webhook(name, hook_url, secret)
    finally:
        client.close()
    out.print(hook["secret"], highlight=False, soft_wrap=True)
    console.print(
        f"webhook {hook['id']} of suite {name} -> {hook['url']}; its secret (above) verifies "
        "X-Edgefarm-Signature and is not shown again",
        highlight=False,
        soft_wrap=True,
    )


def webhook_list(name: Name, url: Url = None, token: Token = None) -> None:
    """A suite's webhooks (never their secrets)."""
    client = _client(url, token)
    try:
        hooks = client.webhooks(name)
    finally:
        client.close()
    out.print(webhooks_table(hooks))


def webhook_remove(
    webhook_id: Annotated[int, typer.Argument(metavar="ID", help="The webhook's id.")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Remove a webhook and its delivery log."""
    client = _client(url, token)
    try:
        client.remove_webhook(webhook_id)
    finally:
        client.close()
    out.print(f"webhook {webhook_id} removed", highlight=False)


def webhook_deliveries(
    webhook_id: Annotated[int, typer.Argument(metavar="ID", help="The webhook's id.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    url: Url = None,
    token: Token = None,
) -> None:
    """A webhook's delivery log: each notification, its attempts and what the receiver said."""
    client = _client(url, token)
    try:
        found = client.deliveries(webhook_id, limit=limit)
    finally:
        client.close()
    out.print(deliveries_table(found))
