// The main navigation collapses behind a "Menu" button on a narrow screen (the disclosure pattern: the button says
// whether the menu is open through aria-expanded). Without this script the menu is always shown, wrapped.
(function () {
  "use strict";
  var NARROW = window.matchMedia("(max-width: 40rem)");
  var toggle = document.querySelector(".nav-toggle");
  var menu = document.getElementById("site-menu");
  if (!toggle || !menu) {
    return;
  }

  function show(open) {
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
    menu.classList.toggle("collapsed", !open);
  }

  function fit() {
    toggle.hidden = !NARROW.matches;
    show(!NARROW.matches);
  }

  toggle.addEventListener("click", function () {
    show(toggle.getAttribute("aria-expanded") !== "true");
  });
  // Escape closes the open menu and gives the focus back to its button.
  menu.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && NARROW.matches) {
      show(false);
      toggle.focus();
    }
  });
  NARROW.addEventListener("change", fit);
  fit();
})();
