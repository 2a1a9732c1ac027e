// Audit log (#/audit, admin only): staff writes newest first with their action in words
// (audit_actions.js), filtered by action, staff, target and time, and what changed as a
// field-by-field table (before -> after) instead of the raw JSON the API keeps.
import { api } from "../api.js";
import { h, busy, input, select, table, pageHead, when, yuan, num, localToIso, showError } from "../dom.js";
import { t, lang } from "../i18n.js";
import { pagedTable } from "../ops_kit.js";
import { AUDIT_ACTIONS } from "../audit_actions.js";
import { ruleLabel } from "./rules.js";

/** An action code in the console's language; the code itself when it has no name yet. */
export function actionName(code) {
  const names = AUDIT_ACTIONS[code];
  return (names && names[lang()]) || code;
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** {a: {b: 1}, l: [{x: 1}], n: [1, 2]} -> {"a.b": 1, "l.0.x": 1, "n": [1, 2]} */
function flatten(value, prefix = "", out = {}) {
  if (isObject(value) && Object.keys(value).length) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (Array.isArray(value) && value.some((v) => isObject(v) || Array.isArray(v))) {
    value.forEach((v, i) => flatten(v, `${prefix}.${i}`, out));
  } else {
    out[prefix] = value;
  }
  return out;
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/;

function formatValue(path, value) {
  if (value === null) return h("span", { class: "muted" }, t("audit_null"));
  if (typeof value === "boolean") return value ? t("yes") : t("no");
  if (typeof value === "number") return /_fen$/.test(path) ? yuan(value) : num(value);
  if (Array.isArray(value)) return value.length ? value.map((v) => (isObject(v) ? JSON.stringify(v) : String(v))).join(", ") : "[]";
  if (isObject(value)) return "{}";
  if (typeof value === "string" && ISO.test(value)) return when(value);
  return String(value);
}

function fieldLabel(action, path) {
  if (!path) return t("audit_value");
  if (action === "points.rules.update") {
    const label = ruleLabel(path);
    if (label !== path) return label;
  }
  const last = path.split(".").pop();
  const key = `audit_field_${last}`;
  const known = t(key);
  if (known !== key) return path.includes(".") ? [h("code", {}, path.slice(0, path.lastIndexOf("."))), " · ", known] : known;
  return h("code", {}, path);
}

/** The entry's detail as {changes: [[path, before, after]], unchanged, facts: [[path, value]]}. */
export function describe(detail) {
  const d = isObject(detail) ? { ...detail } : { value: detail };
  let before;
  let after;
  if ("before" in d && "after" in d) {
    ({ before, after } = d);
    delete d.before;
    delete d.after;
  } else if (isObject(d.before)) {
    // e.g. before={level, active} and the new values beside it
    before = d.before;
    delete d.before;
    after = {};
    for (const k of Object.keys(before)) {
      if (k in d) {
        after[k] = d[k];
        delete d[k];
      }
    }
  }
  const changes = [];
  let unchanged = 0;
  if (before !== undefined || after !== undefined) {
    const fb = flatten(before);
    const fa = flatten(after);
    // a path gone from `after` was removed only where `after` gave that section whole
    const whole = isObject(after) ? new Set(Object.keys(after)) : null;
    const paths = Object.keys(fa);
    for (const p of Object.keys(fb)) {
      if (!(p in fa) && (!whole || whole.has(p.split(".")[0]))) paths.push(p);
    }
    for (const p of paths) {
      if (JSON.stringify(fb[p]) === JSON.stringify(fa[p])) unchanged += 1;
      else changes.push([p, p in fb ? { v: fb[p] } : null, p in fa ? { v: fa[p] } : null]);
    }
  }
  const facts = Object.entries(flatten(d)).filter(([p]) => p !== "");
  return { changes, unchanged, facts };
}

function detailCell(entry) {
  const { changes, unchanged, facts } = describe(entry.detail);
  const parts = [];
  if (changes.length) {
    parts.push(
      table(
        [
          [t("audit_field"), ([p]) => fieldLabel(entry.action, p)],
          [t("audit_before"), ([p, b]) => (b ? formatValue(p, b.v) : h("span", { class: "muted" }, t("audit_absent")))],
          [t("audit_after"), ([p, , a]) => (a ? h("strong", {}, formatValue(p, a.v)) : h("span", { class: "muted" }, t("audit_removed")))],
        ],
        changes,
        { rowAttrs: ([p]) => ({ "data-field": p }) },
      ),
    );
    parts[0].dataset.role = "diff";
  } else if (unchanged) {
    parts.push(h("p", { class: "muted small" }, t("audit_no_change")));
  }
  if (unchanged && changes.length) parts.push(h("p", { class: "muted small" }, t("audit_unchanged", { n: unchanged })));
  if (facts.length) {
    const list = table(
      [
        [t("audit_field"), ([p]) => fieldLabel(entry.action, p)],
        [t("audit_value"), ([p, v]) => formatValue(p, v)],
      ],
      facts,
      { rowAttrs: ([p]) => ({ "data-field": p }) },
    );
    list.dataset.role = "facts";
    parts.push(list);
  }
  if (!parts.length) return "—";
  const rows = changes.length + facts.length;
  const summary = changes.length ? t("audit_changes", { n: changes.length }) : t("audit_facts", { n: facts.length });
  return h("details", { class: "audit-detail", open: rows <= 6 }, h("summary", {}, summary), parts);
}

// targets that have a page of their own
const TARGET_PAGES = [
  [/^order:(\d+)$/, (id) => `#/orders/${id}`],
  [/^member:(\d+)$/, (id) => `#/members/${id}`],
];

function targetCell(target) {
  if (!target) return "—";
  for (const [pattern, href] of TARGET_PAGES) {
    const m = pattern.exec(target);
    if (m) return h("a", { href: href(m[1]) }, h("code", {}, target));
  }
  return h("code", {}, target);
}

/** #/audit or #/audit/<action code> (e.g. from the rules page: its history). */
export async function render(main, params = []) {
  const codes = Object.keys(AUDIT_ACTIONS).sort();
  const preset = params[0] && codes.includes(params[0]) ? params[0] : "";
  const action = select("audit_action", [["", t("audit_all_actions")], ...codes.map((c) => [c, actionName(c)])], preset);
  const staffNames = await api("GET", "/staff").catch(() => []);
  // typed, not only picked: entries outlive renamed and removed staff
  const staff = input("audit_staff", { maxlength: "64", list: "audit-staff-names", placeholder: t("audit_staff_hint"), "aria-label": t("staff") });
  const names = h("datalist", { id: "audit-staff-names" }, [...staffNames.map((s) => s.username), "system"].map((n) => h("option", { value: n })));
  const target = input("audit_target", { maxlength: "128", placeholder: t("audit_target_hint"), "aria-label": t("target") });
  const since = input("audit_since", { type: "datetime-local", "aria-label": t("audit_from") });
  const until = input("audit_until", { type: "datetime-local", "aria-label": t("audit_until") });
  const search = h("button", { type: "submit", class: "btn btn-primary", "data-action": "search" }, t("search"));
  const list = pagedTable(
    [
      [t("time"), (a) => when(a.created_at)],
      [t("staff"), (a) => (a.staff_username === "system" ? t("audit_system") : a.staff_username)],
      [t("action"), (a) => [h("span", { "data-role": "action-name" }, actionName(a.action)), h("br"), h("code", { class: "muted" }, a.action)]],
      [t("target"), (a) => targetCell(a.target)],
      [t("audit_what_changed"), detailCell],
    ],
    async (cursor) => {
      const query = {
        action: action.value,
        staff: staff.value.trim(),
        target: target.value.trim(),
        since: localToIso(since.value) || undefined,
        until: localToIso(until.value) || undefined,
        cursor,
        limit: 50,
      };
      const response = await api("GET", "/audit-log", { query, raw: true });
      return { items: await response.json(), next_cursor: response.headers.get("X-Next-Cursor") };
    },
    { role: "audit", rowAttrs: (a) => ({ "data-id": a.id, "data-code": a.action }) },
  );
  const form = h(
    "form",
    {
      class: "filters",
      "data-form": "audit-filters",
      onSubmit: (e) => {
        e.preventDefault();
        busy(search, () => list.reload());
      },
    },
    action,
    staff,
    names,
    target,
    h("span", { class: "muted" }, t("audit_from")),
    since,
    t("audit_until"),
    until,
    search,
  );
  for (const box of [action, staff, target, since, until]) box.addEventListener("change", () => list.reload().catch(showError));
  main.append(pageHead(t("menu_audit")), form, list.el);
  await list.reload();
}
