// Passerelle console: progressive enhancement only. Every page works without this file.
"use strict";
document.documentElement.classList.add("js");
document.addEventListener("DOMContentLoaded", function () {
  // "Select all" on the dead-letter list: toggles every row checkbox of its form.
  document.querySelectorAll("[data-select-all]").forEach(function (box) {
    var form = document.getElementById(box.getAttribute("data-select-all"));
    if (!form) { return; }
    box.addEventListener("change", function () {
      form.querySelectorAll('input[type="checkbox"][name="id"]').forEach(function (row) { row.checked = box.checked; });
    });
  });
});
