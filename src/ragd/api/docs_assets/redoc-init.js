// Starts ReDoc on /redoc. It is a file rather than an inline script so that the page's
// Content-Security-Policy can allow scripts from this origin only (script-src 'self').
(function () {
  "use strict";
  var root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapiUrl, {}, root);
})();
