// Footer: what the runtime holds in memory right now, and what it did since start.
(function () {
  "use strict";
  const el = document.getElementById("stats");
  async function refresh() {
    try {
      const s = await (await fetch("/api/stats")).json();
      el.textContent = `runtime: ${s.active} object${s.active === 1 ? "" : "s"} in memory · ` +
        `${s.thaws} thaws · ${s.hibernations} hibernations · ${s.commits} commits`;
    } catch (err) {
      el.textContent = "runtime: unreachable";
    }
  }
  refresh();
  setInterval(refresh, 2000);
})();
