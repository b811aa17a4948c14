// Log in: exchange email and password for an access token, kept in this tab only.

import { logIn } from "./auth.js";
import { signOut } from "./session.js";
import { busy, clearErrors, nextPath, renderHeader, showErrors } from "./ui.js";

const form = document.getElementById("login");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  await busy(document.getElementById("login-button"), async () => {
    try {
      await logIn(form.elements.email.value.trim(), form.elements.password.value);
      window.location.assign(nextPath());
    } catch (error) {
      signOut();
      showErrors(form, error);
    }
  });
});

renderHeader();
