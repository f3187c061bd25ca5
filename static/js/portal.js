/* Page behaviour without inline script (the Content-Security-Policy allows none):
   <select data-autosubmit> submits its form on change; <form data-confirm="…"> asks first. */
document.addEventListener("change", function (event) {
  if (event.target.matches("select[data-autosubmit]")) { event.target.form.submit(); }
});
document.addEventListener("submit", function (event) {
  var message = event.target.dataset ? event.target.dataset.confirm : null;
  if (message && !window.confirm(message)) { event.preventDefault(); }
});
