// Drag across the history chart to zoom into that time range: the view is a new URL
// (since/until), so a zoomed view is a permalink. Everything else works without this.
(function () {
  "use strict";
  var svg = document.querySelector("svg.chart.history");
  if (!svg) return;
  var start = Date.parse(svg.dataset.start), end = Date.parse(svg.dataset.end);
  var left = Number(svg.dataset.left), right = Number(svg.dataset.right);
  var brush = svg.querySelector("rect.brush");
  var from = null;

  function x(event) {
    var point = svg.createSVGPoint();
    point.x = event.clientX; point.y = event.clientY;
    var local = point.matrixTransform(svg.getScreenCTM().inverse());
    return Math.min(Math.max(local.x, left), right);
  }
  function time(px) { return new Date(start + (px - left) / (right - left) * (end - start)); }

  svg.addEventListener("mousedown", function (event) {
    if (event.target.closest("a")) return;  // a click on a point opens its job
    from = x(event);
    event.preventDefault();
  });
  svg.addEventListener("mousemove", function (event) {
    if (from === null) return;
    var to = x(event);
    brush.setAttribute("x", Math.min(from, to));
    brush.setAttribute("width", Math.abs(to - from));
    brush.setAttribute("y", 16);
    brush.setAttribute("height", svg.viewBox.baseVal.height - 56);
  });
  window.addEventListener("mouseup", function (event) {
    if (from === null) return;
    var to = x(event), a = Math.min(from, to), b = Math.max(from, to);
    from = null;
    if (b - a < 6) { brush.setAttribute("width", 0); return; }
    var url = new URL(window.location.href);
    url.searchParams.set("since", time(a).toISOString());
    url.searchParams.set("until", time(b).toISOString());
    window.location.href = url.toString();
  });
})();
