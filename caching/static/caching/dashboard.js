// Polls the dashboard's JSON every few seconds and rewrites the figures in place.
(function () {
  "use strict";
  const root = document.getElementById("cache-dashboard");
  if (!root) return;
  const url = root.dataset.url;
  const every = 1000 * Number(root.dataset.pollSeconds || 2);

  function shown(cell, value) {
    if (value === null || value === undefined) return cell.dataset.format === "time" ? "never" : "–";
    if (cell.dataset.format === "percent") return Math.round(value * 100) + " %";
    if (cell.dataset.format === "time") return value;
    if (typeof value === "boolean") return value ? "True" : "False";  // as Django renders them
    return String(value);
  }

  function fill(container, figures) {
    if (!container) return;
    container.querySelectorAll("[data-field]").forEach(function (cell) {
      if (!(cell.dataset.field in figures)) return;
      const text = shown(cell, figures[cell.dataset.field]);
      if (cell.textContent !== text) {
        cell.textContent = text;
        cell.classList.add("changed");
        setTimeout(function () { cell.classList.remove("changed"); }, 1000);
      }
    });
  }

  async function refresh() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      data.caches.forEach(function (cache) {
        fill(root.querySelector('tr[data-cache="' + CSS.escape(cache.name) + '"]'), cache);
      });
      fill(root.querySelector('tr[data-cache="totals"]'), data.totals);
      Object.entries(data.panels).forEach(function ([title, figures]) {
        fill(root.querySelector('table[data-panel="' + CSS.escape(title) + '"]'), figures);
      });
      document.getElementById("cache-updated").textContent = "; updated " + new Date().toLocaleTimeString();
    } catch (error) {
      document.getElementById("cache-updated").textContent = "; update failed (" + error.message + "), retrying";
    }
  }

  setInterval(refresh, every);
})();
