// iolinker admin: copy buttons (data-copy) and nothing else. No dependencies.
"use strict";
(function () {
  function fallbackCopy(text) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button.iol-copy");
    if (!button) return;
    event.preventDefault();
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    copy(button.dataset.copy).then(
      function () { button.textContent = "Copied"; button.classList.add("done"); },
      function () { button.textContent = "Select and copy by hand"; }
    ).finally(function () {
      setTimeout(function () { button.textContent = label; button.classList.remove("done"); }, 1500);
    });
  });
})();
