// Members: search by phone, nickname, member id or openid (#/members), and one member
// (#/members/<id>) with level and growth, points ledger, coupons, wallet ledger, orders,
// tags and promoter, plus audited point grants (ops) and wallet adjustments (admin).
import { api, newKey, session } from "../api.js";
import { h, clear, busy, field, input, table, badge, pageHead, yuan, num, when, toast, showError, toFen } from "../dom.js";
import { t } from "../i18n.js";
import { pagedTable, facts, memberLink } from "../ops_kit.js";
import { orderColumns } from "./orders.js";

const isAdmin = () => Boolean(session.staff && session.staff.role === "admin");
const signed = (n, fmt) => h("span", { class: n < 0 ? "amount-neg" : "amount-pos" }, `${n > 0 ? "+" : ""}${fmt(n)}`);

async function searchPage(main) {
  const q = input("member_q", { type: "search", maxlength: "64", placeholder: t("member_search_hint") });
  let reveal = false;
  const paged = pagedTable(
    [
      ["ID", (m) => memberLink(m.id)],
      [t("nickname"), (m) => m.nickname || "—"],
      [t("phone"), (m) => h("span", { "data-role": "phone" }, m.phone || "—")],
      [t("level"), (m) => `Lv${m.level}`],
      [t("growth"), (m) => num(m.growth_value)],
      [t("points"), (m) => num(m.points_balance)],
      [t("joined_at"), (m) => when(m.created_at)],
      [t("status"), (m) => (m.deleted_at ? badge(t("member_deleted"), "bad") : "")],
    ],
    (cursor) => api("GET", "/members", { query: { q: q.value.trim(), cursor, size: 20, reveal: reveal ? "phone" : undefined } }),
    { role: "members", rowAttrs: (m) => ({ "data-id": m.id }) },
  );
  const search = h("button", { type: "submit", class: "btn btn-primary", "data-action": "search" }, t("search"));
  const revealButton = isAdmin()
    ? h("button", { type: "button", class: "btn", "data-action": "reveal", onClick: () => ((reveal = true), paged.reload().catch(showError)) }, t("reveal_phone"))
    : null;
  const form = h(
    "form",
    {
      class: "filters",
      "data-form": "member-search",
      onSubmit: (e) => {
        e.preventDefault();
        reveal = false;
        busy(search, () => paged.reload());
      },
    },
    q,
    search,
    revealButton,
  );
  main.append(pageHead(t("menu_members")), form, paged.el);
  await paged.reload();
  q.focus();
}

function grantForm(id, reload) {
  const points = input("grant_points", { type: "number", min: "-100000000", max: "100000000", step: "1", required: true });
  const reason = input("grant_reason", { maxlength: "128", required: true });
  const growth = h("input", { type: "checkbox", name: "counts_for_growth", checked: true });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-action": "grant" }, t("grant_points"));
  let key = newKey();
  const form = h(
    "form",
    {
      class: "card form",
      "data-form": "grant-points",
      onSubmit: (e) => {
        e.preventDefault();
        busy(submit, async () => {
          const n = Number(points.value);
          if (!Number.isInteger(n) || n === 0) throw new Error(t("points_nonzero"));
          await api("POST", `/members/${id}/points`, { body: { points: n, reason: reason.value.trim(), counts_for_growth: growth.checked }, key });
          key = newKey();
          form.reset();
          toast(t("saved"));
          await reload();
        });
      },
    },
    h("h2", {}, t("grant_points")),
    h("p", { class: "muted small" }, t("grant_points_hint")),
    h("div", { class: "grid-3" }, field(t("points"), points), field(t("reason"), reason), h("label", { class: "check" }, growth, t("counts_for_growth"))),
    h("div", { class: "actions" }, submit),
  );
  return form;
}

function adjustForm(id, reload) {
  const principal = input("adjust_principal", { inputmode: "decimal", placeholder: "0.00" });
  const bonus = input("adjust_bonus", { inputmode: "decimal", placeholder: "0.00" });
  const reason = input("adjust_reason", { minlength: "2", maxlength: "255", required: true });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-action": "adjust" }, t("adjust_wallet"));
  let key = newKey();
  const fen = (box) => {
    const text = box.value.trim();
    if (!text) return 0;
    const negative = text.startsWith("-");
    const value = toFen(negative ? text.slice(1) : text);
    if (value === null) throw new Error(t("amount_invalid"));
    return negative ? -value : value;
  };
  const form = h(
    "form",
    {
      class: "card form",
      "data-form": "adjust-wallet",
      onSubmit: (e) => {
        e.preventDefault();
        busy(submit, async () => {
          await api("POST", `/members/${id}/wallet/adjustments`, { body: { principal_fen: fen(principal), bonus_fen: fen(bonus), reason: reason.value.trim() }, key });
          key = newKey();
          form.reset();
          toast(t("saved"));
          await reload();
        });
      },
    },
    h("h2", {}, t("adjust_wallet")),
    h("p", { class: "muted small" }, t("adjust_wallet_hint")),
    h("div", { class: "grid-3" }, field(t("principal_yuan"), principal), field(t("bonus_yuan"), bonus), field(t("reason"), reason)),
    h("div", { class: "actions" }, submit),
  );
  return form;
}

async function detailPage(main, id, reveal = false) {
  const [m, wallet, binding] = await Promise.all([
    api("GET", `/members/${id}`, { query: reveal ? { reveal: "phone" } : undefined }),
    api("GET", `/members/${id}/wallet`, { query: { size: 1 } }),
    api("GET", `/referral/bindings/${id}`).catch(() => null),
  ]);
  const kpis = h("div", { class: "kpis", "data-role": "member-kpis" });
  const drawKpis = (member, w) =>
    clear(kpis).append(
      h("div", { class: "kpi" }, h("span", { class: "kpi-label" }, t("level")), h("span", { class: "kpi-value", "data-role": "level" }, `Lv${member.level}`)),
      h("div", { class: "kpi" }, h("span", { class: "kpi-label" }, t("growth")), h("span", { class: "kpi-value", "data-role": "growth" }, num(member.growth_value))),
      h("div", { class: "kpi kpi-good" }, h("span", { class: "kpi-label" }, t("points")), h("span", { class: "kpi-value", "data-role": "points-balance" }, num(member.points_balance))),
      h("div", { class: "kpi" }, h("span", { class: "kpi-label" }, t("wallet_principal")), h("span", { class: "kpi-value", "data-role": "principal" }, yuan(w.principal_fen))),
      h("div", { class: "kpi" }, h("span", { class: "kpi-label" }, t("wallet_bonus")), h("span", { class: "kpi-value", "data-role": "bonus" }, yuan(w.bonus_fen))),
    );
  drawKpis(m, wallet);
  const points = pagedTable(
    [
      [t("time"), (e) => when(e.created_at)],
      [t("kind"), (e) => e.kind],
      [t("change"), (e) => signed(e.delta, num)],
      [t("balance_after"), (e) => num(e.balance_after)],
      [t("reason"), (e) => e.reason || "—"],
      [t("reference"), (e) => (e.reference ? h("code", {}, e.reference) : "—")],
    ],
    (cursor) => api("GET", `/members/${id}/points`, { query: { cursor, size: 20 } }),
    { role: "points-ledger", rowAttrs: (e) => ({ "data-entry": e.id }) },
  );
  const coupons = pagedTable(
    [
      ["ID", (c) => c.id],
      [t("name"), (c) => c.name],
      [t("status"), (c) => badge(t(`coupon_status_${c.status}`), c.status === "usable" ? "good" : "")],
      [t("source"), (c) => c.source || "—"],
      [t("expires_at"), (c) => when(c.expires_at)],
    ],
    (cursor) => api("GET", `/members/${id}/coupons`, { query: { cursor, size: 20 } }),
    { role: "coupons", rowAttrs: (c) => ({ "data-coupon": c.id }) },
  );
  const walletLedger = pagedTable(
    [
      [t("time"), (e) => when(e.created_at)],
      [t("kind"), (e) => t(`wallet_kind_${e.kind}`)],
      [t("wallet_principal"), (e) => signed(e.principal_delta, yuan)],
      [t("wallet_bonus"), (e) => signed(e.bonus_delta, yuan)],
      [t("balance_after"), (e) => `${yuan(e.principal_after)} + ${yuan(e.bonus_after)}`],
      [t("reason"), (e) => e.reason || "—"],
    ],
    async (cursor) => {
      const page = await api("GET", `/members/${id}/wallet`, { query: { cursor, size: 20 } });
      drawKpis(m, page);
      return { items: page.entries, next_cursor: page.next_cursor };
    },
    { role: "wallet-ledger", rowAttrs: (e) => ({ "data-entry": e.id }) },
  );
  const orders = pagedTable(orderColumns(), (cursor) => api("GET", "/orders", { query: { member_id: id, cursor, size: 20 } }), {
    role: "member-orders",
    rowAttrs: (o) => ({ "data-id": o.id }),
  });
  const reloadPoints = async () => {
    const fresh = await api("GET", `/members/${id}`);
    m.points_balance = fresh.points_balance;
    m.growth_value = fresh.growth_value;
    m.level = fresh.level;
    await Promise.all([points.reload(), walletLedger.reload()]);
  };
  const profile = facts([
    [t("nickname"), m.nickname || "—"],
    [
      t("phone"),
      [
        h("span", { "data-role": "phone" }, m.phone || "—"),
        isAdmin() && !reveal && m.phone ? [" ", h("button", { type: "button", class: "btn-link", "data-action": "reveal", onClick: () => (clear(main), detailPage(main, id, true).catch(showError)) }, t("reveal_phone"))] : null,
      ],
    ],
    [t("birthday"), m.birthday || "—"],
    [t("tags"), m.tags.length ? m.tags.map((tag) => [badge(tag), " "]) : "—", { "data-role": "tags" }],
    [t("promoter"), binding ? h("a", { href: `#/referral/promoter/${binding.promoter_id}`, "data-role": "promoter" }, `#${binding.promoter_id} (${binding.code})`) : "—"],
    [t("joined_at"), when(m.created_at)],
    ...(m.deleted_at ? [[t("member_deleted"), when(m.deleted_at)]] : []),
  ]);
  main.append(
    pageHead(`${m.nickname || t("member")} · #${m.id}`, h("a", { class: "btn", href: `#/orders/member/${id}` }, t("view_orders")), h("a", { class: "btn", href: "#/members" }, t("back"))),
    kpis,
    h("section", { class: "card" }, profile),
    h("div", { class: "grid-2" }, grantForm(id, reloadPoints), isAdmin() ? adjustForm(id, reloadPoints) : h("section", { class: "card" }, h("h2", {}, t("adjust_wallet")), h("p", { class: "notice" }, t("adjust_admin_only")))),
    h("section", { class: "card" }, h("h2", {}, t("points_ledger")), points.el),
    h("section", { class: "card" }, h("h2", {}, t("wallet_ledger")), walletLedger.el),
    h("section", { class: "card" }, h("h2", {}, t("coupons")), coupons.el),
    h("section", { class: "card" }, h("h2", {}, t("menu_orders")), orders.el),
  );
  await Promise.all([points.reload(), coupons.reload(), walletLedger.reload(), orders.reload()]);
}

export function render(main, params) {
  const [first] = params;
  if (first && /^\d+$/.test(first)) return detailPage(main, Number(first));
  return searchPage(main);
}
