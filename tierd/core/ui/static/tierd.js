// tierd's console: the little JavaScript it has. Every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A select marked data-autosubmit sends its form when changed (the admin's tenant picker).
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
  // A form marked data-confirm asks before it posts (delete, disable, unmatch...).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // Times shown in UTC get the reader's local time as a tooltip.
  for (const el of document.querySelectorAll("time[datetime]")) {
    const local = new Date(el.getAttribute("datetime"));
    if (!isNaN(local)) el.title = local.toLocaleString();
  }
});
