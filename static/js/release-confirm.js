/* Releasing a session whose kill-switch flag is still off: say so and ask before the form goes. */
(function () {
  var dialog = document.getElementById("release-confirm-dialog");
  if (!dialog) { return; }
  var pending = null;
  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form[data-flag-off]");
    if (!form) { return; }
    var box = form.querySelector("input[name=confirm_flag_off]");
    if (box && box.checked) { return; }
    event.preventDefault();
    pending = form;
    document.getElementById("release-confirm-text").textContent = form.dataset.flagOff;
    dialog.showModal();
  });
  document.getElementById("release-confirm-yes").addEventListener("click", function () {
    if (!pending) { return; }
    var box = pending.querySelector("input[name=confirm_flag_off]");
    if (box) { box.checked = true; }
    dialog.close();
    pending.requestSubmit();
  });
  document.getElementById("release-confirm-no").addEventListener("click", function () {
    pending = null;
    dialog.close();
  });
})();
