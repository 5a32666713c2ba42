// Live refresh of the dashboard: the panel (server-rendered HTML) every two seconds,
// and per org a throughput and a backlog chart (uPlot) fed from /dashboard/series.
// `window.sluiceCharts[org]` holds the charts (the browser test reads their data).
"use strict";
window.sluiceCharts = {};

function chart(target, title, label, stroke) {
  const options = {
    title, width: 440, height: 160,
    scales: { x: { time: true } },
    series: [{}, { label, stroke, width: 2, fill: stroke + "22" }],
    axes: [{}, { size: 60 }],
  };
  return new uPlot(options, [[], []], target);
}

function ensureCharts(org, name) {
  if (window.sluiceCharts[org]) return window.sluiceCharts[org];
  const box = document.createElement("div");
  box.className = "org-charts";
  box.dataset.org = org;
  box.innerHTML = "<h3></h3>";
  box.querySelector("h3").textContent = name;
  document.getElementById("charts").appendChild(box);
  const charts = {
    throughput: chart(box, "Jobs finished per second", "jobs/s", "#2a7ab0"),
    backlog: chart(box, "Jobs queued", "queued", "#c0392b"),
  };
  window.sluiceCharts[org] = charts;
  return charts;
}

async function refreshSeries() {
  const response = await fetch("/dashboard/series", { credentials: "same-origin" });
  if (!response.ok) return;
  for (const org of await response.json()) {
    const charts = ensureCharts(org.org, org.name);
    const times = org.series.at.map((t) => t / 1000);
    charts.throughput.setData([times, org.series.throughput]);
    charts.backlog.setData([times, org.series.backlog]);
  }
}

// The panel's alerts box goes to the top of the page, above the charts.
function showPanel(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  const alerts = template.content.querySelector(".alerts");
  document.getElementById("alerts").replaceChildren(...(alerts ? [alerts] : []));
  document.getElementById("panel").replaceChildren(template.content);
}

async function refreshPanel() {
  const response = await fetch("/dashboard/panel", { credentials: "same-origin" });
  if (response.ok) showPanel(await response.text());
}

showPanel(document.getElementById("panel").innerHTML);

// One click: deactivate (or release a runaway) without leaving the page, then refresh.
document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.action.includes("/deactivate") && !form.action.includes("/release")) return;
  event.preventDefault();
  await fetch(form.action, { method: "POST", credentials: "same-origin", redirect: "manual" });
  await refreshPanel();
});

async function tick() {
  try {
    await Promise.all([refreshSeries(), refreshPanel()]);
  } finally {
    setTimeout(tick, 2000);
  }
}
tick();
