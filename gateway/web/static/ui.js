// What every page shares: building DOM nodes (text only), the header, money, errors.
//
// API data reaches the page through el() and textContent only, never innerHTML, so a
// movie titled "<img onerror=...>" is shown as those characters and nothing runs.

import { api } from "./api.js";
import { basket, session, signOut } from "./session.js";

/** A new element: el("a", {href: "/"}, "text", childNode). Strings become text nodes. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) {
      continue;
    }
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

/** Replace every child of node with children. */
export function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
}

/** The site header: navigation, the basket's size, who is signed in, log out. */
export function renderHeader() {
  const header = document.getElementById("site-header");
  if (!header) {
    return;
  }
  const current = session();
  const count = basket().reduce((sum, item) => sum + item.quantity, 0);
  const links = [
    el("a", { href: "/", class: "brand" }, "Cinema"),
    el("a", { href: "/" }, "Movies"),
    el("a", { href: "/basket", id: "basket-link" }, `Basket (${count})`),
  ];
  if (current) {
    links.push(el("a", { href: "/orders" }, "My orders"));
  }
  if (current && current.isAdmin) {
    links.push(el("a", { href: "/admin" }, "Admin"));
  }
  links.push(el("a", { href: "/docs/" }, "API"));
  const account = el("div", { class: "account" });
  if (current) {
    const logout = el("button", { type: "button", id: "logout" }, "Log out");
    logout.addEventListener("click", async () => {
      logout.disabled = true;
      try {
        // End the session on the server too: its access tokens are refused everywhere
        // within a second, not only forgotten by this tab.
        await api("POST", "/api/v1/auth/logout", { body: {} });
      } catch {
        // Ended or expired already: forgetting the token here is all that is left.
      }
      signOut();
      window.location.assign("/");
    });
    const who = current.displayName || "you";
    account.append(
      el(
        "span",
        { id: "signed-in-as" },
        `Signed in as ${who}`,
        current.isAdmin ? el("span", { class: "badge" }, "admin") : null,
      ),
      logout,
    );
  } else {
    const next = encodeURIComponent(window.location.pathname + window.location.search);
    account.append(
      el("a", { href: `/login?next=${next}`, id: "login-link" }, "Log in"),
      el("a", { href: "/register", id: "register-link" }, "Register"),
    );
  }
  fill(header, el("nav", { "aria-label": "Main" }, links), account);
}

/** Digits after the decimal point in a currency (2 for USD, 0 for JPY). */
export function currencyDigits(code) {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency: code })
      .resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}

/** "$9.99" for {currencyCode: "USD", amountMinor: "999"} (amounts are int64 strings). */
export function formatMoney(money) {
  if (!money || !money.currencyCode) {
    return "";
  }
  const digits = currencyDigits(money.currencyCode);
  const minor = Number(money.amountMinor || 0);
  try {
    return new Intl.NumberFormat(undefined, {
      style: "currency",
      currency: money.currencyCode,
    }).format(minor / 10 ** digits);
  } catch {
    return `${money.currencyCode} ${minor}`;
  }
}

/** "9.99" for 999 minor units of USD: what a price field shows. */
export function majorUnits(money) {
  const digits = currencyDigits(money.currencyCode);
  const minor = String(money.amountMinor || "0").padStart(digits + 1, "0");
  return digits ? `${minor.slice(0, -digits)}.${minor.slice(-digits)}` : minor;
}

/**
 * Minor units, as the API's int64 string, of a price typed in major units ("9.99"), or
 * null when the text is not a price in that currency. Done on the digits, never with
 * floats, as the API does.
 */
export function toMinorUnits(text, currencyCode) {
  const digits = currencyDigits(currencyCode);
  const match = /^\s*(\d+)(?:[.,](\d*))?\s*$/.exec(text);
  if (!match || (match[2] || "").length > digits) {
    return null;
  }
  const minor = match[1] + (match[2] || "").padEnd(digits, "0");
  return String(BigInt(minor));
}

/** A date and time in the reader's locale. */
export function formatTime(timestamp) {
  if (!timestamp) {
    return "";
  }
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? String(timestamp) : date.toLocaleString();
}

// A field path as the API names it, in one spelling: snake_case (list indexes kept).
function normalise(path) {
  return path.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`).toLowerCase();
}

// The input a violation belongs to: the one that names exactly that field, else the
// deepest one that contains it (movie.genres for movie.genres[3]), else the first one
// inside it (movie.price.amount_minor for a violation on movie.price).
function inputFor(form, field) {
  const wanted = normalise(field);
  let best = null;
  let bestScore = -1;
  for (const input of form.querySelectorAll("[data-field]")) {
    const own = normalise(input.dataset.field);
    let score = -1;
    if (own === wanted) {
      score = 3000;
    } else if (wanted.startsWith(`${own}.`) || wanted.startsWith(`${own}[`)) {
      score = 1000 + own.length;
    } else if (own.startsWith(`${wanted}.`) || own.startsWith(`${wanted}[`)) {
      score = 1;
    }
    if (score > bestScore) {
      best = input;
      bestScore = score;
    }
  }
  return best;
}

/** Clear every error a form shows. */
export function clearErrors(form) {
  for (const node of form.querySelectorAll(".field-error")) {
    node.textContent = "";
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
  }
  const message = form.querySelector(".form-error");
  if (message) {
    unsay(message);
  }
}

/** Show an error next to one field (field: an input of the form). */
export function showFieldError(form, input, description) {
  input.setAttribute("aria-invalid", "true");
  const slot = form.querySelector(`#${input.id}-error`);
  if (slot) {
    slot.textContent = slot.textContent ? `${slot.textContent} ${description}` : description;
  }
}

/**
 * Show an API error on a form: each field violation next to its field, the rest (and any
 * error without violations) as a message above the button.
 */
export function showErrors(form, error) {
  clearErrors(form);
  const message = form.querySelector(".form-error");
  const unplaced = [];
  const violations = error && error.violations ? error.violations : [];
  for (const violation of violations) {
    const input = inputFor(form, violation.field);
    if (input) {
      showFieldError(form, input, violation.description);
    } else {
      unplaced.push(`${violation.field}: ${violation.description}`);
    }
  }
  if (!message) {
    return;
  }
  if (violations.length === 0 || unplaced.length > 0) {
    const text = violations.length ? "Please correct the following:" : error.message;
    fill(message, text, unplaced.length ? el("ul", {}, unplaced.map((u) => el("li", {}, u))) : null);
  } else {
    fill(message, "Please correct the fields marked above.");
  }
  const first = form.querySelector("[aria-invalid]");
  if (first) {
    first.focus();
  }
}

const KINDS = ["info", "success", "error"];

/** Put a message into a status element (kind: "info", "success" or "error"). */
export function say(node, text, kind = "info", ...extra) {
  node.classList.remove(...KINDS);
  node.classList.add(kind);
  node.setAttribute("role", kind === "error" ? "alert" : "status");
  fill(node, text, ...extra);
}

/** Empty a status element. */
export function unsay(node) {
  node.classList.remove(...KINDS);
  fill(node);
}

/** When nobody is signed in: say so in node with a link to log in, and return false. */
export function requireSignIn(node, what) {
  if (session()) {
    return true;
  }
  const next = encodeURIComponent(window.location.pathname + window.location.search);
  say(node, `Log in to ${what}. `, "info", el("a", { href: `/login?next=${next}` }, "Log in"));
  return false;
}

/** Disable a button while an async action runs, so a double click sends once. */
export async function busy(button, action) {
  button.disabled = true;
  try {
    return await action();
  } finally {
    button.disabled = false;
  }
}

/** The last path segment: the id of /movies/{id} and /orders/{id}. */
export function idFromPath() {
  const parts = window.location.pathname.split("/").filter(Boolean);
  return decodeURIComponent(parts[parts.length - 1] || "");
}

/** Where to go after logging in: a path on this site only, never another origin. */
export function nextPath() {
  const next = new URLSearchParams(window.location.search).get("next") || "/";
  return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : "/";
}

/** Human words for the API's enum names. */
export const ORDER_STATUS = {
  ORDER_STATUS_PENDING: "Waiting for payment",
  ORDER_STATUS_PAID: "Paid",
  ORDER_STATUS_PAYMENT_FAILED: "Payment declined",
  ORDER_STATUS_CANCELLED: "Cancelled",
};
