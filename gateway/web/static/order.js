// One order: its lines and total, paying it with a test card, cancelling it.
//
// Each payment attempt has its own request id, kept until the server answers, so a
// retry after a lost answer is the same attempt and never charges twice.

import { api, requestId } from "./api.js";
import {
  ORDER_STATUS,
  busy,
  clearErrors,
  el,
  fill,
  formatMoney,
  formatTime,
  idFromPath,
  renderHeader,
  requireSignIn,
  say,
  showErrors,
  unsay,
} from "./ui.js";

const orderId = idFromPath();
const status = document.getElementById("status");
const form = document.getElementById("pay");
const result = document.getElementById("pay-result");
const PAYABLE = ["ORDER_STATUS_PENDING", "ORDER_STATUS_PAYMENT_FAILED"];
const DECLINES = {
  card_declined: "the card was declined",
  insufficient_funds: "the card has insufficient funds",
  expired_card: "the card has expired",
};
let pendingPayment = null;

function show(order) {
  fill(document.getElementById("order-id"), order.id);
  const orderStatus = document.getElementById("order-status");
  fill(orderStatus, ORDER_STATUS[order.status] || order.status);
  orderStatus.dataset.status = order.status;
  fill(document.getElementById("order-created"), `Ordered ${formatTime(order.createTime)}`);
  fill(
    document.getElementById("order-items"),
    (order.items || []).map((item) =>
      el(
        "tr",
        {},
        el("td", {}, el("a", { href: `/movies/${encodeURIComponent(item.movieId)}` }, item.title)),
        el("td", {}, formatMoney(item.unitPrice)),
        el("td", {}, String(item.quantity)),
        el("td", {}, formatMoney(item.lineTotal)),
      ),
    ),
  );
  fill(document.getElementById("order-total"), formatMoney(order.total));
  const payments = order.payments || [];
  fill(
    document.getElementById("payments"),
    payments.map((payment) =>
      el(
        "li",
        {},
        `${formatTime(payment.createTime)}: ${formatMoney(payment.amount)}, `,
        payment.outcome === "PAYMENT_OUTCOME_SUCCEEDED"
          ? "accepted"
          : `declined (${DECLINES[payment.declineReason] || payment.declineReason})`,
      ),
    ),
  );
  document.getElementById("payments-section").hidden = payments.length === 0;
  form.hidden = !PAYABLE.includes(order.status);
  document.getElementById("order").hidden = false;
}

function showOutcome(order, attempt) {
  const payment = (order.payments || []).find((p) => p.requestId === attempt);
  if (order.status === "ORDER_STATUS_PAID") {
    say(result, "Payment accepted: your order is paid. Enjoy the movies!", "success");
  } else if (payment && payment.outcome === "PAYMENT_OUTCOME_DECLINED") {
    const why = DECLINES[payment.declineReason] || payment.declineReason;
    say(result, `Payment declined: ${why}. Try another card.`, "error");
  }
}

async function load() {
  try {
    const order = await api("GET", `/api/v1/orders/${encodeURIComponent(orderId)}`);
    unsay(status);
    show(order);
  } catch (error) {
    say(status, error.status === 404 ? "There is no such order." : error.message, "error");
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  unsay(result);
  const paymentToken = form.elements.paymentToken.value;
  if (!pendingPayment || pendingPayment.paymentToken !== paymentToken) {
    pendingPayment = { paymentToken, requestId: requestId() };
  }
  await busy(document.getElementById("pay-button"), async () => {
    try {
      const order = await api("POST", `/api/v1/orders/${encodeURIComponent(orderId)}:pay`, {
        body: { paymentToken, requestId: pendingPayment.requestId },
      });
      const attempt = pendingPayment.requestId;
      pendingPayment = null;
      show(order);
      showOutcome(order, attempt);
    } catch (error) {
      if (error.status !== 0 && error.status < 500) {
        pendingPayment = null;
      }
      showErrors(form, error);
    }
  });
});

document.getElementById("cancel-order").addEventListener("click", async (event) => {
  clearErrors(form);
  await busy(event.currentTarget, async () => {
    try {
      const order = await api("POST", `/api/v1/orders/${encodeURIComponent(orderId)}:cancel`, {
        body: {},
      });
      show(order);
      say(result, "The order is cancelled.", "info");
    } catch (error) {
      showErrors(form, error);
    }
  });
});

renderHeader();
if (requireSignIn(status, "see this order")) {
  load();
}
