// The pages' charts, drawn by uPlot from the JSON block beside each chart (api/web/charts.py).
// Tables, links and exports work without this file; only the charts need it (and uPlot,
// installed by `python -m api.web.assets`). Every text drawn goes through the canvas or
// textContent: a name is never markup.
(function () {
  "use strict";
  // Every chart drawn, for whoever wants to read it (the browser tests do).
  var drawn = (window.edgefarmCharts = []);
  var PICK_PX = 12; // a click this close to a point opens it
  var DRAG_PX = 5; // a drag at least this wide zooms

  function rgba(hex, alpha) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }
  function widthOf(el) {
    return Math.max(320, Math.floor(el.getBoundingClientRect().width) || 800);
  }
  function utc(ts) {
    return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  }
  function when(ts) {
    return new Date(ts * 1e3).toISOString().slice(0, 16).replace("T", " ");
  }
  function num(v) {
    return v == null ? "—" : Number(v.toPrecision(4)).toString();
  }
  function isoDay(ts) {
    var iso = new Date(ts * 1e3).toISOString();
    return iso.endsWith("T00:00:00.000Z") ? iso.slice(0, 10) : iso;
  }
  function zoomUrl(from, to) {
    var url = new URL(window.location.href);
    url.searchParams.set("since", isoDay(from));
    url.searchParams.set("until", isoDay(to));
    url.hash = "";
    return url.toString();
  }

  // The history: per series its medians (line and points) and the p10-p90 band; alerts ringed
  // in red, failed runs as red squares on the time axis, toolchain changes as dashed lines.
  // Drag across to zoom (a new URL: since/until), click a point to open its job.
  function history(el, data, readout) {
    var series = data.series;
    if (!series.length) return null;
    var joined = uPlot.join(
      series.map(function (s) {
        return [s.t, s.median, s.high, s.low];
      })
    );
    var top = 0;
    series.forEach(function (s) {
      s.high.concat(s.median).forEach(function (v) {
        if (v != null && v > top) top = v;
      });
    });
    var opts = {
      width: widthOf(el),
      height: 340,
      tzDate: utc,
      legend: { show: false },
      scales: {
        x: { time: true },
        y: {
          range: function () {
            return [0, top > 0 ? top * 1.08 : 1];
          },
        },
      },
      axes: [{}, { label: data.unit, size: 56 }],
      series: [{}],
      bands: [],
      cursor: {
        drag: { x: true, y: false, setScale: false },
        points: { size: 9 },
        focus: { prox: 16 },
      },
      hooks: { draw: [marks], setSelect: [zoom], setCursor: [hover] },
    };
    series.forEach(function (s, k) {
      var base = 1 + 3 * k;
      opts.series.push(
        {
          label: s.label,
          stroke: s.color,
          width: 1.5,
          spanGaps: true,
          points: { show: true, size: 6, fill: s.color, stroke: "#fff" },
        },
        { label: s.label + " p90", stroke: "transparent", width: 0, spanGaps: true, points: { show: false } },
        { label: s.label + " p10", stroke: "transparent", width: 0, spanGaps: true, points: { show: false } }
      );
      opts.bands.push({ series: [base + 1, base + 2], fill: rgba(s.color, 0.16) });
    });

    function marks(u) {
      var ctx = u.ctx, box = u.bbox, ratio = uPlot.pxRatio || 1;
      ctx.save();
      ctx.beginPath();
      ctx.rect(box.left, box.top, box.width, box.height);
      ctx.clip();
      ctx.font = 10 * ratio + "px system-ui, sans-serif";
      data.changes.forEach(function (c) {
        var x = Math.round(u.valToPos(c.t, "x", true));
        ctx.strokeStyle = "#6d4c41";
        ctx.fillStyle = "#6d4c41";
        ctx.lineWidth = ratio;
        ctx.setLineDash([4 * ratio, 3 * ratio]);
        ctx.beginPath();
        ctx.moveTo(x, box.top);
        ctx.lineTo(x, box.top + box.height);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillText(c.text.slice(0, 40), x + 3 * ratio, box.top + 11 * ratio);
      });
      series.forEach(function (s, k) {
        if (!u.series[1 + 3 * k].show) return;
        var banded = s.low.filter(function (v) { return v != null; }).length;
        s.t.forEach(function (t, i) {
          var x = u.valToPos(t, "x", true);
          if (s.median[i] == null) {
            ctx.fillStyle = "#c62828";
            ctx.fillRect(x - 4 * ratio, box.top + box.height - 9 * ratio, 8 * ratio, 8 * ratio);
            return;
          }
          var y = u.valToPos(s.median[i], "y", true);
          if (banded < 2 && s.low[i] != null && s.high[i] != null) {
            ctx.strokeStyle = rgba(s.color, 0.5);
            ctx.lineWidth = 2 * ratio;
            ctx.beginPath();
            ctx.moveTo(x, u.valToPos(s.low[i], "y", true));
            ctx.lineTo(x, u.valToPos(s.high[i], "y", true));
            ctx.stroke();
          }
          if (s.alerts[i].length) {
            ctx.strokeStyle = "#c62828";
            ctx.lineWidth = 2.5 * ratio;
            ctx.beginPath();
            ctx.arc(x, y, 9 * ratio, 0, 2 * Math.PI);
            ctx.stroke();
          }
        });
      });
      ctx.restore();
    }

    // The point nearest to (left, top), CSS pixels in the plot, within `radius`.
    function nearest(u, left, top, radius) {
      var best = null, bestD = radius * radius;
      series.forEach(function (s, k) {
        if (!u.series[1 + 3 * k].show) return;
        s.t.forEach(function (t, i) {
          var x = u.valToPos(t, "x");
          var y = s.median[i] == null ? u.bbox.height / (uPlot.pxRatio || 1) - 5 : u.valToPos(s.median[i], "y");
          var d = (x - left) * (x - left) + (y - top) * (y - top);
          if (d <= bestD) {
            bestD = d;
            best = { series: k, index: i };
          }
        });
      });
      return best;
    }
    function href(p) {
      var s = series[p.series], i = p.index;
      if (s.span_s > 0) return zoomUrl(s.t[i], s.t[i] + s.span_s);
      if (s.job[i] == null) return null;
      return "/jobs/" + s.job[i] + (s.run[i] != null ? "#run-" + s.run[i] : "");
    }
    function describe(p) {
      var s = series[p.series], i = p.index;
      var head = "S" + (p.series + 1) + " " + s.label + " · " + when(s.t[i]) + ": ";
      if (s.runs[i] > 1) return head + s.runs[i] + " runs, median " + num(s.median[i]) + " ms (click: zoom in)";
      if (s.median[i] == null) return head + "failed, job " + s.job[i];
      return head + num(s.median[i]) + " ms, p10–p90 " + num(s.low[i]) + "–" + num(s.high[i]) +
        (s.alerts[i].length ? ", alert " + s.alerts[i].join(" ") : "") + " · run " + s.run[i] + " (click: its job)";
    }
    function zoom(u) {
      if (u.select.width < DRAG_PX) return;
      var from = u.posToVal(u.select.left, "x"), to = u.posToVal(u.select.left + u.select.width, "x");
      window.location.href = zoomUrl(from, to);
    }
    function hover(u) {
      if (!readout) return;
      var p = u.cursor.left == null || u.cursor.left < 0 ? null : nearest(u, u.cursor.left, u.cursor.top, 40);
      readout.textContent = p ? describe(p) : "";
    }

    var plot = new uPlot(opts, joined, el);
    var down = null;
    plot.over.addEventListener("mousedown", function (e) {
      down = [e.clientX, e.clientY];
    });
    plot.over.addEventListener("click", function (e) {
      if (!down || Math.abs(e.clientX - down[0]) > DRAG_PX || Math.abs(e.clientY - down[1]) > DRAG_PX) return;
      var rect = plot.over.getBoundingClientRect();
      var p = nearest(plot, e.clientX - rect.left, e.clientY - rect.top, PICK_PX);
      var target = p && href(p);
      if (target) window.location.href = target;
    });
    plot.over.style.cursor = "crosshair";
    // The legend's swatches hide or show their series: its median, its band (the p90 and
    // p10 series bound it) and its marks.
    var box = el.closest("section") || document;
    box.querySelectorAll("ul.legend .series-toggle").forEach(function (button) {
      var k = Number(button.dataset.series);
      if (!(k >= 0 && k < series.length)) return;
      button.addEventListener("click", function () {
        var show = !plot.series[1 + 3 * k].show;
        plot.batch(function () {
          for (var j = 1; j <= 3; j++) plot.setSeries(3 * k + j, { show: show });
        });
        button.setAttribute("aria-pressed", String(show));
        button.closest("li").classList.toggle("off", !show);
      });
    });
    return plot;
  }

  // A run's raw samples in bins (the server bins them), the median as a red line.
  function histogram(el, data) {
    var edges = data.edges, centers = [], tallest = 1;
    for (var i = 0; i + 1 < edges.length; i++) centers.push((edges[i] + edges[i + 1]) / 2);
    data.counts.forEach(function (c) {
      if (c > tallest) tallest = c;
    });
    var opts = {
      width: Math.min(widthOf(el), 560),
      height: 200,
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: {
        x: { time: false, range: [edges[0], edges[edges.length - 1]] },
        y: { range: [0, tallest * 1.1] },
      },
      axes: [{ label: "ms" }, { size: 44 }],
      series: [
        {},
        {
          label: "samples",
          fill: "#5c8fc6",
          stroke: "#5c8fc6",
          paths: uPlot.paths.bars({ size: [1, Infinity], gap: 1 }),
          points: { show: false },
        },
      ],
      hooks: {
        draw: [
          function (u) {
            if (data.median == null) return;
            var ctx = u.ctx, ratio = uPlot.pxRatio || 1, x = u.valToPos(data.median, "x", true);
            ctx.save();
            ctx.strokeStyle = "#c62828";
            ctx.lineWidth = 2 * ratio;
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
            ctx.restore();
          },
        ],
      },
    };
    return new uPlot(opts, [centers, data.counts], el);
  }

  var KINDS = { history: history, histogram: histogram };
  document.querySelectorAll('script[type="application/json"].chart-data').forEach(function (block) {
    var el = document.getElementById(block.dataset.for);
    if (!el || typeof uPlot === "undefined") return;
    var data = JSON.parse(block.textContent);
    var readout = el.parentNode.querySelector(".readout");
    el.textContent = "";
    var plot = KINDS[data.kind](el, data, readout);
    if (plot) drawn.push({ name: block.dataset.for, kind: data.kind, plot: plot, data: data });
  });
  window.addEventListener("resize", function () {
    drawn.forEach(function (c) {
      if (c.kind !== "history") return;
      c.plot.setSize({ width: widthOf(c.plot.root.parentNode), height: c.plot.height });
    });
  });
})();
