// Referral: promoters (KOC members and salespeople) with their customers and net
// commission, the commission ledger and its CSV export, and the levels and rates
// (admin only may change them; the API refuses ops too). Routes: #/referral,
// #/referral/commissions, #/referral/levels, #/referral/promoter/<id>.
import { api, session } from "../api.js";
import { h, clear, busy, field, input, select, modal, table, badge, pageHead, yuan, num, when, toast, showError, toFen, fenToText, localToIso } from "../dom.js";
import { t } from "../i18n.js";

const isAdmin = () => Boolean(session.staff && session.staff.role === "admin");
const rate = (bp) => `${(bp / 100).toFixed(2).replace(/\.?0+$/, "")}%`;

/** Downloads the ledger as CSV through the API (the token is a header, not a cookie). */
async function downloadCsv(query) {
  const response = await api("GET", "/referral/commissions.csv", { query, raw: true });
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || "commissions.csv";
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** A cursor-paged table: `load(cursor)` answers {items, next_cursor}. */
function pagedTable(columns, load, { role, rowAttrs } = {}) {
  const box = h("div", { "data-role": role });
  const more = h("button", { type: "button", class: "btn btn-small", "data-action": "more", hidden: true }, t("load_more"));
  let rows = [];
  let cursor = null;
  const draw = () => clear(box).append(table(columns, rows, { rowAttrs }), more);
  const fetchPage = async (reset) => {
    const page = await load(reset ? undefined : cursor);
    rows = reset ? page.items : rows.concat(page.items);
    cursor = page.next_cursor;
    more.hidden = !cursor;
    draw();
  };
  more.addEventListener("click", () => busy(more, () => fetchPage(false)));
  return { el: box, reload: () => fetchPage(true) };
}

function ledgerColumns(names) {
  return [
    [t("time"), (c) => when(c.created_at)],
    [t("promoter"), (c) => h("a", { href: `#/referral/promoter/${c.promoter_id}` }, names && names[c.promoter_id] ? names[c.promoter_id] : `#${c.promoter_id}`)],
    [t("customer"), (c) => `#${c.customer_id}`],
    [t("order"), (c) => `#${c.order_id}`],
    [t("event"), (c) => badge(t(`event_${c.event}`), c.event === "completed" ? "good" : "warn")],
    [t("level"), (c) => c.level],
    [t("rate"), (c) => rate(c.rate_bp)],
    [t("base_amount"), (c) => yuan(c.base_fen)],
    [t("commission"), (c) => h("strong", { "data-amount": c.amount_fen }, yuan(c.amount_fen))],
  ];
}

/** `promoterId`: a number, or a function answering the ledger's current filter. */
function exportBar(promoterId) {
  const since = input("since", { type: "datetime-local" });
  const until = input("until", { type: "datetime-local" });
  const go = h("button", { type: "button", class: "btn", "data-action": "export" }, t("export_csv"));
  go.addEventListener("click", () =>
    busy(go, () => downloadCsv({ promoter_id: (typeof promoterId === "function" ? promoterId() : promoterId) || undefined, since: localToIso(since.value) || undefined, until: localToIso(until.value) || undefined })),
  );
  return h("div", { class: "filters" }, h("span", { class: "muted" }, t("export_window")), since, "→", until, go);
}

function tabs(current) {
  const items = [
    ["", t("promoters")],
    ["commissions", t("commission_ledger")],
    ["levels", t("promoter_levels")],
  ];
  return h(
    "div",
    { class: "tabs", role: "tablist" },
    items.map(([path, label]) =>
      h(
        "button",
        { type: "button", role: "tab", "data-tab": path || "promoters", "aria-selected": String(path === current), onClick: () => (location.hash = `#/referral${path ? `/${path}` : ""}`) },
        label,
      ),
    ),
  );
}

// --- promoters ----------------------------------------------------------------------

function promoterDialog(rules) {
  const kind = select(
    "promoter_kind",
    [["member", t("promoter_kind_member")], ...(isAdmin() ? [["staff", t("promoter_kind_staff")]] : [])],
    "member",
  );
  const who = input("promoter_who", { type: "number", min: "1", required: true });
  const whoField = field(t("member_id"), who);
  const level = select("promoter_level", [["", t("level_default")], ...rules.levels.map((l) => [l.code, `${l.name} (${rate(l.rate_bp)})`])], "");
  kind.addEventListener("change", () => {
    whoField.querySelector(".field-label").textContent = kind.value === "staff" ? t("staff_id") : t("member_id");
  });
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "save" }, t("save"));
  const m = modal(
    t("new_promoter"),
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "promoter",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            const body = { [kind.value === "staff" ? "staff_id" : "member_id"]: Number(who.value), ...(level.value ? { level: level.value } : {}) };
            const p = await api("POST", "/referral/promoters", { body });
            toast(t("saved"));
            m.close();
            location.hash = `#/referral/promoter/${p.id}`;
          });
        },
      },
      h("p", { class: "muted small" }, t("new_promoter_hint")),
      h("div", { class: "grid-3" }, field(t("promoter_kind"), kind), whoField, field(t("level"), level)),
      h("div", { class: "actions" }, submit),
    ),
  );
  who.focus();
}

async function promotersPage(main) {
  const rules = (await api("GET", "/referral/rules")).rules;
  const level = select("level_filter", [["", t("all_levels")], ...rules.levels.map((l) => [l.code, l.name])], "");
  const paged = pagedTable(
    [
      ["ID", (p) => p.id],
      [t("name"), (p) => h("a", { href: `#/referral/promoter/${p.id}`, "data-promoter": p.id }, p.name || `#${p.id}`)],
      [t("promoter_kind"), (p) => t(`promoter_kind_${p.kind}`)],
      [t("share_code"), (p) => h("code", {}, p.code)],
      [t("level"), (p) => `${p.level_name} (${rate(p.rate_bp)})`],
      [t("customers"), (p) => h("span", { "data-figure": "customers" }, num(p.customers))],
      [t("net_commission"), (p) => h("span", { "data-figure": "commission" }, yuan(p.commission_fen))],
      [t("status"), (p) => (p.active ? badge(t("active"), "good") : badge(t("inactive")))],
      [t("created_at"), (p) => when(p.created_at)],
    ],
    (cursor) => api("GET", "/referral/promoters", { query: { level: level.value, cursor, size: 20 } }),
    { role: "promoters", rowAttrs: (p) => ({ "data-id": p.id }) },
  );
  level.addEventListener("change", () => paged.reload().catch(showError));
  main.append(
    pageHead(t("menu_referral"), h("button", { type: "button", class: "btn btn-primary", "data-action": "new-promoter", onClick: () => promoterDialog(rules) }, t("new_promoter"))),
    tabs(""),
    h("div", { class: "filters" }, level),
    paged.el,
  );
  await paged.reload();
}

async function promoterPage(main, id) {
  const [p, rulesOut] = await Promise.all([api("GET", `/referral/promoters/${id}`), api("GET", "/referral/rules")]);
  const rules = rulesOut.rules;
  const level = select("promoter_level", rules.levels.map((l) => [l.code, `${l.name} (${rate(l.rate_bp)})`]), p.level);
  const active = h("input", { type: "checkbox", name: "promoter_active", checked: p.active });
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "save" }, t("save"));
  const figures = h(
    "div",
    { class: "kpis" },
    h("div", { class: "kpi" }, h("span", { class: "kpi-label" }, t("share_code")), h("span", { class: "kpi-value", "data-role": "share-code" }, p.code)),
    h("div", { class: "kpi" }, h("span", { class: "kpi-label" }, t("customers")), h("span", { class: "kpi-value", "data-role": "customers" }, num(p.customers))),
    h("div", { class: "kpi kpi-good" }, h("span", { class: "kpi-label" }, t("net_commission")), h("span", { class: "kpi-value", "data-role": "net-commission" }, yuan(p.commission_fen))),
  );
  const form = h(
    "form",
    {
      class: "card form",
      "data-form": "promoter-edit",
      onSubmit: (e) => {
        e.preventDefault();
        busy(submit, async () => {
          await api("PATCH", `/referral/promoters/${id}`, { body: { level: level.value, active: active.checked } });
          toast(t("saved"));
          location.reload();
        });
      },
    },
    h("h2", {}, t("promoter_settings")),
    h("div", { class: "grid-3" }, field(t("level"), level), h("label", { class: "check" }, active, t("promoter_active_label"))),
    h("p", { class: "muted small" }, t("promoter_inactive_hint")),
    h("div", { class: "actions" }, submit),
  );
  const customers = pagedTable(
    [
      [t("customer"), (c) => `#${c.customer_id}`],
      [t("nickname"), (c) => c.nickname || "—"],
      [t("bound_via"), (c) => t(`bind_${c.source}`)],
      [t("bound_at"), (c) => when(c.bound_at)],
      [t("commission"), (c) => yuan(c.commission_fen)],
    ],
    (cursor) => api("GET", `/referral/promoters/${id}/customers`, { query: { cursor, size: 20 } }),
    { role: "customers", rowAttrs: (c) => ({ "data-customer": c.customer_id }) },
  );
  const ledger = pagedTable(ledgerColumns({ [p.id]: p.name || `#${p.id}` }), (cursor) => api("GET", "/referral/commissions", { query: { promoter_id: id, cursor, size: 50 } }), {
    role: "ledger",
    rowAttrs: (c) => ({ "data-entry": c.id }),
  });
  const who = p.kind === "member" ? t("member_n", { id: p.member_id }) : t("staff_n", { id: p.staff_id });
  main.append(
    pageHead(`${p.name || `#${p.id}`} · ${who}`, h("a", { class: "btn", href: "#/referral" }, t("back"))),
    figures,
    form,
    h("section", { class: "card" }, h("h2", {}, t("customers")), customers.el),
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, t("commission_ledger"))), exportBar(id), ledger.el),
  );
  await Promise.all([customers.reload(), ledger.reload()]);
}

// --- ledger -------------------------------------------------------------------------

async function commissionsPage(main) {
  const promoter = input("promoter_id", { type: "number", min: "1", placeholder: t("promoter_id_filter") });
  const ledger = pagedTable(ledgerColumns(null), (cursor) => api("GET", "/referral/commissions", { query: { promoter_id: promoter.value, cursor, size: 50 } }), {
    role: "ledger",
    rowAttrs: (c) => ({ "data-entry": c.id }),
  });
  promoter.addEventListener("change", () => ledger.reload().catch(showError));
  main.append(pageHead(t("menu_referral")), tabs("commissions"), h("p", { class: "muted" }, t("ledger_help")), h("div", { class: "filters" }, promoter), exportBar(() => promoter.value.trim()), ledger.el);
  await ledger.reload();
}

// --- levels and rates -----------------------------------------------------------------

async function levelsPage(main) {
  const out = await api("GET", "/referral/rules");
  const editable = isAdmin();
  const rows = [];
  const body = h("tbody", {});
  const memberLevel = select("member_level", [], "");
  const staffLevel = select("staff_level", [], "");
  const refreshDefaults = () => {
    const codes = rows.map((r) => r.code.value.trim()).filter(Boolean);
    for (const [el, wanted] of [[memberLevel, memberLevel.value || out.rules.member_level], [staffLevel, staffLevel.value || out.rules.staff_level]]) {
      clear(el).append(...codes.map((c) => h("option", { value: c, selected: c === wanted }, c)));
    }
  };
  const addRow = (level) => {
    const row = {
      code: input("level_code", { value: level.code, pattern: "[a-z0-9_]+", maxlength: "32", required: true, disabled: !editable }),
      name: input("level_name", { value: level.name, maxlength: "32", required: true, disabled: !editable }),
      rate: input("level_rate", { value: level.rate_bp === undefined ? "" : fenToText(level.rate_bp), inputmode: "decimal", required: true, disabled: !editable }),
    };
    row.el = h(
      "tr",
      { "data-level": level.code || "new" },
      h("td", {}, row.code),
      h("td", {}, row.name),
      h("td", { class: "rate-cell" }, row.rate, " %"),
      h(
        "td",
        {},
        editable
          ? h(
              "button",
              {
                type: "button",
                class: "btn-icon",
                "aria-label": t("remove"),
                onClick: () => {
                  rows.splice(rows.indexOf(row), 1);
                  row.el.remove();
                  refreshDefaults();
                },
              },
              "×",
            )
          : "",
      ),
    );
    row.code.addEventListener("change", refreshDefaults);
    rows.push(row);
    body.append(row.el);
  };
  for (const level of out.rules.levels) addRow(level);
  refreshDefaults();
  memberLevel.disabled = !editable;
  staffLevel.disabled = !editable;
  const save = h("button", { type: "submit", class: "btn btn-primary", "data-action": "save" }, t("save"));
  const form = h(
    "form",
    {
      class: "card form",
      "data-form": "referral-rules",
      onSubmit: (e) => {
        e.preventDefault();
        busy(save, async () => {
          const levels = rows.map((r) => {
            const bp = toFen(r.rate.value);
            if (bp === null) throw new Error(t("rate_invalid", { code: r.code.value }));
            return { code: r.code.value.trim(), name: r.name.value.trim(), rate_bp: bp };
          });
          const rules = { levels, member_level: memberLevel.value, staff_level: staffLevel.value };
          await api("PUT", "/referral/rules", { body: { rules, base_version: out.version } });
          toast(t("saved"));
          location.reload();
        });
      },
    },
    h("p", {}, t("levels_help")),
    h("p", { class: "muted small", "data-role": "rules-version" }, t("rules_version", { v: out.version, at: when(out.updated_at) })),
    h("div", { class: "table-wrap" }, h("table", { class: "table table-edit" }, h("thead", {}, h("tr", {}, h("th", {}, t("level_code")), h("th", {}, t("level_name")), h("th", {}, t("commission_rate")), h("th", {}, ""))), body)),
    editable ? h("button", { type: "button", class: "btn btn-small", "data-action": "add-level", onClick: () => (addRow({ code: "", name: "" }), refreshDefaults()) }, t("add_level")) : null,
    h("div", { class: "grid-2 spaced" }, field(t("member_level_default"), memberLevel), field(t("staff_level_default"), staffLevel)),
    editable ? h("div", { class: "actions" }, save) : h("p", { class: "notice", "data-role": "read-only" }, t("levels_admin_only")),
  );
  main.append(pageHead(t("menu_referral")), tabs("levels"), form);
}

export function render(main, params) {
  const [first, second] = params;
  if (first === "promoter" && second) return promoterPage(main, Number(second));
  if (first === "commissions") return commissionsPage(main);
  if (first === "levels") return levelsPage(main);
  return promotersPage(main);
}
