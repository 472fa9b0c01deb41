// Text fields marked data-select-on-focus (a token shown once, a snippet to paste) select
// their whole content when focused or clicked, so one copy takes all of it.
(function () {
  "use strict";
  function select(event) {
    var el = event.target;
    if (el && el.hasAttribute && el.hasAttribute("data-select-on-focus")) el.select();
  }
  document.addEventListener("focusin", select);
  document.addEventListener("click", select);
})();
