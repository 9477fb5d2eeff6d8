// mlvigil console: the little the pages need from a script. Everything works without it
// except the retrain buttons (a POST with a header a cross-site form cannot send).
"use strict";

// Filters: a changed select submits its form.
document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
  sel.addEventListener("change", function () { sel.form.submit(); });
});

// Times: shown in the browser's time zone, UTC kept in the tooltip.
document.querySelectorAll("time[datetime]").forEach(function (el) {
  var d = new Date(el.getAttribute("datetime"));
  if (!isNaN(d)) { el.title = el.textContent; el.textContent = d.toLocaleString(); }
});

// Retrain triggers: dry run (show what would be sent), approve, reject.
document.querySelectorAll("button[data-action][data-trigger]").forEach(function (btn) {
  btn.addEventListener("click", function () {
    var id = btn.getAttribute("data-trigger"), action = btn.getAttribute("data-action");
    var out = btn.parentElement.querySelector(".action-result");
    btn.disabled = true;
    fetch("/ui/actions/triggers/" + encodeURIComponent(id) + "/" + action, {
      method: "POST", credentials: "same-origin", headers: {"X-Mlvigil-Console": "1"}
    }).then(function (resp) {
      return resp.json().then(function (body) { return {ok: resp.ok, body: body}; });
    }).then(function (r) {
      btn.disabled = false;
      if (!r.ok) { out.hidden = false; out.textContent = "refused: " + (r.body.error || "unknown error"); return; }
      if (action === "dry-run") {
        out.hidden = false;
        out.className = "action-result dry-run";
        out.textContent = JSON.stringify(r.body.would_send, null, 2);
        return;
      }
      var status = document.querySelector('.trigger-status[data-trigger="' + id + '"] .badge');
      if (status) { status.textContent = r.body.status; }
      btn.parentElement.querySelectorAll("button").forEach(function (b) { b.remove(); });
      out.hidden = false;
      out.className = "action-result done";
      out.textContent = r.body.reason || r.body.status;
    }).catch(function (err) {
      btn.disabled = false; out.hidden = false; out.textContent = "failed: " + err;
    });
  });
});
