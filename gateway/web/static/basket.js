// The basket: movies picked in this tab; "Buy" turns them into an order.
//
// The order is created with a request id that is kept until the server has answered, so
// pressing Buy again after a lost answer returns the same order instead of a second one.

import { api, requestId } from "./api.js";
import { basket, clearBasket, saveBasket } from "./session.js";
import {
  busy,
  clearErrors,
  el,
  fill,
  formatMoney,
  renderHeader,
  requireSignIn,
  say,
  showErrors,
  unsay,
} from "./ui.js";

const form = document.getElementById("basket-form");
const rows = document.getElementById("basket-items");
const status = document.getElementById("status");
let pendingRequestId = null;
let movies = new Map();

function totals(items) {
  const sums = new Map();
  for (const item of items) {
    const movie = movies.get(item.movieId);
    if (movie && movie.price) {
      const code = movie.price.currencyCode;
      sums.set(code, (sums.get(code) || 0) + Number(movie.price.amountMinor) * item.quantity);
    }
  }
  return [...sums].map(([currencyCode, amount]) => formatMoney({ currencyCode, amountMinor: amount }));
}

function render() {
  const items = basket().filter((item) => movies.has(item.movieId));
  if (items.length === 0) {
    form.hidden = true;
    say(status, "Your basket is empty. ", "info", el("a", { href: "/" }, "Browse the movies"));
    return;
  }
  form.hidden = false;
  fill(
    rows,
    items.map((item, index) => {
      const movie = movies.get(item.movieId);
      const quantity = el("input", {
        type: "number",
        min: 1,
        max: 100,
        value: item.quantity,
        id: `quantity-${index}`,
        name: `quantity-${index}`,
        "data-field": `order.items[${index}].quantity`,
        "aria-label": `Copies of ${movie.title}`,
        "aria-describedby": `quantity-${index}-error`,
      });
      quantity.addEventListener("change", () => {
        const value = Math.max(1, Math.min(100, Number.parseInt(quantity.value, 10) || 1));
        saveBasket(basket().map((i) => (i.movieId === item.movieId ? { ...i, quantity: value } : i)));
        pendingRequestId = null;
        renderHeader();
        render();
      });
      const remove = el("button", { type: "button", class: "secondary" }, "Remove");
      remove.addEventListener("click", () => {
        saveBasket(basket().filter((i) => i.movieId !== item.movieId));
        pendingRequestId = null;
        renderHeader();
        render();
      });
      return el(
        "tr",
        { "data-field": `order.items[${index}]`, id: `line-${index}` },
        el("td", {}, el("a", { href: `/movies/${encodeURIComponent(movie.id)}` }, movie.title),
          el("p", { class: "field-error", id: `line-${index}-error` })),
        el("td", {}, formatMoney(movie.price)),
        el("td", {}, quantity, el("p", { class: "field-error", id: `quantity-${index}-error` })),
        el("td", {}, remove),
      );
    }),
  );
  fill(document.getElementById("basket-total"), totals(items).join(" + "));
  unsay(status);
}

async function load() {
  const items = basket();
  if (items.length === 0) {
    render();
    return;
  }
  try {
    const reply = await api("GET", "/api/v1/movies:batchGet", {
      query: { ids: items.map((i) => i.movieId) },
      auth: false,
    });
    movies = new Map((reply.movies || []).map((m) => [m.id, m]));
    // A movie deleted since it was picked cannot be bought: drop it, and say so.
    const gone = items.filter((i) => !movies.has(i.movieId)).length;
    saveBasket(items.filter((i) => movies.has(i.movieId)));
    renderHeader();
    render();
    if (gone) {
      say(status, `${gone} movie(s) in your basket are no longer for sale and were removed.`);
    }
  } catch (error) {
    say(status, error.message, "error");
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  if (!requireSignIn(form.querySelector(".form-error"), "buy these movies")) {
    return;
  }
  const items = basket().map(({ movieId, quantity }) => ({ movieId, quantity }));
  pendingRequestId = pendingRequestId || requestId();
  await busy(document.getElementById("buy"), async () => {
    try {
      const order = await api("POST", "/api/v1/orders", {
        query: { requestId: pendingRequestId },
        body: { items },
      });
      pendingRequestId = null;
      clearBasket();
      window.location.assign(`/orders/${encodeURIComponent(order.id)}`);
    } catch (error) {
      if (error.status !== 0 && error.status < 500) {
        // The server decided: a changed basket is a new order.
        pendingRequestId = null;
      }
      showErrors(form, error);
    }
  });
});

renderHeader();
load();
