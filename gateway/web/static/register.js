// Register an account (the user role), then log in with it.

import { api } from "./api.js";
import { logIn } from "./auth.js";
import { busy, clearErrors, nextPath, renderHeader, showErrors } from "./ui.js";

const form = document.getElementById("register");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const email = form.elements.email.value.trim();
  const password = form.elements.password.value;
  await busy(document.getElementById("register-button"), async () => {
    try {
      await api("POST", "/api/v1/users", {
        body: { email, displayName: form.elements.displayName.value.trim(), password },
        auth: false,
      });
    } catch (error) {
      showErrors(form, error);
      return;
    }
    try {
      await logIn(email, password);
      window.location.assign(nextPath());
    } catch (error) {
      // Registered, but the login failed (rare): say so rather than hide the account.
      showErrors(form, error);
    }
  });
});

renderHeader();
