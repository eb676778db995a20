// Starts Swagger UI on /docs. It is a file rather than an inline script so that the page's
// Content-Security-Policy can allow scripts from this origin only (script-src 'self').
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // Authorize keeps a token in this page's memory only: a reload or a closed tab forgets it.
    persistAuthorization: false,
    // ?url= and ?configUrl= must not point the page at another schema or configuration.
    queryConfigEnabled: false,
    // No badge fetched from validator.swagger.io: the page talks to this server only.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
