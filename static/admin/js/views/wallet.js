// Stored value (#/wallet): what is owed (principal and bonus apart), the top-up plans
// (create, switch on/off), top-ups with their refundable principal, and refunds of a
// top-up's principal through WeChat Pay (admin only; audited by the API).
import { api, newKey, session } from "../api.js";
import { h, clear, busy, field, input, select, table, badge, pageHead, yuan, num, when, toast, showError, toFen, modal } from "../dom.js";
import { t } from "../i18n.js";
import { pagedTable } from "../ops_kit.js";

const isAdmin = () => Boolean(session.staff && session.staff.role === "admin");

function kpi(label, value, role, kind = "") {
  return h("div", { class: `kpi ${kind}` }, h("span", { class: "kpi-label" }, label), h("span", { class: "kpi-value", "data-role": role }, value));
}

function refundDialog(topUp, done) {
  const amount = input("refund_principal", { inputmode: "decimal", placeholder: (topUp.refundable_fen / 100).toFixed(2) });
  const reason = input("topup_refund_reason", { minlength: "2", maxlength: "80", required: true });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-action": "refund" }, t("refund_top_up"));
  const key = newKey();
  const m = modal(
    `${t("refund_top_up")} #${topUp.id}`,
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "topup-refund",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            const fen = amount.value.trim() ? toFen(amount.value) : null;
            if (amount.value.trim() && !fen) throw new Error(t("amount_invalid"));
            await api("POST", `/wallet/top-ups/${topUp.id}/refund`, { body: { principal_fen: fen || undefined, reason: reason.value.trim() }, key });
            toast(t("saved"));
            m.close();
            await done();
          });
        },
      },
      h("p", { class: "muted small" }, t("refund_top_up_hint", { max: yuan(topUp.refundable_fen) })),
      h("div", { class: "grid-2" }, field(t("principal_yuan"), amount), field(t("reason"), reason)),
      h("div", { class: "actions" }, submit),
    ),
  );
}

export async function render(main) {
  const kpis = h("div", { class: "kpis", "data-role": "liability" });
  const loadLiability = async () => {
    const owed = await api("GET", "/wallet/liability");
    clear(kpis).append(
      kpi(t("wallet_principal"), yuan(owed.principal_fen), "principal", "kpi-warn"),
      kpi(t("wallet_bonus"), yuan(owed.bonus_fen), "bonus"),
      kpi(t("wallet_total"), yuan(owed.total_fen), "total"),
      kpi(t("wallets_with_balance"), num(owed.wallets_with_balance), "wallets"),
      kpi(t("refunds_in_flight"), yuan(owed.refunds_in_flight_fen), "in-flight"),
    );
  };

  const plans = h("div", { "data-role": "plans" });
  const loadPlans = async () => {
    const rows = await api("GET", "/wallet/plans");
    clear(plans).append(
      table(
        [
          ["ID", (p) => p.id],
          [t("name"), (p) => p.name],
          [t("plan_pay"), (p) => yuan(p.amount_fen)],
          [t("plan_bonus"), (p) => yuan(p.bonus_fen)],
          [t("per_member_limit"), (p) => (p.per_member_limit === null ? t("unlimited") : num(p.per_member_limit))],
          [t("status"), (p) => (p.active ? badge(t("active"), "good") : badge(t("inactive")))],
          [
            t("actions"),
            (p) => {
              const toggle = h("button", { type: "button", class: "btn btn-small", "data-action": "toggle" }, p.active ? t("switch_off") : t("switch_on"));
              toggle.addEventListener("click", () => busy(toggle, async () => (await api("PATCH", `/wallet/plans/${p.id}`, { body: { active: !p.active } }), await loadPlans())));
              return toggle;
            },
          ],
        ],
        rows,
        { rowAttrs: (p) => ({ "data-plan": p.id }) },
      ),
    );
  };
  const planName = input("plan_name", { maxlength: "64", required: true });
  const planAmount = input("plan_amount", { inputmode: "decimal", required: true });
  const planBonus = input("plan_bonus", { inputmode: "decimal", value: "0" });
  const planLimit = input("plan_limit", { type: "number", min: "1", placeholder: t("unlimited") });
  const planSubmit = h("button", { type: "submit", class: "btn btn-primary", "data-action": "save-plan" }, t("create"));
  const planForm = h(
    "form",
    {
      class: "form",
      "data-form": "plan",
      onSubmit: (e) => {
        e.preventDefault();
        busy(planSubmit, async () => {
          const amount = toFen(planAmount.value);
          const bonus = toFen(planBonus.value || "0");
          if (!amount || bonus === null) throw new Error(t("amount_invalid"));
          await api("POST", "/wallet/plans", { body: { name: planName.value.trim(), amount_fen: amount, bonus_fen: bonus, per_member_limit: planLimit.value ? Number(planLimit.value) : null } });
          planForm.reset();
          toast(t("saved"));
          await loadPlans();
        });
      },
    },
    h("h3", {}, t("new_plan")),
    h("div", { class: "grid-3" }, field(t("name"), planName), field(t("plan_pay_yuan"), planAmount), field(t("plan_bonus_yuan"), planBonus), field(t("per_member_limit"), planLimit)),
    h("div", { class: "actions" }, planSubmit),
  );

  const status = select("topup_status", [["", t("all_statuses")], ["pending", t("topup_pending")], ["paid", t("topup_paid")], ["closed", t("topup_closed")]], "");
  const member = input("topup_member", { type: "number", min: "1", placeholder: t("member_id_filter") });
  const reloadAll = async () => {
    await Promise.all([loadLiability(), topUps.reload()]);
  };
  const topUps = pagedTable(
    [
      ["ID", (u) => u.id],
      [t("member"), (u) => h("a", { href: `#/members/${u.member_id}` }, `#${u.member_id}`)],
      [t("plan_pay"), (u) => yuan(u.amount_fen)],
      [t("plan_bonus"), (u) => yuan(u.bonus_fen)],
      [t("status"), (u) => badge(t(`topup_${u.status}`), u.status === "paid" ? "good" : "")],
      [t("paid_at"), (u) => when(u.paid_at)],
      [t("refunded"), (u) => (u.refunded_principal_fen ? `${yuan(u.refunded_principal_fen)} (-${yuan(u.forfeited_bonus_fen)} ${t("wallet_bonus")})` : "—")],
      [t("refundable"), (u) => h("span", { "data-figure": "refundable" }, yuan(u.refundable_fen))],
      [
        t("actions"),
        (u) =>
          isAdmin() && u.refundable_fen > 0
            ? h("button", { type: "button", class: "btn btn-small", "data-action": "refund-top-up", onClick: () => refundDialog(u, reloadAll) }, t("refund_top_up"))
            : "",
      ],
    ],
    async (cursor) => {
      const response = await api("GET", "/wallet/top-ups", { query: { status: status.value, member_id: member.value.trim(), cursor, size: 50 }, raw: true });
      return { items: await response.json(), next_cursor: response.headers.get("X-Next-Cursor") };
    },
    { role: "top-ups", rowAttrs: (u) => ({ "data-top-up": u.id }) },
  );
  status.addEventListener("change", () => topUps.reload().catch(showError));
  member.addEventListener("change", () => topUps.reload().catch(showError));

  main.append(
    pageHead(t("menu_wallet")),
    h("p", { class: "muted" }, t("liability_help")),
    kpis,
    h("section", { class: "card" }, h("h2", {}, t("top_up_plans")), plans, planForm),
    h("section", { class: "card" }, h("h2", {}, t("top_ups")), h("div", { class: "filters" }, status, member), topUps.el),
  );
  await Promise.all([loadLiability(), loadPlans(), topUps.reload()]);
}
