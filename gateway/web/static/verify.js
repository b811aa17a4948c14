// Open the account of a registration: the link in its mail is /verify#token=..., the
// token in the fragment so that it never reaches a server log or a Referer header.

import { api } from "./api.js";
import { el, renderHeader, say } from "./ui.js";

const status = document.getElementById("verify-status");
const token = new URLSearchParams(window.location.hash.slice(1)).get("token") || "";
// The token is spent once used; keep it out of the history too.
history.replaceState(null, "", window.location.pathname);

async function verify() {
  if (!token) {
    say(status, "This link has no token. Open the link from the mail as it is.", "error");
    return;
  }
  try {
    const user = await api("POST", "/api/v1/users:verifyEmail", { body: { token }, auth: false });
    say(
      status,
      `Your account is open, ${user.displayName}. `,
      "success",
      el("a", { href: "/login", id: "verify-login" }, "Log in"),
    );
  } catch (error) {
    say(
      status,
      `${error.message} `,
      "error",
      el("a", { href: "/register" }, "Register again"),
    );
  }
}

renderHeader();
verify();
