// Live preview of the Task form's cron: plain language and the next runs, as you type.
// An invalid expression shows its error in the admin's error style and no run table; a zone
// whose times read as UTC's gets one column.
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
    var table = document.getElementById("cron-next-runs");
    var rows = table.querySelector("tbody");
    var localHeading = document.getElementById("cron-local-heading");
    var utcHeading = document.getElementById("cron-utc-heading");
    var warnings = document.getElementById("cron-warnings");
    var timer = null;
    function cell(row, text) {
      var td = document.createElement("td");
      td.textContent = text;
      row.appendChild(td);
    }
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
      if (!data.ok) {
        description.className = "errornote";
        description.textContent = data.error;
        table.hidden = true;
        return;
      }
      description.className = "";
      description.textContent = data.description + " (" + data.zone + ")";
      localHeading.textContent = "Next runs (" + data.zone + ")";
      utcHeading.hidden = !!data.same_as_utc;
      data.next.forEach(function (run) {
        var tr = document.createElement("tr");
        cell(tr, run.local);
        if (!data.same_as_utc) { cell(tr, run.utc); }
        rows.appendChild(tr);
      });
      table.hidden = false;
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
        .catch(function () {
          description.className = "errornote";
          description.textContent = "Preview unavailable: the server did not answer.";
          table.hidden = true;
        });
    }
    function later() { clearTimeout(timer); timer = setTimeout(refresh, 250); }
    cron.addEventListener("input", later);
    if (zone) { zone.addEventListener("change", later); }
    if (integration) { integration.addEventListener("change", later); }
    if (cron.value) { refresh(); }
  });
})();
