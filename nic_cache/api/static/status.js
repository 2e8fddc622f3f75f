// Draws the status page's activity chart from the JSON the server embedded in the page.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("chart-data").textContent);
  var el = document.getElementById("chart");
  var opts = {
    width: Math.max(el.clientWidth - 16, 300),
    height: 200,
    scales: { x: { time: true } },
    series: [
      {},
      { label: "pulls", stroke: "#2a62b8", fill: "rgba(42,98,184,0.12)", width: 2 },
      { label: "deploys", stroke: "#d9822b", width: 2 },
    ],
    axes: [{}, { label: "per 30 min" }],
  };
  new uPlot(opts, [data.t, data.pulls, data.deploys], el);
})();
