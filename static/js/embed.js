// The status widget says when it is not live: this browser offline, its socket closed or
// reconnecting, or the server's keepalives (every 10 s) stopped. The badge itself is the
// server's; this only marks <main data-link> and fills the note below the badge.
(function () {
  "use strict";
  var SILENCE_MS = 25000;
  var lastMessage = Date.now();
  var open = false;
  var wrapper = null;

  // The extension's default backoff grows to 64 s; a status badge should be back within 5 s.
  htmx.config.wsReconnectDelay = function (retries) {
    return Math.random() * Math.min(5000, 500 * Math.pow(2, retries));
  };

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

  document.addEventListener("htmx:wsOpen", function (evt) {
    wrapper = evt.detail.socketWrapper;
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
  window.addEventListener("online", function () {
    if (open) return;
    set("reconnecting", "reconnecting…");
    if (wrapper) wrapper.reconnect();
  });
  setInterval(function () {
    if (open && Date.now() - lastMessage > SILENCE_MS) notLive();
  }, 1000);
})();
