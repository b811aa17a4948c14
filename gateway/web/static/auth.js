// Logging in (the login page; the header's Log out ends the session through the API).

import { api } from "./api.js";
import { session, signIn } from "./session.js";

/** Log in and remember the token and the user's name (for the header only). */
export async function logIn(email, password) {
  const reply = await api("POST", "/api/v1/auth/login", { body: { email, password }, auth: false });
  signIn(reply.accessToken, "");
  try {
    const user = await api("GET", `/api/v1/users/${encodeURIComponent(session().userId)}`);
    signIn(reply.accessToken, user.displayName);
  } catch {
    // The greeting is a nicety: without the name the header says "Signed in as you".
  }
}
