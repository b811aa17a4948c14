// Who is signed in, and what is in the basket: sessionStorage, this tab only.
//
// The access token lives in sessionStorage (never a cookie, never a URL): it is gone when
// the tab closes and is not sent anywhere by itself, so there is nothing to forge a
// cross-site request with. Its claims are decoded here for display only; the services
// verify the signature on every call.

const TOKEN_KEY = "cinema.token";
const NAME_KEY = "cinema.displayName";
const BASKET_KEY = "cinema.basket";

function decodeClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) {
    return null;
  }
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** The signed-in user ({token, userId, role, isAdmin, displayName}), or null. */
export function session() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    return null;
  }
  const claims = decodeClaims(token);
  if (!claims || typeof claims.sub !== "string" || Date.now() / 1000 >= Number(claims.exp)) {
    signOut();
    return null;
  }
  return {
    token,
    userId: claims.sub,
    role: String(claims.role || "user"),
    isAdmin: claims.role === "admin",
    displayName: sessionStorage.getItem(NAME_KEY) || "",
  };
}

/** Remember a token from Login (and the name to greet the user with). */
export function signIn(token, displayName) {
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(NAME_KEY, displayName || "");
}

/** Forget the token: this tab is signed out. */
export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(NAME_KEY);
}

/** The basket: [{movieId, quantity}], in the order movies were added. */
export function basket() {
  try {
    const items = JSON.parse(sessionStorage.getItem(BASKET_KEY) || "[]");
    return Array.isArray(items)
      ? items.filter((i) => typeof i.movieId === "string" && Number.isInteger(i.quantity))
      : [];
  } catch {
    return [];
  }
}

export function saveBasket(items) {
  sessionStorage.setItem(BASKET_KEY, JSON.stringify(items));
}

/** Add one copy of a movie (a movie is at most once in an order: its quantity grows). */
export function addToBasket(movieId) {
  const items = basket();
  const existing = items.find((i) => i.movieId === movieId);
  if (existing) {
    existing.quantity = Math.min(existing.quantity + 1, 100);
  } else {
    items.push({ movieId, quantity: 1 });
  }
  saveBasket(items);
}

export function clearBasket() {
  sessionStorage.removeItem(BASKET_KEY);
}
