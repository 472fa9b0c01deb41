// The status widget says when it is not live: this browser offline, its socket closed or
// reconnecting, or the server's keepalives (every 10 s) stopped. The badge itself is the
// server's; this only marks <main data-link> and fills the note below the badge.
(function () {
  "use strict";
  var SILENCE_MS = 25000;
  var lastMessage = Date.now();
  var open = false;

  function main() { return document.querySelector("main.embed"); }

  function set(state, text) {
    var el = main();
    if (!el) return;
    el.dataset.link = state;
    var note = el.querySelector("[data-link-text]");
    if (note && text) note.textContent = text;
  }

  function notLive() {
    open = false;
    if (!navigator.onLine) set("offline", "this browser is offline");
    else set("reconnecting", "reconnecting…");
  }

  document.addEventListener("htmx:wsOpen", function () {
    open = true;
    lastMessage = Date.now();
    set("live", "");
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    lastMessage = Date.now();
    if (open && main() && main().dataset.link !== "live") set("live", "");
  });
  document.addEventListener("htmx:wsClose", notLive);
  document.addEventListener("htmx:wsError", notLive);
  window.addEventListener("offline", notLive);
  window.addEventListener("online", function () { if (!open) set("reconnecting", "reconnecting…"); });
  setInterval(function () {
    if (open && Date.now() - lastMessage > SILENCE_MS) notLive();
  }, 1000);
})();
