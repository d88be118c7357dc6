// Live preview of the Task form's cron: plain language and the next runs, as you type.
(function () {
  "use strict";
  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  ready(function () {
    var box = document.getElementById("cron-preview");
    var cron = document.getElementById("id_cron");
    if (!box || !cron) { return; }
    var zone = document.getElementById("id_timezone");
    var integration = document.getElementById("id_integration");
    var description = document.getElementById("cron-description");
    var rows = box.querySelector("#cron-next-runs tbody");
    var warnings = document.getElementById("cron-warnings");
    var timer = null;
    function render(data) {
      rows.textContent = "";
      if (warnings) {
        warnings.textContent = "";
        (data.warnings || []).forEach(function (text) {
          var li = document.createElement("li");
          li.className = "warning";
          li.textContent = text;
          warnings.appendChild(li);
        });
      }
      if (!data.ok) { description.textContent = data.error; return; }
      description.textContent = data.description + " (" + data.zone + ")";
      data.next.forEach(function (run) {
        var tr = document.createElement("tr");
        [run.local, run.utc].forEach(function (text) {
          var td = document.createElement("td");
          td.textContent = text;
          tr.appendChild(td);
        });
        rows.appendChild(tr);
      });
    }
    function refresh() {
      var params = new URLSearchParams({
        cron: cron.value,
        timezone: zone ? zone.value : "",
        integration: integration ? integration.value : ""
      });
      fetch(box.dataset.url + "?" + params.toString(), { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(render)
        .catch(function () { description.textContent = "Preview unavailable."; });
    }
    function later() { clearTimeout(timer); timer = setTimeout(refresh, 250); }
    cron.addEventListener("input", later);
    if (zone) { zone.addEventListener("change", later); }
    if (integration) { integration.addEventListener("change", later); }
    if (cron.value) { refresh(); }
  });
})();
