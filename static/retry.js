// Resubmits the sign-up by itself once the server's Retry-After has passed.
(function () {
  var form = document.getElementById("retry");
  if (!form) return;
  var left = Math.max(1, parseInt(form.getAttribute("data-retry-after"), 10) || 3);
  var out = document.getElementById("countdown");
  var tick = function () {
    if (left <= 0) { form.submit(); return; }
    if (out) out.textContent = "(" + left + ")";
    left -= 1;
    setTimeout(tick, 1000);
  };
  tick();
})();
