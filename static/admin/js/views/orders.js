// Orders: the list with its filters and CSV export (#/orders), and one order with its
// price breakdown, payment parts, shipping, completion, cancel and refund by line
// (#/orders/<id>). Every write goes through the audited admin order routes.
import { api, newKey, session } from "../api.js";
import { h, clear, busy, field, input, select, table, badge, pageHead, yuan, num, when, toast, showError, confirmDialog, localToIso } from "../dom.js";
import { t } from "../i18n.js";
import { pagedTable, downloadCsv, facts } from "../ops_kit.js";

const STATUSES = ["pending_payment", "paid", "shipped", "completed", "cancelled", "closed", "refunded"];
const KIND = { pending_payment: "warn", paid: "warn", shipped: "", completed: "good", cancelled: "", closed: "", refunded: "bad" };

export function statusBadge(status) {
  return h("span", { class: `badge ${KIND[status] ? `badge-${KIND[status]}` : ""}`, "data-status": status }, t(`order_status_${status}`));
}

function payParts(o) {
  const parts = [];
  if (o.wallet_fen) parts.push(`${t("wallet")} ${yuan(o.wallet_fen)}`);
  if (o.cash_fen) parts.push(`${t("wechat_pay")} ${yuan(o.cash_fen)}`);
  if (o.points_used) parts.push(`${num(o.points_used)} ${t("points")}`);
  return parts.join(" + ") || "—";
}

export function orderColumns() {
  return [
    [t("order_number"), (o) => h("a", { href: `#/orders/${o.id}`, "data-order": o.id }, o.number)],
    [t("created_at"), (o) => when(o.created_at)],
    [t("items"), (o) => `${o.first_item_name}${o.item_count > 1 ? ` ×${o.item_count}` : ""}`],
    [t("amount_due"), (o) => yuan(o.amount_due_fen)],
    [t("paid_by"), payParts],
    [t("delivery"), (o) => t(`delivery_${o.delivery}`)],
    [t("status"), (o) => statusBadge(o.status)],
  ];
}

async function listPage(main, memberId) {
  const status = select("order_status", [["", t("all_statuses")], ...STATUSES.map((s) => [s, t(`order_status_${s}`)])], "");
  const number = input("order_number", { type: "search", placeholder: t("order_number_filter"), maxlength: "33" });
  const member = input("order_member", { type: "number", min: "1", placeholder: t("member_id_filter"), value: memberId ? String(memberId) : "" });
  const since = input("order_since", { type: "datetime-local", "aria-label": t("created_from") });
  const until = input("order_until", { type: "datetime-local", "aria-label": t("created_until") });
  const query = () => ({
    status: status.value,
    number: number.value.trim(),
    member_id: member.value.trim(),
    since: localToIso(since.value) || undefined,
    until: localToIso(until.value) || undefined,
  });
  const paged = pagedTable(orderColumns(), (cursor) => api("GET", "/orders", { query: { ...query(), cursor, size: 50 } }), {
    role: "orders",
    rowAttrs: (o) => ({ "data-id": o.id }),
  });
  const search = h("button", { type: "submit", class: "btn btn-primary", "data-action": "search" }, t("search"));
  const exportButton = h("button", { type: "button", class: "btn", "data-action": "export" }, t("export_csv"));
  exportButton.addEventListener("click", () => busy(exportButton, () => downloadCsv("/orders.csv", query(), "orders.csv")));
  const filters = h(
    "form",
    {
      class: "filters",
      "data-form": "order-filters",
      onSubmit: (e) => {
        e.preventDefault();
        busy(search, () => paged.reload());
      },
    },
    status,
    number,
    member,
    h("span", { class: "muted" }, t("created_from")),
    since,
    t("created_until"),
    until,
    search,
  );
  status.addEventListener("change", () => paged.reload().catch(showError));
  main.append(pageHead(t("menu_orders"), exportButton), filters, paged.el);
  await paged.reload();
}

function breakdown(o) {
  const rows = [[t("list_total"), yuan(o.list_total_fen), { "data-figure": "list_total" }]];
  const saving = o.list_total_fen - o.member_total_fen;
  if (saving) rows.push([o.breakdown.member_day ? t("member_day_applied") : t("member_saving"), `-${yuan(saving)}`, { "data-figure": "member_saving" }]);
  if (o.coupon_fen) rows.push([`${t("coupon_discount")}${o.coupon_id ? ` #${o.coupon_id}` : ""}`, `-${yuan(o.coupon_fen)}`, { "data-figure": "coupon" }]);
  if (o.points_used) rows.push([t("points_discount", { n: num(o.points_used) }), `-${yuan(o.points_fen)}`, { "data-figure": "points" }]);
  rows.push([t("shipping_fee"), yuan(o.shipping_fen), { "data-figure": "shipping" }]);
  rows.push([t("amount_due"), h("strong", {}, yuan(o.amount_due_fen)), { "data-figure": "amount_due" }]);
  return facts(rows, { "data-role": "breakdown" });
}

function payment(o) {
  const rows = [
    [t("paid_wallet"), yuan(o.wallet_fen), { "data-figure": "wallet" }],
    [t("paid_cash"), yuan(o.cash_fen), { "data-figure": "cash" }],
    [t("paid_points"), num(o.points_used), { "data-figure": "points_used" }],
    [t("paid_at"), when(o.paid_at)],
  ];
  if (o.transaction_id) rows.push([t("transaction_id"), h("code", {}, o.transaction_id)]);
  if (o.refunded_fen || o.refunded_points) {
    rows.push([t("refunded"), `${yuan(o.refunded_fen)} (${t("paid_wallet")} ${yuan(o.refunded_wallet_fen)}, ${t("paid_cash")} ${yuan(o.refunded_cash_fen)}) + ${num(o.refunded_points)} ${t("points")}`, { "data-figure": "refunded" }]);
  }
  if (o.earned_points) rows.push([t("earned_points"), `${num(o.earned_points)}${o.earned_points_reversed ? ` (-${num(o.earned_points_reversed)})` : ""}`]);
  return facts(rows, { "data-role": "payment" });
}

async function detailPage(main, id, reveal = false) {
  const o = await api("GET", `/orders/${id}`, { query: reveal ? { reveal: "phone" } : undefined });
  const refundable = ["paid", "shipped", "completed"].includes(o.status);
  const qty = new Map();
  const lineRows = table(
    [
      [t("name"), (ln) => [ln.name, ln.is_gift ? [" ", badge(t("gift"))] : null, Object.keys(ln.specs || {}).length ? h("small", { class: "muted" }, ` ${Object.values(ln.specs).join(" / ")}`) : null]],
      [t("unit_price"), (ln) => yuan(ln.unit_list_fen)],
      [t("member_price"), (ln) => yuan(ln.unit_member_fen)],
      [t("quantity"), (ln) => num(ln.quantity)],
      [t("coupon_discount"), (ln) => (ln.coupon_fen ? `-${yuan(ln.coupon_fen)}` : "—")],
      [t("paid_points"), (ln) => (ln.points_used ? num(ln.points_used) : "—")],
      [t("line_due"), (ln) => yuan(ln.due_fen)],
      [t("refunded"), (ln) => (ln.refunded_quantity ? `${ln.refunded_quantity} / ${yuan(ln.refunded_due_fen)}` : "—")],
      ...(refundable
        ? [
            [
              t("refund_qty"),
              (ln) => {
                const left = ln.quantity - ln.refunded_quantity;
                if (left <= 0) return "—";
                const box = input(`refund_qty_${ln.id}`, { type: "number", min: "0", max: String(left), value: "0", class: "qty", "data-line": ln.id });
                qty.set(ln.id, box);
                return [box, h("small", { class: "muted" }, ` / ${left}`)];
              },
            ],
          ]
        : []),
    ],
    o.lines,
    { rowAttrs: (ln) => ({ "data-line-id": ln.id }) },
  );
  const after = (fresh, message) => {
    toast(message || t("saved"));
    clear(main);
    return detailPage(main, id);
  };
  const actions = [];
  if (o.status === "paid") {
    const carrier = input("carrier", { maxlength: "32", required: o.delivery === "express" });
    const tracking = input("tracking_no", { maxlength: "64", required: o.delivery === "express" });
    const shipButton = h("button", { type: "submit", class: "btn btn-primary", "data-action": "ship" }, t("ship"));
    actions.push(
      h(
        "form",
        {
          class: "card form",
          "data-form": "ship",
          onSubmit: (e) => {
            e.preventDefault();
            busy(shipButton, async () => {
              const fresh = await api("POST", `/orders/${id}/ship`, { body: { shipping_company: carrier.value.trim(), tracking_no: tracking.value.trim() } });
              await after(fresh, t("order_shipped"));
            });
          },
        },
        h("h2", {}, t("ship")),
        h("div", { class: "grid-3" }, field(t("carrier"), carrier), field(t("tracking_no"), tracking)),
        h("div", { class: "actions" }, shipButton),
      ),
    );
  }
  if (refundable) {
    const reason = input("refund_reason", { maxlength: "128" });
    const restock = h("input", { type: "checkbox", name: "restock", checked: true });
    const key = newKey();
    const refundButton = h("button", { type: "submit", class: "btn btn-primary", "data-action": "refund" }, t("refund_lines"));
    actions.push(
      h(
        "form",
        {
          class: "card form",
          "data-form": "refund",
          onSubmit: (e) => {
            e.preventDefault();
            busy(refundButton, async () => {
              const lines = [...qty.entries()].map(([lineId, box]) => ({ line_id: lineId, quantity: Number(box.value) })).filter((ln) => ln.quantity > 0);
              if (!lines.length) throw new Error(t("refund_none_chosen"));
              const units = lines.reduce((n, ln) => n + ln.quantity, 0);
              if (!(await confirmDialog(t("confirm_refund", { n: units })))) return;
              const fresh = await api("POST", `/orders/${id}/refund`, { body: { lines, reason: reason.value.trim(), restock: restock.checked }, key });
              await after(fresh, t("order_refunded"));
            });
          },
        },
        h("h2", {}, t("refund_lines")),
        h("div", { class: "grid-3" }, field(t("refund_reason"), reason), h("label", { class: "check" }, restock, t("restock"))),
        h("div", { class: "actions" }, refundButton),
      ),
    );
  }
  const headActions = [h("a", { class: "btn", href: "#/orders" }, t("back"))];
  if (o.status === "paid" || o.status === "shipped") {
    const done = h("button", { type: "button", class: "btn", "data-action": "complete" }, t("complete"));
    done.addEventListener("click", () =>
      busy(done, async () => {
        if (!(await confirmDialog(t("confirm_complete")))) return;
        await after(await api("POST", `/orders/${id}/complete`));
      }),
    );
    headActions.unshift(done);
  }
  if (o.status === "pending_payment" || o.status === "paid") {
    const cancel = h("button", { type: "button", class: "btn", "data-action": "cancel" }, t("cancel_order"));
    const key = newKey();
    cancel.addEventListener("click", () =>
      busy(cancel, async () => {
        if (!(await confirmDialog(t("confirm_cancel")))) return;
        await after(await api("POST", `/orders/${id}/cancel`, { body: { reason: "" }, key }));
      }),
    );
    headActions.unshift(cancel);
  }
  const isAdmin = session.staff && session.staff.role === "admin";
  const addr = o.address
    ? facts([
        [t("consignee"), o.address.name],
        [
          t("phone"),
          [
            h("span", { "data-role": "phone" }, o.address.phone),
            isAdmin && !reveal ? [" ", h("button", { type: "button", class: "btn-link", "data-action": "reveal", onClick: () => (clear(main), detailPage(main, id, true).catch(showError)) }, t("reveal_phone"))] : null,
          ],
        ],
        [t("address"), `${o.address.region} ${o.address.detail}`],
      ])
    : null;
  const shipping = o.shipped_at ? facts([[t("carrier"), o.shipping_company || "—"], [t("tracking_no"), h("code", { "data-role": "tracking" }, o.tracking_no || "—")], [t("shipped_at"), when(o.shipped_at)]]) : null;
  const refunds = o.refunds.length
    ? h(
        "section",
        { class: "card" },
        h("h2", {}, t("refunds")),
        table(
          [
            [t("time"), (r) => when(r.created_at)],
            [t("refund_kind"), (r) => r.kind],
            [t("refund_money"), (r) => `${yuan(r.money_fen)} (${t("paid_wallet")} ${yuan(r.wallet_fen)}, ${t("paid_cash")} ${yuan(r.cash_fen)})`],
            [t("refund_points"), (r) => num(r.points)],
            [t("cash_status"), (r) => r.cash_status || "—"],
            [t("reason"), (r) => r.reason || "—"],
          ],
          o.refunds,
          { rowAttrs: (r) => ({ "data-refund": r.id }) },
        ),
      )
    : null;
  main.append(
    pageHead(`${t("order_detail")} ${o.number}`, ...headActions),
    h(
      "section",
      { class: "card" },
      facts([
        [t("status"), statusBadge(o.status), { "data-role": "status" }],
        [t("member"), h("a", { href: `#/members/${o.member_id}`, "data-role": "member" }, t("member_n", { id: o.member_id }))],
        [t("delivery"), t(`delivery_${o.delivery}`)],
        [t("created_at"), when(o.created_at)],
      ]),
      addr,
      shipping,
    ),
    h("div", { class: "grid-2" }, h("section", { class: "card" }, h("h2", {}, t("price_breakdown")), breakdown(o)), h("section", { class: "card" }, h("h2", {}, t("payment_parts")), payment(o))),
    h("section", { class: "card" }, h("h2", {}, t("lines")), lineRows),
    refunds,
    ...actions,
  );
}

export function render(main, params) {
  const [first, second] = params;
  if (first && /^\d+$/.test(first)) return detailPage(main, Number(first));
  if (first === "member" && second) return listPage(main, Number(second));
  return listPage(main);
}
