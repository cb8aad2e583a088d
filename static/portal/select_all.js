// "Select all" for a table of checkboxes: a checkbox marked data-select-all checks or clears every checkbox named
// by its value (data-select-all="mailbox") in the same form, and shows "some" (indeterminate) when only some are.
// Without this script the box does nothing and each row is picked by hand.
(function () {
  "use strict";
  function boxes(all) {
    var form = all.form || all.closest("form");
    if (!form) {
      return [];
    }
    var name = all.getAttribute("data-select-all");
    return Array.prototype.filter.call(form.elements, function (el) {
      return el.type === "checkbox" && el.name === name && el !== all;
    });
  }

  function reflect(all) {
    var list = boxes(all);
    var checked = list.filter(function (el) { return el.checked; }).length;
    all.checked = list.length > 0 && checked === list.length;
    all.indeterminate = checked > 0 && checked < list.length;
  }

  function bind(root) {
    root.querySelectorAll("input[data-select-all]").forEach(function (all) {
      if (all.dataset.bound) {
        return;
      }
      all.dataset.bound = "1";
      all.hidden = false;
      all.addEventListener("change", function () {
        boxes(all).forEach(function (el) { el.checked = all.checked; });
      });
      boxes(all).forEach(function (el) {
        el.addEventListener("change", function () { reflect(all); });
      });
      reflect(all);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { bind(document); });
  // The picker's results arrive by htmx: bind the boxes they bring.
  document.addEventListener("htmx:afterSwap", function (event) { bind(event.target); });
})();
