// The item form's reference fields: as the editor types, asks
// /admin/content/references for matching titles or names and offers them in
// a list; a choice fills in the hidden id. Without this script the field
// still takes a title, a name or an id, resolved when the form is saved.
(function () {
  var stage = new URLSearchParams(window.location.search).get("stage");

  function setUp(input, n) {
    var target = input.dataset.refTarget;
    var hidden = input.form && input.form.elements.namedItem("id." + input.name.slice(2));
    var list = document.createElement("datalist");
    list.id = "ref-candidates-" + n;
    document.body.appendChild(list);
    input.setAttribute("list", list.id);
    var found = [];
    var asked = 0;
    var timer = null;

    // A chosen duplicate arrives as its id: show its label, keep the id.
    // A typed label that names exactly one candidate gives that one's id.
    function settle() {
      var value = input.value.trim();
      var byId = found.filter(function (c) { return c.id === value; });
      if (byId.length === 1) {
        input.value = byId[0].label;
        if (hidden) hidden.value = byId[0].id;
        return;
      }
      var same = found.filter(function (c) { return c.label.toLowerCase() === value.toLowerCase(); });
      if (same.length === 1 && hidden) hidden.value = same[0].id;
    }

    function show(candidates) {
      found = candidates;
      var counts = {};
      candidates.forEach(function (c) {
        var k = c.label.toLowerCase();
        counts[k] = (counts[k] || 0) + 1;
      });
      list.textContent = "";
      candidates.forEach(function (c) {
        var option = document.createElement("option");
        // Labels several candidates share are told apart by their id.
        option.value = counts[c.label.toLowerCase()] > 1 ? c.id : c.label;
        option.label = c.detail ? c.label + " (" + c.detail + ")" : c.label;
        list.appendChild(option);
      });
    }

    function ask() {
      var text = input.value.trim();
      var mine = ++asked;
      if (!text) { show([]); return; }
      var url = "/admin/content/references?target=" + encodeURIComponent(target) +
        "&q=" + encodeURIComponent(text) + (stage ? "&stage=" + encodeURIComponent(stage) : "");
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (body) {
          if (mine !== asked) return;
          show(body.candidates);
          settle();
        })
        .catch(function () { /* the field still works as typed */ });
    }

    input.addEventListener("input", function () {
      settle();
      clearTimeout(timer);
      timer = setTimeout(ask, 150);
    });
  }

  document.querySelectorAll("input[data-ref-target]").forEach(setUp);
})();
