// The search settings page: polls each running reindex batch until it ends.
(function () {
  document.querySelectorAll(".reindex[data-final=false]").forEach(function (root) {
    function set(sel, v) { root.querySelector(sel).textContent = v; }
    function poll() {
      fetch("/batch/" + root.dataset.id + "/status", { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (s) {
          var pct = Math.floor(s.percent);
          root.querySelector(".fill").style.width = pct + "%";
          root.querySelector("[role=progressbar]").setAttribute("aria-valuenow", pct);
          set(".percent", pct); set(".processed", s.processed); set(".total", s.total);
          var state = root.querySelector(".state");
          state.textContent = s.state; state.className = "state batch-" + s.state;
          if (["done", "failed", "cancelled"].indexOf(s.state) >= 0) { root.dataset.final = "true"; return; }
          setTimeout(poll, 500);
        })
        .catch(function () { setTimeout(poll, 2000); });
    }
    setTimeout(poll, 300);
  });
})();
