/* The reason dialog behind every "Disable…" button (delegated: cells swapped in by htmx keep working). */
(function () {
  var dialog = document.getElementById("disable-dialog"), form = document.getElementById("disable-form");
  if (!dialog) { return; }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-disable-url]");
    if (!button) { return; }
    form.action = button.dataset.disableUrl;
    document.getElementById("disable-label").textContent = button.dataset.disableLabel;
    document.getElementById("id_disable_reason").value = "";
    dialog.showModal();
    document.getElementById("id_disable_reason").focus();
  });
  document.getElementById("disable-cancel").addEventListener("click", function () { dialog.close(); });
})();
