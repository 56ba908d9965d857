// Enhancement only: every page works without this file. Selects the receipt for copying.
document.addEventListener("DOMContentLoaded", function () {
  var r = document.getElementById("receipt");
  if (r && window.getSelection) {
    var range = document.createRange();
    range.selectNodeContents(r);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
});
