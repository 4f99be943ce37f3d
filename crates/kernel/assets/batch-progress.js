// The batch page's progress bar: polls /batch/{id}/status until the batch ends.
(function () {
  var root = document.getElementById("batch");
  if (root.dataset.final === "true") return;
  var id = root.dataset.id;
  function text(el, v) { document.getElementById(el).textContent = v; }
  function poll() {
    fetch("/batch/" + id + "/status", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (s) {
        var pct = Math.floor(s.percent);
        document.getElementById("fill").style.width = pct + "%";
        root.querySelector("[role=progressbar]").setAttribute("aria-valuenow", pct);
        text("percent", pct);
        text("processed", s.processed);
        text("failed", s.failed);
        text("total", s.total);
        text("message", s.message);
        var state = document.getElementById("state");
        state.textContent = s.state;
        state.className = "batch-" + s.state;
        var final = ["done", "failed", "cancelled"].indexOf(s.state) >= 0;
        text("eta", !final && s.eta_secs != null ? "about " + Math.ceil(s.eta_secs) + " s left" : "");
        var list = document.getElementById("errors");
        list.textContent = "";
        s.errors.forEach(function (e) {
          var li = document.createElement("li");
          var code = document.createElement("code");
          code.textContent = e.target;
          li.appendChild(code);
          li.appendChild(document.createTextNode(": " + e.error));
          list.appendChild(li);
        });
        if (final) { document.getElementById("cancel").hidden = true; return; }
        setTimeout(poll, 500);
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 500);
})();
