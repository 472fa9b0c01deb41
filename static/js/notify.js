// Toasts about followed sessions, and the browser notifications that go with them.
// The server sends each toast over the live channel, prepended to #toasts (htmx out of band);
// here: ask for notification permission on the first click of a follow button (a user
// gesture, as browsers require), show a notification for each toast that arrives while it is
// granted (clicking it focuses this tab and opens the session), dismiss buttons, and let
// good-news toasts fade after a while. Failures stay until dismissed.
(function () {
  "use strict";
  var FADE_AFTER_MS = 15000; // toast-transient: a stuck session that moved on
  var FADE_MS = 400; // the CSS transition of .toast-leaving
  var MAX_TOASTS = 8;

  function supported() { return typeof window.Notification === "function"; }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) return;
    if (target.closest("[data-follow-button]") && supported() && Notification.permission === "default") {
      Notification.requestPermission();
    }
    var dismiss = target.closest("[data-dismiss-toast]");
    if (dismiss) {
      var toast = dismiss.closest(".toast");
      if (toast) remove(toast);
    }
  });

  function remove(toast) {
    if (toast.classList.contains("toast-leaving")) return;
    toast.classList.add("toast-leaving");
    setTimeout(function () { toast.remove(); }, FADE_MS);
  }

  function notify(toast) {
    if (!supported() || Notification.permission !== "granted") return;
    var url = toast.dataset.url;
    try {
      var notification = new Notification(toast.dataset.title || "MeetingDash", {
        body: toast.dataset.body || "",
        tag: toast.dataset.alertId || undefined
      });
      notification.onclick = function () {
        window.focus();
        if (url) window.location.assign(url);
        notification.close();
      };
    } catch (error) {
      // Some browsers only allow notifications from a service worker: the toast is enough.
    }
  }

  function arrived(toast) {
    if (toast.dataset.seen) return;
    toast.dataset.seen = "1";
    notify(toast);
    if (toast.classList.contains("toast-transient")) {
      setTimeout(function () { remove(toast); }, FADE_AFTER_MS);
    }
  }

  function watch(region) {
    new MutationObserver(function (mutations) {
      mutations.forEach(function (mutation) {
        mutation.addedNodes.forEach(function (node) {
          if (node instanceof Element && node.classList.contains("toast")) arrived(node);
        });
      });
      var toasts = region.querySelectorAll(".toast");
      for (var i = MAX_TOASTS; i < toasts.length; i++) toasts[i].remove(); // oldest last
    }).observe(region, { childList: true });
  }

  function start() {
    var region = document.getElementById("toasts");
    if (region) watch(region);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
