// The browser-link badge, elapsed-time tickers, and reconnects the ws extension leaves out.
// htmx's ws extension retries only after close codes 1006/1011/1012/1013 and never notices a
// silent socket; here: retry after any other close too, and when the server's keepalives stop.
// Correctness of resume never depends on this file: the server replays after the seq the
// page reports (see the ws-send form in the page templates).
(function () {
  "use strict";
  var EXTENSION_RETRIES = [1006, 1011, 1012, 1013];
  var REFUSED = 4403; // signed out, or the account was deactivated: don't retry
  var TOO_MANY = 4429; // this user has too many live pages open: retry much later
  var TOO_MANY_RETRY_MS = 30000;
  var SILENCE_MS = 25000; // the server sends a keepalive every 10 s
  var current = null; // the socket that last opened
  var retired = []; // sockets we replaced: their late close events mean nothing
  var wrapper = null;
  var lastMessage = Date.now();
  var retryTimer = null;

  // The extension's default backoff grows to 64 s; a dashboard should be back within 5 s.
  htmx.config.wsReconnectDelay = function (retries) {
    return Math.random() * Math.min(5000, 500 * Math.pow(2, retries));
  };

  function badge() { return document.getElementById("browser-link"); }

  function setLink(state, text, tone) {
    document.body.dataset.browserLink = state;
    var el = badge();
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
    el.className = "badge tone-" + tone;
  }

  function notLive() {
    if (!navigator.onLine) setLink("offline", "Browser offline", "bad");
    else setLink("reconnecting", "Browser reconnecting…", "warn");
  }

  function scheduleRetry(delayMs) {
    if (retryTimer || !wrapper) return;
    retryTimer = setTimeout(function () {
      retryTimer = null;
      if (current) retired.push(current);
      if (retired.length > 10) retired.shift();
      current = null;
      wrapper.reconnect();
    }, delayMs || 500 + Math.random() * 1500);
  }

  document.addEventListener("htmx:wsConnecting", function () {
    if (document.body.dataset.browserLink !== "connecting") notLive();
  });
  document.addEventListener("htmx:wsOpen", function (evt) {
    current = evt.detail.event.target;
    wrapper = evt.detail.socketWrapper;
    lastMessage = Date.now();
    setLink("live", "Browser live", "live");
  });
  document.addEventListener("htmx:wsAfterMessage", function () { lastMessage = Date.now(); });
  document.addEventListener("htmx:wsClose", function (evt) {
    var socket = evt.detail.event.target;
    var code = evt.detail.event.code;
    if (code === REFUSED) {
      setLink("offline", "Browser offline: signed out", "bad");
      return;
    }
    if (code === TOO_MANY) {
      setLink("offline", "Not live: too many open pages", "bad");
      scheduleRetry(TOO_MANY_RETRY_MS);
      return;
    }
    if (retired.indexOf(socket) >= 0) return;
    if (current !== null && socket !== current) return; // not the live socket
    notLive();
    if (EXTENSION_RETRIES.indexOf(code) < 0) scheduleRetry();
  });
  document.addEventListener("htmx:wsError", notLive);
  window.addEventListener("offline", notLive);
  window.addEventListener("online", function () {
    if (document.body.dataset.browserLink !== "live") scheduleRetry();
  });

  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    if (d) return d + " d " + h + " h";
    if (h) return h + " h " + pad(m) + " min";
    if (m) return m + " min " + pad(s) + " s";
    return s + " s";
  }

  // Server-rendered texts age; keep them true between live messages (same format as Python).
  setInterval(function () {
    var now = Date.now();
    document.querySelectorAll("[data-elapsed-from]").forEach(function (el) {
      var from = Date.parse(el.dataset.elapsedFrom);
      if (isNaN(from)) return;
      var to = el.dataset.elapsedTo ? Date.parse(el.dataset.elapsedTo) : now;
      el.textContent = duration((to - from) / 1000);
    });
    document.querySelectorAll("[data-age-of]").forEach(function (el) {
      var at = Date.parse(el.dataset.ageOf);
      if (isNaN(at)) return;
      var age = (now - at) / 1000;
      el.textContent = age < 2 ? "just now" : duration(age) + " ago";
    });
    document.querySelectorAll("[data-countdown-to]").forEach(function (el) {
      var at = Date.parse(el.dataset.countdownTo);
      if (!isNaN(at)) el.textContent = Math.max(0, Math.round((at - now) / 1000)) + " s";
    });
    if (wrapper && document.body.dataset.browserLink === "live" && now - lastMessage > SILENCE_MS) {
      notLive();
      scheduleRetry();
    }
  }, 1000);
})();
