// WeChat Pay reconciliation (#/pay-reconciliation): the recent days whose trade and refund
// bills were checked against orders and top-ups, a day reconciled again on demand, and
// the refunds WeChat Pay could not pay out (ABNORMAL) with their two resolutions (admin
// only; audited by the API). One day with its mismatches: #/pay-reconciliation/<date>.
import { api, newKey, session } from "../api.js";
import { h, clear, busy, field, input, table, badge, pageHead, yuan, num, when, toast, showError, confirmDialog, modal } from "../dom.js";
import { t } from "../i18n.js";
import { facts } from "../ops_kit.js";

const BASE = "pay-reconciliation";
const BILL_DAYS_KEPT = 90; // as the API allows: the last 90 days up to yesterday
const isAdmin = () => Boolean(session.staff && session.staff.role === "admin");

const STATUS = { ok: ["payrec_status_ok", "good"], mismatch: ["payrec_status_mismatch", "bad"], failed: ["payrec_status_failed", "warn"] };
const KINDS = {
  paid_not_in_mall: ["payrec_kind_paid_not_in_mall", "payrec_todo_paid_not_in_mall"],
  amount_differs: ["payrec_kind_amount_differs", "payrec_todo_amount_differs"],
  not_paid_at_wechat: ["payrec_kind_not_paid_at_wechat", "payrec_todo_not_paid_at_wechat"],
  refund_not_in_mall: ["payrec_kind_refund_not_in_mall", "payrec_todo_refund_not_in_mall"],
  refund_amount_differs: ["payrec_kind_refund_amount_differs", "payrec_todo_refund_amount_differs"],
  refund_not_at_wechat: ["payrec_kind_refund_not_at_wechat", "payrec_todo_refund_not_at_wechat"],
  refund_status_differs: ["payrec_kind_refund_status_differs", "payrec_todo_refund_status_differs"],
};
// the fixed notes the reconciliation adds to a mismatch (anything else is shown as it is)
const DETAILS = {
  "not in the bill; not asked": "payrec_detail_not_asked",
  "paid that day but not in the bill": "payrec_detail_missing_from_bill",
  "unknown to WeChat Pay": "payrec_detail_unknown",
  "refunded at WeChat, failed in the mall": "payrec_detail_refunded_at_wechat",
};

export function statusBadge(status) {
  const [label, kind] = STATUS[status] || [status, ""];
  return h("span", { class: `badge ${kind ? `badge-${kind}` : ""}`, "data-status": status }, STATUS[status] ? t(label) : status);
}

/** A Shanghai calendar day `offset` days from today, as YYYY-MM-DD. */
function shanghaiDay(offset = 0) {
  const today = new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
  const [y, m, d] = today.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + offset)).toISOString().slice(0, 10);
}

function runDay(day, button, done) {
  return busy(button, async () => {
    try {
      const result = await api("POST", `/pay/reconciliations/${day}/run`);
      toast(t("payrec_ran", { day, n: num(result.mismatches.length) }), result.mismatches.length ? "warn" : "ok");
    } finally {
      await done(); // a failed run is kept too: show it
    }
  });
}

function detailText(detail) {
  if (!detail) return "";
  if (DETAILS[detail]) return t(DETAILS[detail]);
  const failed = /^not in the bill; query failed: (\w+)$/.exec(detail);
  return failed ? t("payrec_detail_query_failed", { code: failed[1] }) : detail;
}

function reference(m) {
  const member = m.member_id ? h("a", { href: `#/members/${m.member_id}`, "data-role": "member" }, t("member_n", { id: m.member_id })) : null;
  if (m.order_id) {
    const number = m.out_trade_no.replace(/^O/, "");
    return [h("a", { href: `#/orders/${m.order_id}`, "data-role": "order" }, `${t("order")} ${number}`), member ? [h("br"), member] : null];
  }
  if (m.top_up_id) return [h("span", { "data-role": "top-up" }, t("payrec_top_up_n", { id: m.top_up_id })), member ? [h("br"), member] : null];
  return h("span", { class: "muted" }, t("payrec_unknown_ref"));
}

function mismatchTable(mismatches) {
  return table(
    [
      [t("payrec_kind"), (m) => h("strong", { "data-role": "kind" }, KINDS[m.kind] ? t(KINDS[m.kind][0]) : m.kind)],
      [t("payrec_trade_no"), (m) => [h("code", {}, m.out_trade_no), m.out_refund_no ? [h("br"), h("small", { class: "muted" }, `${t("payrec_refund_no")} `), h("code", { "data-role": "refund-no" }, m.out_refund_no)] : null]],
      [t("payrec_reference"), reference],
      [t("payrec_wechat_amount"), (m) => h("span", { "data-figure": "wechat" }, yuan(m.wechat_fen))],
      [t("payrec_mall_amount"), (m) => h("span", { "data-figure": "mall" }, yuan(m.mall_fen))],
      [t("payrec_todo"), (m) => [KINDS[m.kind] ? t(KINDS[m.kind][1]) : "", m.detail ? h("small", { class: "muted", "data-role": "detail" }, [h("br"), detailText(m.detail)]) : null]],
    ],
    mismatches,
    { empty: t("payrec_all_matched"), rowAttrs: (m) => ({ "data-kind": m.kind, "data-trade-no": m.out_trade_no }) },
  );
}

async function dayPage(main, day) {
  const again = h("button", { type: "button", class: "btn", "data-action": "run" }, t("payrec_run_again"));
  const reload = async () => {
    clear(main);
    await dayPage(main, day);
  };
  again.addEventListener("click", () => runDay(day, again, reload));
  const back = h("a", { class: "btn", href: `#/${BASE}` }, t("back"));
  let d;
  try {
    d = await api("GET", `/pay/reconciliations/${day}`);
  } catch (err) {
    if (err.status !== 404) throw err;
    main.append(pageHead(t("payrec_day_title", { day }), again, back), h("p", { class: "notice", "data-role": "missing" }, err.message));
    return;
  }
  const rows = [
    [t("status"), statusBadge(d.status), { "data-role": "status" }],
    [t("payrec_payments"), `${num(d.payments)} / ${yuan(d.paid_fen)}`, { "data-figure": "payments" }],
    [t("payrec_refunds"), `${num(d.refunds)} / ${yuan(d.refunded_fen)}`, { "data-figure": "refunds" }],
    [t("payrec_mismatches"), num(d.mismatches.length), { "data-figure": "mismatches" }],
    [t("payrec_ran_at"), when(d.ran_at)],
  ];
  if (d.error) rows.push([t("payrec_error"), h("code", {}, d.error), { "data-role": "error" }]);
  main.append(
    pageHead(t("payrec_day_title", { day: d.bill_date }), again, back),
    h("section", { class: "card" }, facts(rows)),
    h("section", { class: "card", "data-role": "mismatches" }, h("h2", {}, t("payrec_mismatches")), d.status === "failed" ? h("p", { class: "muted" }, t("payrec_failed_hint")) : mismatchTable(d.mismatches)),
  );
}

function offlineDialog(refund, done) {
  const note = input("resolve_note", { minlength: "2", maxlength: "255", required: true, placeholder: t("payrec_offline_note_hint") });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-action": "confirm-offline" }, t("payrec_offline_confirm"));
  const key = newKey();
  const m = modal(
    t("payrec_offline_title"),
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "resolve-offline",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            await api("POST", refund.resolvePath, { body: { action: "offline", note: note.value.trim() }, key });
            toast(t("payrec_resolved_offline"));
            m.close();
            await done();
          });
        },
      },
      h("p", {}, t("payrec_offline_hint", { amount: yuan(refund.cash_fen), no: refund.out_refund_no })),
      field(t("payrec_offline_note"), note),
      h("div", { class: "actions" }, submit),
    ),
  );
  note.focus();
}

function retry(refund, button, done) {
  return busy(button, async () => {
    if (!(await confirmDialog(t("payrec_confirm_retry", { amount: yuan(refund.cash_fen), no: refund.out_refund_no })))) return;
    try {
      await api("POST", refund.resolvePath, { body: { action: "retry" }, key: newKey() });
      toast(t("payrec_resolved_retry"));
    } finally {
      await done(); // a refused retry still counts an attempt
    }
  });
}

async function abnormalRefunds() {
  const [orders, topUps] = await Promise.all([api("GET", "/order-refunds/abnormal"), api("GET", "/wallet/refunds/abnormal")]);
  return [
    ...orders.map((r) => ({ ...r, source: "order", attempts: r.cash_attempt, answer: r.cash_error, resolvePath: `/order-refunds/${r.id}/resolve` })),
    ...topUps.map((r) => ({ ...r, source: "top_up", attempts: r.attempt, answer: r.error_code, resolvePath: `/wallet/refunds/${r.id}/resolve` })),
  ].sort((a, b) => a.created_at.localeCompare(b.created_at));
}

function refundReference(r) {
  const member = r.member_id ? [h("br"), h("a", { href: `#/members/${r.member_id}`, "data-role": "member" }, t("member_n", { id: r.member_id }))] : null;
  if (r.source === "order") return [h("a", { href: `#/orders/${r.order_id}`, "data-role": "order" }, `${t("order")} #${r.order_id}`), member];
  return [t("payrec_top_up_n", { id: r.top_up_id }), member];
}

async function listPage(main) {
  const yesterday = shanghaiDay(-1);
  const dayInput = input("payrec_day", { type: "date", value: yesterday, min: shanghaiDay(-BILL_DAYS_KEPT), max: yesterday, required: true });
  const run = h("button", { type: "submit", class: "btn btn-primary", "data-action": "run" }, t("payrec_run"));
  const days = h("div", { "data-role": "days" });
  const notice = h("div", { "data-role": "not-yet" });
  const loadDays = async () => {
    const rows = await api("GET", "/pay/reconciliations", { query: { limit: 30 } });
    clear(notice);
    if (!rows.length || rows[0].bill_date < yesterday) notice.append(h("p", { class: "notice" }, t("payrec_not_yet", { day: yesterday })));
    clear(days).append(
      table(
        [
          [t("payrec_bill_date"), (d) => h("a", { href: `#/${BASE}/${d.bill_date}`, "data-day": d.bill_date }, d.bill_date)],
          [t("status"), (d) => statusBadge(d.status)],
          [t("payrec_payments"), (d) => num(d.payments)],
          [t("payrec_paid"), (d) => yuan(d.paid_fen)],
          [t("payrec_refunds"), (d) => num(d.refunds)],
          [t("payrec_refunded"), (d) => yuan(d.refunded_fen)],
          [t("payrec_mismatches"), (d) => h("span", { "data-figure": "mismatches", class: d.mismatches.length ? "amount-neg" : "" }, num(d.mismatches.length))],
          [t("payrec_ran_at"), (d) => when(d.ran_at)],
          [t("actions"), (d) => h("a", { class: "btn btn-small", href: `#/${BASE}/${d.bill_date}`, "data-action": "view" }, t("payrec_view"))],
        ],
        rows,
        { empty: t("payrec_none"), rowAttrs: (d) => ({ "data-bill-date": d.bill_date, "data-status": d.status }) },
      ),
    );
  };
  const runForm = h(
    "form",
    {
      class: "filters",
      "data-form": "run",
      onSubmit: (e) => {
        e.preventDefault();
        runDay(dayInput.value, run, loadDays);
      },
    },
    h("span", { class: "muted" }, t("payrec_run_day")),
    dayInput,
    run,
    h("small", { class: "muted" }, t("payrec_run_hint")),
  );

  const refunds = h("div", { "data-role": "abnormal" });
  const loadRefunds = async () => {
    const rows = await abnormalRefunds();
    clear(refunds).append(
      ...(isAdmin() ? [] : [h("p", { class: "muted small" }, t("payrec_admin_only"))]),
      table(
        [
          [t("payrec_source"), (r) => t(r.source === "order" ? "payrec_source_order" : "payrec_source_top_up")],
          [t("payrec_reference"), refundReference],
          [t("payrec_refund_no"), (r) => h("code", {}, r.out_refund_no)],
          [t("payrec_refund_amount"), (r) => h("span", { "data-figure": "cash" }, yuan(r.cash_fen))],
          [t("payrec_wechat_answer"), (r) => r.answer || "ABNORMAL"],
          [t("payrec_attempts"), (r) => num(r.attempts)],
          [t("created_at"), (r) => when(r.created_at)],
          [
            t("actions"),
            (r) => {
              if (!isAdmin()) return "—";
              const again = h("button", { type: "button", class: "btn btn-small", "data-action": "retry" }, t("payrec_retry"));
              again.addEventListener("click", () => retry(r, again, loadRefunds));
              const offline = h("button", { type: "button", class: "btn btn-small", "data-action": "offline", onClick: () => offlineDialog(r, loadRefunds) }, t("payrec_offline"));
              return h("div", { class: "row-actions" }, again, offline);
            },
          ],
        ],
        rows,
        { empty: t("payrec_no_abnormal"), rowAttrs: (r) => ({ "data-refund": `${r.source}:${r.id}` }) },
      ),
    );
  };

  main.append(
    pageHead(t("menu_pay_reconciliation")),
    h("p", { class: "muted" }, t("payrec_help")),
    notice,
    h("section", { class: "card" }, h("h2", {}, t("payrec_recent")), runForm, days),
    h("section", { class: "card" }, h("h2", {}, t("payrec_abnormal_title")), h("p", { class: "muted small" }, t("payrec_abnormal_help")), refunds),
  );
  await Promise.all([loadDays(), loadRefunds()]);
}

export function render(main, params) {
  const [day] = params;
  if (day && /^\d{4}-\d{2}-\d{2}$/.test(day)) return dayPage(main, day);
  return listPage(main);
}
