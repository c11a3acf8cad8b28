// Follows the template file: polls its version once a second and, when it
// changes, swaps in the freshly rendered result. Picking another template or
// recipient submits the form (a plain GET), so the page works without this too.
(function () {
  "use strict";
  var result = document.getElementById("result");
  var form = document.getElementById("choice");
  if (!result || !form) { return; }
  ["template", "recipient"].forEach(function (id) {
    var select = document.getElementById(id);
    if (select) { select.addEventListener("change", function () { form.submit(); }); }
  });
  var template = result.getAttribute("data-template");
  var query = result.getAttribute("data-query");
  if (!template) { return; }
  var seen = null;
  var busy = false;
  function poll() {
    if (busy) { return; }
    busy = true;
    fetch("/preview/version?template=" + encodeURIComponent(template), { cache: "no-store" })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (state) {
        if (!state) { return null; }
        if (seen !== null && state.version !== seen) {
          seen = state.version;
          return fetch("/preview/result?" + query, { cache: "no-store" })
            .then(function (answer) { return answer.ok ? answer.text() : null; })
            .then(function (html) {
              if (html !== null) {
                result.innerHTML = html;
                result.setAttribute("data-version", seen);
              }
            });
        }
        seen = state.version;
        result.setAttribute("data-version", seen);
        return null;
      })
      .catch(function () { /* the server restarts or stops: try again next time */ })
      .then(function () { busy = false; });
  }
  poll();
  setInterval(poll, 1000);
})();
