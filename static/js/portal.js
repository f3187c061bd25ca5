/* Page behaviour without inline script (the Content-Security-Policy allows none):
   <select data-autosubmit> submits its form on change; <form data-confirm="…"> asks first. */
document.addEventListener("change", function (event) {
  if (event.target.matches("select[data-autosubmit]")) { event.target.form.submit(); }
});
document.addEventListener("submit", function (event) {
  var message = event.target.dataset ? event.target.dataset.confirm : null;
  if (message && !window.confirm(message)) { event.preventDefault(); }
});

/* The one time format: the server writes <time datetime="…Z" title="… UTC">…</time> (portal_tags
   `when`); here it is shown in the viewer's time zone, the UTC value staying on hover. Also for
   fragments htmx swaps in. */
(function () {
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function zone(d) {
    try {
      var parts = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(d);
      for (var i = 0; i < parts.length; i++) { if (parts[i].type === "timeZoneName") { return parts[i].value; } }
    } catch (e) { /* no Intl: fall through */ }
    return "";
  }
  function localise(root) {
    var nodes = (root || document).querySelectorAll("time[datetime]:not([data-local])");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i], d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) { continue; }
      var clock = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
      var day = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
      var style = el.dataset.style;
      el.textContent = style === "date" ? day : (style === "time" ? clock : day + " " + clock) + " " + zone(d);
      el.setAttribute("data-local", "");
    }
  }
  document.addEventListener("DOMContentLoaded", function () { localise(document); });
  document.addEventListener("htmx:afterSettle", function (event) { localise(event.target); });
})();

/* <button data-copy="#id"> copies that element's text; the page's [role=status] says so. */
document.addEventListener("click", function (event) {
  var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
  if (!button) { return; }
  var source = document.querySelector(button.dataset.copy);
  if (!source) { return; }
  var status = document.querySelector(".copy-status");
  function said(text) { if (status) { status.textContent = text; } }
  function select() {
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  if (navigator.clipboard && navigator.clipboard.writeText) {
    navigator.clipboard.writeText(source.textContent).then(
      function () { button.textContent = "Copied"; said("Copied to the clipboard."); },
      function () { select(); said("Selected: press Ctrl+C (⌘C) to copy."); }
    );
  } else {
    select();
    said("Selected: press Ctrl+C (⌘C) to copy.");
  }
});

/* The nav collapses behind a Menu button on narrow screens (portal.css); the button opens it. */
document.addEventListener("click", function (event) {
  var toggle = event.target.closest ? event.target.closest(".nav-toggle") : null;
  if (!toggle) { return; }
  var open = toggle.getAttribute("aria-expanded") !== "true";
  toggle.setAttribute("aria-expanded", open ? "true" : "false");
  document.body.classList.toggle("nav-open", open);
});

/* A region that scrolls (a wide table, a long payload) can be scrolled from the keyboard: it
   takes focus when, and only when, it overflows. */
(function () {
  function focusable(root) {
    var nodes = (root || document).querySelectorAll(".table-scroll, main .table, main pre");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      var scrolls = el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1;
      var style = window.getComputedStyle(el);
      var can = /(auto|scroll)/.test(style.overflowX + " " + style.overflowY + " " + style.overflow);
      if (scrolls && can && !el.hasAttribute("tabindex")) { el.setAttribute("tabindex", "0"); }
    }
  }
  document.addEventListener("DOMContentLoaded", function () { focusable(document); });
  window.addEventListener("resize", function () { focusable(document); });
  document.addEventListener("htmx:afterSettle", function (event) { focusable(event.target); });
})();
