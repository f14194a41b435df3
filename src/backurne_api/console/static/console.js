// backurne web console: small conveniences only; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Overview: filter the table while typing (the form's submit does the same on the server).
  const filter = document.getElementById("filter");
  if (filter) {
    filter.addEventListener("input", () => {
      const wanted = filter.value.toLowerCase();
      document.querySelectorAll("tr.disk").forEach((row) => {
        row.classList.toggle("hidden", !row.dataset.name.toLowerCase().includes(wanted));
      });
    });
  }
  // Restore: the confirmation field only matters (and is only shown) when replacing.
  const force = document.getElementById("restore-force");
  const confirm = document.getElementById("restore-confirm");
  if (force && confirm) {
    const label = confirm.closest("label");
    const sync = () => { label.style.display = force.checked ? "" : "none"; };
    force.addEventListener("change", sync);
    sync();
  }
});
