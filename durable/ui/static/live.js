// Live updates for the durable console (durable/ui/live.py serves the events).
// The page's <main id="main" data-live="runs|run|workers" data-run-id="..."> is refetched
// (GET <this url>?fragment=main, which returns main's inner HTML) and swapped when an event
// concerns it: any run event on the runs and workers pages; on a run page, the run, its
// children, or any run of its tree. Debounced (300 ms; at most one fetch every 2 s on the
// runs and workers pages, 1 s on a run page, longer when the server is slow); never while
// someone types in a form inside main or a dialog is open; paused while the tab is hidden.
// EventSource reconnects itself.
(function () {
  "use strict";
  var script = document.currentScript;
  var main = document.getElementById("main");
  if (!main || !window.EventSource || !window.fetch || !script) return;
  var live = main.getAttribute("data-live");
  if (!live) return;
  var runId = main.getAttribute("data-run-id") || "";
  var rootId = main.getAttribute("data-root-id") || "";
  // The first change after a quiet spell shows within DEBOUNCE_MS; under a stream of changes a
  // page refetches at most every MIN_GAP_MS (longer when the server is slow to answer).
  var DEBOUNCE_MS = 300, MIN_GAP_MS = live === "run" ? 1000 : 2000;
  var timer = null, firstAsk = 0, inFlight = false, again = false, lastFetch = 0, lastTook = 0;

  var events = new URL("../events", script.src);
  if (live === "run" && runId) events.searchParams.set("run", runId);

  function concerns(ev) {
    // hello: the hub's first look at the page's run (its root, for the tree). The run may have
    // changed between the page's rendering and that look: refetch once.
    if (ev.kind === "hello") { if (ev.run_id === runId && ev.root_id) rootId = ev.root_id; return ev.run_id === runId; }
    if (ev.kind === "resync" || ev.kind === "many") return true;
    if (live !== "run") return true;
    if (ev.kind !== "run") return false;
    return ev.run_id === runId || ev.parent_id === runId || ev.root_id === runId ||
      (rootId !== "" && ev.root_id === rootId);
  }

  function busy() {
    var a = document.activeElement;
    if (a && main.contains(a) && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName) && a.type !== "submit") return true;
    if (main.querySelector("dialog[open], [data-live-pause]")) return true;
    return document.hidden;
  }

  function schedule() {
    var now = Date.now();
    if (!firstAsk) firstAsk = now;
    var gap = Math.max(MIN_GAP_MS, 5 * lastTook);
    var at = Math.max(now + DEBOUNCE_MS, lastFetch + gap);  // trailing: one fetch for a burst
    at = Math.min(at, Math.max(firstAsk, lastFetch + gap) + DEBOUNCE_MS);  // but never starved by it
    clearTimeout(timer);
    timer = setTimeout(refresh, Math.max(0, at - now));
  }

  function refresh() {
    timer = null;
    if (inFlight) { again = true; return; }
    if (busy()) { timer = setTimeout(refresh, 1000); return; }
    firstAsk = 0;
    inFlight = true;
    lastFetch = Date.now();
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "main");
    fetch(url.toString(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || busy()) return;
        main.innerHTML = html;
        main.setAttribute("data-live-updated", String(Date.now()));
        main.dispatchEvent(new CustomEvent("durable:live-updated", { bubbles: true }));
      })
      .catch(function () { /* the next event tries again */ })
      .then(function () {
        inFlight = false;
        lastTook = Date.now() - lastFetch;
        if (again) { again = false; schedule(); }
      });
  }

  var source = new EventSource(events.toString(), { withCredentials: true });
  source.onmessage = function (m) {
    var ev;
    try { ev = JSON.parse(m.data); } catch (e) { return; }
    if (concerns(ev)) schedule();
  };
  document.addEventListener("visibilitychange", function () { if (!document.hidden && firstAsk) schedule(); });
  window.addEventListener("pagehide", function () { source.close(); });
})();
