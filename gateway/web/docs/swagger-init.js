// Starts Swagger UI on this origin's OpenAPI document. A file of its own, not an inline
// script: the page's Content-Security-Policy allows scripts from this origin only.
//
// "Try it out" calls the API on this same origin (the document's server is "/"), and the
// Authorize button takes a bearer token (securitySchemes.bearerAuth). The token stays in
// this page's memory: persistAuthorization would keep it in localStorage.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  docExpansion: "list",
  defaultModelsExpandDepth: 0,
  displayRequestDuration: true,
  persistAuthorization: false,
  tryItOutEnabled: false,
  // No call to the public validator service: the document is checked in CI.
  validatorUrl: null,
});
