// Open the account of a registration: the link in its mail is /verify#token=..., the
// token in the fragment so that it never reaches a server log or a Referer header. The
// password chosen when registering is asked again: the mailbox alone opens nothing, so
// nobody can register someone else's address and have its owner open the account.

import { api } from "./api.js";
import { busy, clearErrors, el, renderHeader, say, showErrors } from "./ui.js";

const form = document.getElementById("verify");
const status = document.getElementById("verify-status");
const token = new URLSearchParams(window.location.hash.slice(1)).get("token") || "";
// The token opens an account once its password is given: keep it out of the history.
history.replaceState(null, "", window.location.pathname);

function refuse(text) {
  form.hidden = true;
  say(status, `${text} `, "error", el("a", { href: "/register" }, "Register again"));
}

if (!token) {
  refuse("This link has no token. Open the link from the mail as it is.");
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  await busy(document.getElementById("verify-button"), async () => {
    let user;
    try {
      user = await api("POST", "/api/v1/users:verifyEmail", {
        body: { token, password: form.elements.password.value },
        auth: false,
      });
    } catch (error) {
      if (error.reason === "REGISTRATION_TOKEN_INVALID") {
        refuse(error.message);
      } else {
        showErrors(form, error);
      }
      return;
    }
    form.hidden = true;
    say(
      status,
      `Your account is open, ${user.displayName}. `,
      "success",
      el("a", { href: "/login", id: "verify-login" }, "Log in"),
    );
  });
});

renderHeader();
