/* Live countdowns: every [data-countdown] element shows the time left until its UTC instant, every second. */
(function () {
  function fmt(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
    var pad = function (n) { return n < 10 ? "0" + n : "" + n; };
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + pad(m) + "m " + pad(sec) + "s";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      var until = Date.parse(el.dataset.countdown);
      if (isNaN(until)) { return; }
      if (until <= now && el.dataset.then) {  /* a grant that has started: count down to its end */
        el.dataset.countdown = el.dataset.then; delete el.dataset.then;
        el.dataset.prefix = ""; el.dataset.suffix = " left"; el.dataset.done = "ended"; el.classList.add("live");
        until = Date.parse(el.dataset.countdown);
      }
      el.textContent = until > now ? (el.dataset.prefix || "") + fmt(until - now) + (el.dataset.suffix || "")
                                   : el.dataset.done;
      el.classList.toggle("over", until <= now);
    });
  }
  tick();
  setInterval(tick, 1000);
})();
