// Register an account (the user role). The account is made when the link mailed to the
// address is followed (/verify), so the page says where to look instead of logging in.
// The answer is the same whether or not the address has an account.

import { api } from "./api.js";
import { busy, clearErrors, renderHeader, say, showErrors } from "./ui.js";

const form = document.getElementById("register");
const sent = document.getElementById("register-sent");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const email = form.elements.email.value.trim();
  await busy(document.getElementById("register-button"), async () => {
    try {
      await api("POST", "/api/v1/users", {
        body: {
          email,
          displayName: form.elements.displayName.value.trim(),
          password: form.elements.password.value,
        },
        auth: false,
      });
    } catch (error) {
      showErrors(form, error);
      return;
    }
    form.hidden = true;
    say(sent, `We sent a mail to ${email}. Follow the link in it to open your account.`, "success");
  });
});

renderHeader();
