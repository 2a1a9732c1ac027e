// Shared by the orders, members and stored-value pages: a cursor-paged table, a CSV
// download through the API (the token is a header, not a cookie), a term/value list.
import { api } from "./api.js";
import { h, clear, busy, table } from "./dom.js";
import { t } from "./i18n.js";
import "./i18n_ops.js";

/** A member's id, linking to the member's page. */
export const memberLink = (id) => h("a", { href: `#/members/${id}`, "data-member": id }, `#${id}`);

/** Who a member is, next to its id link: nickname and (masked) phone; nothing for an
 * account that no longer exists (the API sends neither). */
export function memberWho(nickname, phone) {
  const text = [nickname, phone].filter(Boolean).join(" · ");
  return text ? h("span", { class: "muted small", "data-role": "member-name" }, text) : null;
}

/** `load(cursor)` answers {items, next_cursor}. */
export function pagedTable(columns, load, { role, rowAttrs, empty } = {}) {
  const box = h("div", { "data-role": role });
  const more = h("button", { type: "button", class: "btn btn-small", "data-action": "more", hidden: true }, t("load_more"));
  let rows = [];
  let cursor = null;
  // a reload starts a generation: answers of an older one (other filters) arrive late
  // sometimes, and must not replace the newer list
  let generation = 0;
  const draw = () => clear(box).append(table(columns, rows, { rowAttrs, empty }), more);
  const fetchPage = async (reset) => {
    const mine = reset ? ++generation : generation;
    const page = await load(reset ? undefined : cursor);
    if (mine !== generation) return;
    rows = reset ? page.items : rows.concat(page.items);
    cursor = page.next_cursor;
    more.hidden = !cursor;
    draw();
  };
  more.addEventListener("click", () => busy(more, () => fetchPage(false)));
  return { el: box, reload: () => fetchPage(true) };
}

export async function downloadCsv(path, query, fallback) {
  const response = await api("GET", path, { query, raw: true });
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || fallback;
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** [[label, value, attrs?], ...] as a definition list. */
export function facts(pairs, attrs = {}) {
  return h(
    "dl",
    { class: "facts", ...attrs },
    pairs.map(([label, value, extra]) => [h("dt", {}, label), h("dd", extra || {}, value)]),
  );
}

export function tabs(base, current, items) {
  return h(
    "div",
    { class: "tabs", role: "tablist" },
    items.map(([path, label]) =>
      h(
        "button",
        { type: "button", role: "tab", "data-tab": path || "main", "aria-selected": String(path === current), onClick: () => (location.hash = `#/${base}${path ? `/${path}` : ""}`) },
        label,
      ),
    ),
  );
}
