/* The activity page's charts (Chart.js, vendored in static/vendor/chart.js). No inline script:
   each <canvas data-activity-chart="ID"> reads its data from <script type="application/json" id="ID">
   (Django's json_script). Each series gets a colour from the Okabe-Ito palette (safe for colour
   blindness) AND a pattern of its own, so the chart reads without colour; the table beside each
   chart holds every value. */
(function () {
  "use strict";
  var COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];
  var PATTERNS = ["solid", "diagonal", "dots", "cross", "horizontal", "vertical", "reverse", "grid"];

  function pattern(kind, colour) {
    if (kind === "solid") { return colour; }
    var size = 10, c = document.createElement("canvas");
    c.width = c.height = size;
    var g = c.getContext("2d");
    g.fillStyle = "#ffffff";
    g.fillRect(0, 0, size, size);
    g.fillStyle = colour;
    g.strokeStyle = colour;
    g.lineWidth = 2;
    g.beginPath();
    if (kind === "diagonal" || kind === "cross") { g.moveTo(0, size); g.lineTo(size, 0); }
    if (kind === "reverse" || kind === "cross") { g.moveTo(0, 0); g.lineTo(size, size); }
    if (kind === "horizontal" || kind === "grid") { g.moveTo(0, size / 2); g.lineTo(size, size / 2); }
    if (kind === "vertical" || kind === "grid") { g.moveTo(size / 2, 0); g.lineTo(size / 2, size); }
    g.stroke();
    if (kind === "dots") { g.beginPath(); g.arc(size / 2, size / 2, 2.2, 0, 2 * Math.PI); g.fill(); }
    return g.createPattern(c, "repeat");
  }

  function label(iso, bucket) {
    // "2026-12-01T09:00Z": hours show "12-01 09:00", days "2026-12-01" (UTC, as the table)
    return bucket === "hour" ? iso.slice(5, 10) + " " + iso.slice(11, 16) : iso.slice(0, 10);
  }

  function draw(canvas) {
    var source = document.getElementById(canvas.dataset.activityChart);
    if (!source || !window.Chart) { return; }
    var spec = JSON.parse(source.textContent);
    var datasets = spec.series.map(function (s, i) {
      var colour = COLOURS[i % COLOURS.length];
      return {
        label: s.name + " (" + PATTERNS[i % PATTERNS.length] + ")",
        data: s.data,
        backgroundColor: pattern(PATTERNS[i % PATTERNS.length], colour),
        borderColor: colour,
        borderWidth: 1
      };
    });
    new window.Chart(canvas, {
      type: "bar",
      data: { labels: spec.labels.map(function (l) { return label(l, spec.bucket); }), datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, ticks: { maxRotation: 0, autoSkip: true } },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } }
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 18, boxHeight: 12 } } }
      }
    });
    canvas.dataset.rendered = String(spec.series.length);
  }

  function start() {
    var canvases = document.querySelectorAll("canvas[data-activity-chart]");
    for (var i = 0; i < canvases.length; i++) { draw(canvases[i]); }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
