"""The web view in headless Chromium against a farm of real runs (tests/web/conftest.py)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats

from api.main import create_app
from api.web.assets import UPLOT
from harness.regression.canary import CANARY_NAME

from webfarm import JOBS, README_SCREENSHOT, UPDATE_README_IMAGES, XSS, WebFarm


def _open(page: Any, path: str) -> Any:
    response = page.goto(path)
    assert response is not None and response.status == 200, (path, response and response.status)
    return response


def _runs_by_id(web_farm: WebFarm, job_id: int) -> dict[int, dict[str, Any]]:
    return {run["id"]: run for run in web_farm.api(f"/jobs/{job_id}")["runs"]}


def _cells(page: Any, table: str, key: str) -> list[str]:
    return list(
        page.eval_on_selector_all(
            f'table[data-table="{table}"] td[data-key="{key}"]',
            "cells => cells.map(c => c.dataset.value ?? c.textContent.trim())",
        )
    )


def _charts(page: Any, kind: str) -> list[dict[str, Any]]:
    """The charts uPlot drew on the page: per chart its series' labels and data as the uPlot
    instance holds them (``plot.data``), and the page's JSON for it."""
    return list(
        page.evaluate(
            """kind => (window.edgefarmCharts || []).filter(c => c.kind === kind).map(c => ({
                name: c.name,
                labels: c.plot.series.map(s => s.label ?? null),
                data: c.plot.data.map(a => Array.from(a, v => v ?? null)),
                bands: (c.plot.bands || []).length,
                json: c.data,
            }))""",
            kind,
        )
    )


SCRIPTS = ("/static/web.js", f"/static/vendor/uplot-{UPLOT.version}/uPlot.iife.min.js")


def test_every_page_loads_shows_the_name_as_text_and_is_screenshotted(
    page: Any, web_farm: WebFarm, shoot: Callable[[Any, str], Path]
) -> None:
    job = web_farm.jobs[-1]
    runs = sorted(_runs_by_id(web_farm, job))
    history = f"/history?model={quote(XSS)}"
    pages = {
        "dashboard": "/",
        "job": f"/jobs/{job}",
        "history": history,
        "compare": f"/compare?a={runs[0]}&b={runs[1]}",
        "compare-jobs": f"/compare?job_a={web_farm.jobs[0]}&job_b={job}",
        "devices": "/devices",
        "device": f"/devices/{web_farm.devices[0]}",
        "alerts": "/alerts",
        "suites": "/suites",
        "suite": f"/suites/{web_farm.suite}",
        "signin": "/signin",
    }
    for name, path in pages.items():
        _open(page, path)
        # The name is on the page as text, never as an element: the only scripts are ours.
        if name in ("dashboard", "job", "history", "compare", "compare-jobs", "alerts", "suite"):
            assert XSS in page.inner_text("main"), name
        # Scripts: ours and uPlot, served by the farm; inline only the charts' JSON data.
        scripts = page.eval_on_selector_all(
            "script", "s => s.map(e => [e.getAttribute('src'), e.type, e.textContent])"
        )
        for src, kind, body in scripts:
            if src is not None:
                assert src in SCRIPTS, (name, src)
            else:
                assert kind == "application/json" and "</" not in body, (name, body[:200])
        if name in ("job", "history"):
            assert _charts(page, "histogram" if name == "job" else "history"), name
            assert page.locator(".chart-missing").count() == 0
        shoot(page, name)
    # The README's picture of the history page, made here rather than by hand (when asked).
    _open(page, history)
    picture = shoot(page, "history")
    assert picture.stat().st_size > 0
    if UPDATE_README_IMAGES:
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(picture, README_SCREENSHOT)


def test_from_the_dashboard_to_a_job_its_history_a_compare_and_back(
    page: Any, web_farm: WebFarm
) -> None:
    _open(page, "/")
    newest = web_farm.jobs[-1]
    page.click(f'table[data-table="jobs"] td[data-key="id"] a[href="/jobs/{newest}"]')
    page.wait_for_url(f"**/jobs/{newest}")
    assert page.inner_text("h1").startswith(f"job {newest}")
    # The histogram of each run's raw samples, and the partition report of the BYOC runs.
    assert len(_charts(page, "histogram")) == 2 * len(web_farm.devices)
    assert page.locator("section.partition").count() == len(web_farm.devices)

    page.click('table[data-table="runs"] td[data-key="history"] a >> nth=0')
    page.wait_for_url("**/history?*")
    (chart,) = _charts(page, "history")
    assert len(chart["json"]["series"]) == 1
    page.click('table[data-table="points"] td[data-key="compare"] a >> nth=0')
    page.wait_for_url("**/compare?a=*")
    assert page.locator("p.verdict").count() == 1

    page.go_back()
    page.wait_for_url("**/history?*")
    page.go_back()
    page.wait_for_url(f"**/jobs/{newest}")
    page.go_back()
    assert page.url == f"{web_farm.url}/"


def test_job_page_numbers_are_the_apis(page: Any, web_farm: WebFarm) -> None:
    job = web_farm.jobs[0]
    api_runs = _runs_by_id(web_farm, job)
    _open(page, f"/jobs/{job}")
    shown_runs = [int(v) for v in _cells(page, "runs", "run")]
    assert sorted(shown_runs) == sorted(api_runs)
    keys = {
        "median_ms": ("latency_ms", "median"),
        "p90_ms": ("latency_ms", "p90"),
        "p99_ms": ("latency_ms", "p99"),
        "cv": ("latency_ms", "cv"),
        "n": ("latency_ms", "n"),
        "load_ms": ("load_ms",),
        "first_ms": ("first_ms",),
        "peak_rss_kb": ("peak_rss_kb",),
    }
    for key, path in keys.items():
        values = _cells(page, "runs", key)
        for run_id, shown in zip(shown_runs, values, strict=True):
            document: Any = api_runs[run_id]["result"]["document"]
            for step in path:
                document = document[step]
            assert float(shown) == float(document), (key, run_id)
    # The texts shown are those numbers rounded (three decimals, or three significant
    # digits below 1 ms), not other numbers.
    medians = page.eval_on_selector_all(
        'table[data-table="runs"] td[data-key="median_ms"]', "cs => cs.map(c => c.textContent)"
    )
    for run_id, text in zip(shown_runs, medians, strict=True):
        median = api_runs[run_id]["result"]["document"]["latency_ms"]["median"]
        value = float(text.replace(",", ""))
        assert math.isclose(value, median, rel_tol=5e-3, abs_tol=5e-4), (text, median)
    # Each histogram (its uPlot bars) counts every raw sample; each partition report is the
    # API's.
    histograms = {chart["name"]: chart for chart in _charts(page, "histogram")}
    for run_id, run in api_runs.items():
        document = run["result"]["document"]
        section = page.locator(f"#run-{run_id}")
        bars = histograms[f"chart-histogram-{run_id}"]["data"]
        assert sum(bars[1]) == len(document["samples_ms"]) == document["latency_ms"]["n"]
        samples = document["samples_ms"]
        assert bars[0][0] > min(samples) and bars[0][-1] < max(samples)  # bin centres
        if "partition" in document:
            shown = section.locator('dd[data-key="subgraphs"]').inner_text()
            assert int(shown) == document["partition"]["subgraphs"]
            cpu_ops = section.locator("table[data-table^='cpu_ops'] tbody tr").count()
            assert cpu_ops == len(document["partition"]["cpu_ops"])
        # The first job recorded a per-operator profile: its table is the document's.
        profile = document["profile"]
        assert profile
        names = _cells(page, f"profile_{run_id}", "name")
        totals = [float(v) for v in _cells(page, f"profile_{run_id}", "total_ms")]
        assert names == [op["name"] for op in profile]
        assert totals == [op["total_ms"] for op in profile]


def test_cost_mode_tables_are_the_runs_cost_model_against_its_measurement(
    page: Any, web_farm: WebFarm, shoot: Callable[[Any, str], Path]
) -> None:
    """A real cost-guided run (tvm-nnapi, partition "cost": the worker calibrated the phone's
    device class, then built and measured the chosen partition): the job page shows the cost
    model's prediction against the measured median, each offload candidate with its CPU and
    accelerator times and placement, and each offloaded subgraph, all as the API has them."""
    job = web_farm.cost_job
    (run,) = web_farm.api(f"/jobs/{job}")["runs"]
    run_id, document = run["id"], run["result"]["document"]
    report = document["partition"]
    cost = report["cost"]
    assert report["mode"] == "cost" and cost["candidates"]
    assert cost["calibration"]["measured_now"] + cost["calibration"]["reused"] > 0
    _open(page, f"/jobs/{job}")
    shoot(page, "job-cost")
    section = page.locator(f"#run-{run_id} section.partition")
    assert f"cost mode, {cost['device_class']}" in section.inner_text()

    summary = f"cost_{run_id}"
    assert cost["device_class"] in page.inner_text(f"#t-{summary} h2")
    assert _cells(page, summary, "what") == [
        "this partition (chosen)",
        "everything on the CPU",
        "every candidate offloaded",
    ]
    predicted = [float(v) for v in _cells(page, summary, "predicted_ms")]
    assert predicted == [
        report["predicted_ms"],
        cost["predicted_cpu_only_ms"],
        cost["predicted_all_ms"],
    ]
    measured, *others = _cells(page, summary, "measured_ms")
    median = document["latency_ms"]["median"]
    assert float(measured) == report["measured_ms"] == median and others == ["—", "—"]
    (ratio, *_) = _cells(page, summary, "error")
    assert math.isclose(float(ratio), median / report["predicted_ms"], rel_tol=1e-12)

    table = f"candidates_{run_id}"
    ops = _cells(page, table, "ops")
    placed = _cells(page, table, "placement")
    cpu_ms = [float(v) for v in _cells(page, table, "cpu_ms")]
    accel_ms = [float(v) for v in _cells(page, table, "accel_ms")]
    saving = [float(v) for v in _cells(page, table, "saving_ms")]
    candidates = cost["candidates"]
    assert ops == [" + ".join(c["ops"]) for c in candidates]
    assert placed == [str(bool(c["offloaded"])) for c in candidates]
    assert cpu_ms == [c["cpu_ms"] for c in candidates]
    assert accel_ms == [c["accel_ms"] for c in candidates]
    assert saving == pytest.approx([c["cpu_ms"] - c["accel_ms"] for c in candidates])
    texts = page.eval_on_selector_all(
        f'table[data-table="{table}"] td[data-key="placement"]', "cs => cs.map(c => c.textContent)"
    )
    assert texts == ["accelerator" if c["offloaded"] else "CPU" for c in candidates]
    # The operators placed on the accelerator are those counted offloaded; those the cost
    # model kept are listed as kept on the CPU by "cost decision".
    offloaded = sum(len(c["ops"]) for c in candidates if c["offloaded"])
    assert (
        section.locator('dd[data-key="ops_offloaded"]').inner_text().startswith(f"{offloaded} of ")
    )
    reasons = _cells(page, f"cpu_ops_{run_id}", "reason")
    kept = sum(len(c["ops"]) for c in candidates if not c["offloaded"])
    assert reasons.count("cost decision") == kept

    table = f"subgraphs_{run_id}"
    subgraphs = cost["subgraphs"]
    assert len(subgraphs) == report["subgraphs"]
    assert [int(v) for v in _cells(page, table, "ops")] == [s["ops"] for s in subgraphs]
    assert [int(v) for v in _cells(page, table, "boundary_bytes")] == [
        s["boundary_bytes"] for s in subgraphs
    ]
    assert [float(v) for v in _cells(page, table, "accel_ms")] == [s["accel_ms"] for s in subgraphs]
    # Their exports hold the same rows.
    with httpx.Client(base_url=web_farm.url) as client:
        data = client.get(f"/jobs/{job}?format=json").json()
    assert [r["ops"] for r in data[f"candidates_{run_id}"]] == ops
    assert [r["predicted_ms"] for r in data[summary]] == predicted


def test_history_chart_has_one_point_per_run_with_the_apis_medians(
    page: Any, web_farm: WebFarm
) -> None:
    _open(page, f"/history?model={quote(XSS)}")
    (chart,) = _charts(page, "history")
    series = chart["json"]["series"]
    assert len(series) == len(web_farm.devices) * 2
    # One band (p10-p90) per series, between its two edge series in uPlot.
    assert chart["bands"] == len(series)
    for device in web_farm.devices:
        for backend in ("tvm-cpu", "tvm-nnapi"):
            results = web_farm.api(
                f"/results?model={quote(XSS)}&device={device}&backend={backend}&limit=1000"
            )["data"]
            assert len(results) == JOBS
            label = f"#{device} · {backend}"
            (k,) = [k for k, s in enumerate(series) if s["label"].endswith(label)]
            # The uPlot instance's own data: its median series has one point per run.
            assert chart["labels"][1 + 3 * k] == series[k]["label"]
            medians = [v for v in chart["data"][1 + 3 * k] if v is not None]
            assert len(medians) == len(results)
            assert sorted(medians) == sorted(r["document"]["latency_ms"]["median"] for r in results)
            assert set(series[k]["run"]) == {r["run_id"] for r in results}
            # Each band edge is above / below its median.
            for median, high, low in zip(*chart["data"][1 + 3 * k : 4 + 3 * k], strict=True):
                if median is not None:
                    assert low <= median <= high
    # The alert of the night is on its series' point.
    alerted = [a for s in series for point in s["alerts"] for a in point]
    assert alerted == [web_farm.alert_id]


def _point_on_screen(page: Any, series: int, index: int) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """([k, i]) => {
                const c = window.edgefarmCharts.find(c => c.kind === "history");
                const s = c.data.series[k], box = c.plot.over.getBoundingClientRect();
                return {x: box.left + c.plot.valToPos(s.t[i], "x"),
                        y: box.top + c.plot.valToPos(s.median[i], "y"),
                        job: s.job[i], run: s.run[i],
                        left: box.left, top: box.top, width: box.width, height: box.height};
            }""",
            [series, index],
        )
    )


def test_a_click_on_a_point_opens_its_job_and_a_drag_zooms(page: Any, web_farm: WebFarm) -> None:
    device = web_farm.devices[0]
    view = f"/history?model={quote(XSS)}&device={device}&backend=tvm-cpu"
    _open(page, view)
    point = _point_on_screen(page, 0, 1)
    page.mouse.click(point["x"], point["y"])
    page.wait_for_url(f"**/jobs/{point['job']}#run-{point['run']}")
    assert page.inner_text("h1").startswith(f"job {point['job']}")

    # Drag across the middle of the plot: the view becomes that time range, in the URL.
    _open(page, view)
    box = _point_on_screen(page, 0, 0)
    y = box["top"] + box["height"] / 2
    page.mouse.move(box["left"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["left"] + box["width"] * 0.8, y, steps=8)
    page.mouse.up()
    page.wait_for_url("**/history?*since=*until=*")
    since = datetime.fromisoformat(page.locator('input[name="since"]').input_value())
    until = datetime.fromisoformat(page.locator('input[name="until"]').input_value())
    assert since < until
    shown = [datetime.fromisoformat(v) for v in _cells(page, "points", "at")]
    assert len(shown) < JOBS and all(since <= at < until for at in shown)
    if shown:
        (zoomed,) = _charts(page, "history")
        assert len(zoomed["json"]["series"][0]["t"]) == len(shown)


def test_several_series_overlaid_by_device_or_backend_with_the_state_in_the_url(
    page: Any, web_farm: WebFarm
) -> None:
    first, second = web_farm.devices
    by_device = f"/history?model={quote(XSS)}&device={first}&device={second}&backend=tvm-cpu"
    by_backend = f"/history?model={quote(XSS)}&device={first}&backend=tvm-cpu&backend=tvm-nnapi"
    for path, expected in (
        (by_device, {f"#{first} · tvm-cpu", f"#{second} · tvm-cpu"}),
        (by_backend, {f"#{first} · tvm-cpu", f"#{first} · tvm-nnapi"}),
        # The form's comma list is the same view.
        (f"/history?model={quote(XSS)}&device={first},{second}&backend=tvm-cpu", None),
    ):
        _open(page, path)
        (chart,) = _charts(page, "history")
        labels = {" ".join(s["label"].split(" ")[-3:]) for s in chart["json"]["series"]}
        assert labels == (expected or {f"#{first} · tvm-cpu", f"#{second} · tvm-cpu"}), path
        # One line and one band per series; each its own colour; a legend entry each.
        assert chart["bands"] == len(labels)
        assert len({s["color"] for s in chart["json"]["series"]}) == len(labels)
        assert page.locator("ul.legend li").count() == len(labels)
    # The form keeps the view: submitting it again gives the same series.
    page.click('form.filters button[type="submit"]')
    page.wait_for_url("**/history?*")
    (chart,) = _charts(page, "history")
    assert len(chart["json"]["series"]) == 2


def test_a_legend_swatch_hides_and_shows_its_series_and_band(page: Any, web_farm: WebFarm) -> None:
    first = web_farm.devices[0]
    _open(page, f"/history?model={quote(XSS)}&device={first}&backend=tvm-cpu&backend=tvm-nnapi")
    shown = """() => {
        const c = window.edgefarmCharts.find(c => c.kind === "history");
        return {show: c.plot.series.map(s => s.show), picture: c.plot.ctx.canvas.toDataURL()};
    }"""
    before = page.evaluate(shown)
    # uPlot's series: the x values, then per series its median, p90 and p10 (the band's edges).
    assert before["show"] == [True] * 7
    toggles = page.locator("ul.legend .series-toggle")
    assert toggles.count() == 2
    toggles.nth(0).click()
    hidden = page.evaluate(shown)
    assert hidden["show"] == [True, False, False, False, True, True, True]
    assert hidden["picture"] != before["picture"]  # drawn again without it
    assert toggles.nth(0).get_attribute("aria-pressed") == "false"
    assert "off" in (page.locator("ul.legend li").nth(0).get_attribute("class") or "")
    toggles.nth(0).click()
    again = page.evaluate(shown)
    assert again["show"] == [True] * 7
    assert again["picture"] == before["picture"]
    assert toggles.nth(0).get_attribute("aria-pressed") == "true"


def test_the_device_page_draws_one_canary_point_per_canary_run(
    page: Any, web_farm: WebFarm
) -> None:
    first, second = web_farm.devices
    results = web_farm.api(f"/results?model={CANARY_NAME}&device={first}&limit=100")["data"]
    assert len(results) == len(web_farm.canary_jobs)
    _open(page, f"/devices/{first}")
    (chart,) = _charts(page, "history")
    assert chart["name"] == "chart-canary"
    (series,) = chart["json"]["series"]
    # uPlot's own data: one point per canary run, at the API's medians, each opening its job.
    medians = [v for v in chart["data"][1] if v is not None]
    assert len(medians) == len(results)
    assert sorted(medians) == sorted(r["document"]["latency_ms"]["median"] for r in results)
    assert sorted(series["job"]) == sorted(web_farm.canary_jobs)
    # The other phone ran no canary: no chart.
    _open(page, f"/devices/{second}")
    assert _charts(page, "history") == []
    assert page.locator("#chart-canary").count() == 0


def test_the_suite_page_shows_its_spec_nights_series_and_alerts(
    page: Any, web_farm: WebFarm
) -> None:
    _open(page, "/suites")
    page.click(f'table[data-table="suites"] a[href="/suites/{web_farm.suite}"]')
    page.wait_for_url(f"**/suites/{web_farm.suite}")
    suite = web_farm.api(f"/suites/{web_farm.suite}")
    nights = web_farm.api(f"/suites/{web_farm.suite}/nights")["data"]
    assert [int(v) for v in _cells(page, "nights", "id")] == [n["id"] for n in nights]
    assert _cells(page, "nights", "status") == [n["status"] for n in nights]
    assert _cells(page, "nights", "jobs") == [str(web_farm.jobs[-1])]
    spec = dict(zip(_cells(page, "spec", "key"), _cells(page, "spec", "value"), strict=True))
    assert spec["backends"] == json.dumps(suite["spec"]["backends"])
    assert [int(v) for v in _cells(page, "alerts", "id")] == [web_farm.alert_id]
    assert _cells(page, "series", "model") == [XSS]
    page.click('table[data-table="series"] td[data-key="history"] a')
    page.wait_for_url("**/history?*")
    assert len(_charts(page, "history")[0]["json"]["series"]) == 1
    assert page.goto("/suites/no-such-suite").status == 404


def test_compare_shows_the_ratio_and_the_mann_whitney_test_of_the_raw_samples(
    page: Any, web_farm: WebFarm
) -> None:
    a_runs = _runs_by_id(web_farm, web_farm.jobs[0])
    b_runs = _runs_by_id(web_farm, web_farm.jobs[1])
    a = next(r for r in a_runs.values() if r["backend"] == "tvm-cpu")
    b = next(
        r for r in b_runs.values() if r["backend"] == "tvm-cpu" and r["device_id"] == a["device_id"]
    )
    _open(page, f"/compare?a={a['id']}&b={b['id']}")
    sa = a["result"]["document"]["samples_ms"]
    sb = b["result"]["document"]["samples_ms"]
    ratio = float(_cells(page, "metrics", "ratio")[0])
    ma = a["result"]["document"]["latency_ms"]["median"]
    mb = b["result"]["document"]["latency_ms"]["median"]
    assert math.isclose(ratio, mb / ma, rel_tol=1e-12)
    values = _cells(page, "significance", "value")
    expected_p = stats.mannwhitneyu(np.log(sb), np.log(sa), alternative="two-sided").pvalue
    assert math.isclose(float(values[3]), float(expected_p), rel_tol=1e-9)
    assert float(values[1]) <= float(values[0]) <= float(values[2])


def test_triage_from_the_alerts_page_after_signing_in(page: Any, web_farm: WebFarm) -> None:
    _open(page, "/alerts")
    row = page.locator(f"#alert-{web_farm.alert_id}")
    assert row.locator("form.triage").count() == 0  # not signed in: no forms
    page.click("text=Sign in")
    page.fill('input[name="token"]', web_farm.token)
    page.click('form.signin button[type="submit"]')
    page.wait_for_url("**/alerts*")
    assert web_farm.token_name in page.inner_text("header")
    form = page.locator(f"#alert-{web_farm.alert_id} form.triage")
    form.locator('select[name="state"]').select_option("acknowledged")
    form.locator('input[name="note"]').fill("<b>looking</b>")
    form.locator('button[type="submit"]').click()
    page.wait_for_url(f"**/alerts#alert-{web_farm.alert_id}")
    alert = web_farm.api(f"/alerts/{web_farm.alert_id}")
    assert alert["state"] == "acknowledged"
    event = alert["events"][-1]
    assert (event["actor"], event["note"]) == (web_farm.token_name, "<b>looking</b>")
    cell = page.locator(f'#alert-{web_farm.alert_id} td[data-key="state"]')
    assert cell.inner_text() == "acknowledged"


def test_forms_need_their_csrf_token_and_a_session(web_farm: WebFarm) -> None:
    with httpx.Client(base_url=web_farm.url) as client:
        client.get("/alerts")  # the CSRF cookie
        answer = client.post(
            f"/alerts/{web_farm.alert_id}/triage", data={"state": "fixed", "csrf": "forged"}
        )
        assert answer.status_code == 400 and "CSRF" in answer.text
        form = client.get("/signin").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form)
        assert csrf is not None
        answer = client.post(
            f"/alerts/{web_farm.alert_id}/triage", data={"state": "fixed", "csrf": csrf[1]}
        )
        assert answer.status_code == 401 and 'action="/signin"' in answer.text
        answer = client.post("/signin", data={"token": "ef_not-a-token", "csrf": csrf[1]})
        assert answer.status_code == 401 and "unknown or revoked" in answer.text
    assert web_farm.api(f"/alerts/{web_farm.alert_id}")["state"] != "fixed"


def test_closed_reads_need_a_token_on_the_pages_too(web_farm: WebFarm) -> None:
    app = create_app(web_farm.settings.model_copy(update={"api_reads_need_token": True}))
    with TestClient(app) as client:
        for path in ("/", f"/jobs/{web_farm.jobs[0]}", "/history", "/?format=json"):
            answer = client.get(path)
            assert answer.status_code == 401 and 'action="/signin"' in answer.text, path
        answer = client.get("/", headers={"Authorization": f"Bearer {web_farm.token}"})
        assert answer.status_code == 200
        client.cookies.set("edgefarm_session", web_farm.token)
        assert client.get("/history").status_code == 200


def test_exports_hold_the_rows_the_page_shows(page: Any, web_farm: WebFarm) -> None:
    path = f"/history?model={quote(XSS)}"
    _open(page, path)
    shown = [int(v) for v in _cells(page, "points", "run")]
    with httpx.Client(base_url=web_farm.url) as client:
        rows = list(csv.DictReader(io.StringIO(client.get(f"{path}&format=csv&table=points").text)))
        assert [int(r["run"]) for r in rows] == shown
        assert {r["series"].split(" · ")[0] for r in rows} == {XSS}
        data = client.get(f"{path}&format=json").json()
        assert [r["run"] for r in data["points"]] == shown
        dashboard = client.get("/?format=json").json()
        every_job = [*web_farm.jobs, web_farm.cost_job, *web_farm.canary_jobs]
        assert [r["id"] for r in dashboard["jobs"]] == sorted(every_job, reverse=True)


def test_unknown_filter_values_give_an_empty_view(page: Any, web_farm: WebFarm) -> None:
    for path in (
        "/history?model=no-such-model",
        "/history?device=phone",
        "/history?since=yesterday",
        "/alerts?state=sleepy",
        "/compare?a=x&b=99999",
        "/devices?pool=nowhere",
    ):
        _open(page, path)
        assert page.locator("table tbody tr").count() == 0, path
    response = page.goto("/jobs/999999")
    assert response is not None and response.status == 404
    assert "no job with id 999999" in page.inner_text("main")
