// "My orders": the signed-in user's orders, newest first, a page at a time.

import { api } from "./api.js";
import { session } from "./session.js";
import {
  ORDER_STATUS,
  el,
  fill,
  formatMoney,
  formatTime,
  renderHeader,
  requireSignIn,
  say,
  unsay,
} from "./ui.js";

const table = document.getElementById("orders-table");
const rows = document.getElementById("orders");
const status = document.getElementById("status");
const previousButton = document.getElementById("previous");
const nextButton = document.getElementById("next");
const PAGE_SIZE = 20;
const state = { token: "", nextToken: "", earlier: [] };

function row(order) {
  const link = el("a", { href: `/orders/${encodeURIComponent(order.id)}` }, formatTime(order.createTime));
  const titles = (order.items || []).map((item) =>
    item.quantity > 1 ? `${item.title} × ${item.quantity}` : item.title,
  );
  return el(
    "tr",
    { class: "order-row", "data-order-id": order.id },
    el("td", {}, link),
    el("td", {}, titles.join(", ")),
    el("td", {}, formatMoney(order.total)),
    el("td", { class: "order-status" }, ORDER_STATUS[order.status] || order.status),
  );
}

async function load() {
  // An admin's "my orders" are theirs too: ListOrders without userId would list everyone's.
  const query = { pageSize: PAGE_SIZE, pageToken: state.token, userId: session().userId };
  try {
    const page = await api("GET", "/api/v1/orders", { query });
    const orders = page.orders || [];
    fill(rows, orders.map(row));
    table.hidden = orders.length === 0;
    state.nextToken = page.nextPageToken || "";
    previousButton.disabled = state.earlier.length === 0;
    nextButton.disabled = !state.nextToken;
    fill(document.getElementById("page-number"), orders.length ? `Page ${state.earlier.length + 1}` : "");
    if (orders.length === 0) {
      say(status, "You have no orders yet. ", "info", el("a", { href: "/" }, "Browse the movies"));
    } else {
      unsay(status);
    }
  } catch (error) {
    say(status, error.message, "error");
  }
}

nextButton.addEventListener("click", () => {
  state.earlier.push(state.token);
  state.token = state.nextToken;
  load();
});
previousButton.addEventListener("click", () => {
  state.token = state.earlier.pop() || "";
  load();
});

renderHeader();
if (requireSignIn(status, "see your orders")) {
  load();
}
