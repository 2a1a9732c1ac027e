// Flash sales: sessions with items and their eligibility rules (fair sales); live stock
// during the sale (polled); winners; who booked the sale.
import { api } from "../api.js";
import { h, clear, busy, field, input, modal, table, badge, pageHead, yuan, toFen, num, when, toast, showError, localToIso, isoToLocal, poll, confirmDialog } from "../dom.js";
import { t } from "../i18n.js";
import "../i18n_fair.js";
import { pagedTable, facts, memberLink, memberWho } from "../ops_kit.js";
import { pictureField } from "../upload.js";

const STATE_KIND = { live: "good", upcoming: "warn", ended: "", closed: "" };
const LIVE_MS = 2000;

function itemRow() {
  const row = {
    title: input("item_title", { required: true, maxlength: "100", placeholder: t("item_title") }),
    points: input("item_points", { type: "number", min: "0", step: "1", value: "0" }),
    cash: input("item_cash", { inputmode: "decimal", value: "0" }),
    stock: input("item_stock", { type: "number", min: "0", step: "1", required: true, value: "100" }),
    limit: input("item_limit", { type: "number", min: "1", step: "1", value: "1" }),
    picture: pictureField([], { max: 1, name: "image" }),
  };
  row.el = h(
    "fieldset",
    { class: "item-row" },
    h("div", { class: "grid-5" }, field(t("item_title"), row.title), field(t("points_price"), row.points), field(t("cash_price_yuan"), row.cash), field(t("stock"), row.stock), field(t("per_member_limit"), row.limit)),
    field(t("picture"), row.picture.el),
  );
  row.read = () => {
    const cash = toFen(row.cash.value || "0");
    if (cash === null) throw new Error(t("price_invalid"));
    if (row.picture.pending()) throw new Error(t("wait_uploads"));
    return {
      title: row.title.value.trim(),
      points_price: Number(row.points.value || 0),
      cash_price_fen: cash,
      stock: Number(row.stock.value),
      per_member_limit: Number(row.limit.value || 1),
      image_url: row.picture.urls()[0] || "",
    };
  };
  return row;
}

/** The eligibility controls of a session (SaleRules), filled from `rules`: {el, read()}. */
function rulesFields(rules) {
  const check = (name, label) => {
    const box = input(name, { type: "checkbox", checked: Boolean(rules[name]) });
    return { box, el: h("label", { class: "check" }, box, label) };
  };
  const phone = check("require_phone", t("fair_require_phone"));
  const flagged = check("exclude_flagged", t("fair_exclude_flagged"));
  const booking = check("require_booking", t("fair_require_booking"));
  const joined = input("joined_before", { type: "datetime-local", value: isoToLocal(rules.joined_before) });
  const level = input("min_level", { type: "number", min: "0", max: "100", step: "1", required: true, value: String(rules.min_level ?? 0) });
  const el = h(
    "div",
    { "data-role": "rules-fields" },
    h("h3", {}, t("fair_rules")),
    h("p", { class: "muted small" }, t("fair_rules_hint")),
    h("div", { class: "checks" }, phone.el, flagged.el, booking.el),
    h("p", { class: "muted small" }, t("fair_require_booking_hint")),
    h("div", { class: "grid-3" }, field(t("fair_joined_before"), joined, t("fair_joined_before_hint")), field(t("fair_min_level"), level, t("fair_min_level_hint"))),
  );
  const read = () => {
    const minLevel = Number(level.value || 0);
    if (!Number.isInteger(minLevel) || minLevel < 0 || minLevel > 100) throw new Error(t("fair_min_level_invalid"));
    return {
      require_phone: phone.box.checked,
      joined_before: joined.value ? localToIso(joined.value) : null,
      min_level: minLevel,
      exclude_flagged: flagged.box.checked,
      require_booking: booking.box.checked,
    };
  };
  return { el, read };
}

/** A session's rules, short (the sessions list). */
function rulesSummary(rules) {
  const parts = [
    rules.require_phone ? t("fair_phone_short") : null,
    rules.joined_before ? t("fair_joined_before_short", { date: when(rules.joined_before).slice(0, 10) }) : null,
    rules.min_level ? t("fair_level_at_least", { n: rules.min_level }) : null,
    rules.exclude_flagged ? t("fair_flagged_short") : null,
    rules.require_booking ? t("fair_booking_short") : null,
  ].filter(Boolean);
  return parts.length ? parts.map((p) => [badge(p), " "]) : t("fair_any");
}

/** A session's rules in full (its live page). */
function rulesFacts(rules) {
  const yesNo = (on) => (on ? badge(t("yes"), "warn") : t("no"));
  return facts(
    [
      [t("fair_require_phone"), yesNo(rules.require_phone), { "data-rule": "require_phone" }],
      [t("fair_joined_before"), rules.joined_before ? when(rules.joined_before) : t("fair_any"), { "data-rule": "joined_before" }],
      [t("fair_min_level"), rules.min_level ? t("fair_level_at_least", { n: rules.min_level }) : t("fair_any"), { "data-rule": "min_level" }],
      [t("fair_exclude_flagged"), yesNo(rules.exclude_flagged), { "data-rule": "exclude_flagged" }],
      [t("fair_require_booking"), yesNo(rules.require_booking), { "data-rule": "require_booking" }],
    ],
    { "data-role": "rules" },
  );
}

function rulesEditor(s, done) {
  const rules = rulesFields(s.rules);
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "save-rules" }, t("save"));
  const m = modal(
    `${t("fair_edit_rules")} · ${s.name}`,
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "seckill-rules",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            const session = await api("PATCH", `/seckill/sessions/${s.id}`, { body: { rules: rules.read() } });
            toast(t("saved"));
            m.close();
            done(session);
          });
        },
      },
      s.state === "live" ? h("p", { class: "notice" }, t("fair_edit_rules_live")) : null,
      rules.el,
      h("div", { class: "actions" }, submit),
    ),
    { wide: true },
  );
}

const REMINDER = {
  due: () => badge(t("fair_reminder_due")),
  sending: () => badge(t("fair_reminder_sending"), "warn"),
  sent: () => badge(t("fair_reminder_sent"), "good"),
  no_grant: () => badge(t("fair_reminder_no_grant")),
  capped: () => badge(t("fair_reminder_capped"), "warn"),
  refused: () => badge(t("fair_reminder_refused"), "bad"),
  cancelled: () => badge(t("fair_reminder_cancelled")),
};

/** Who booked the session (cancelled too), paged as the API pages it. */
function bookings(sessionId) {
  const paged = pagedTable(
    [
      [t("member"), (b) => [memberLink(b.member_id), " ", memberWho(b.member_nickname, b.member_phone)]],
      [t("fair_booked_at"), (b) => when(b.created_at)],
      [t("fair_booking_state"), (b) => (b.cancelled_at ? [badge(t("fair_booking_cancelled")), " ", when(b.cancelled_at)] : badge(t("fair_booking_live"), "good"))],
      [t("fair_reminder"), (b) => (REMINDER[b.reminder] ? REMINDER[b.reminder]() : badge(b.reminder))],
      [t("fair_reminded_at"), (b) => when(b.reminded_at)],
    ],
    (cursor) => api("GET", `/seckill/sessions/${sessionId}/bookings`, { query: { cursor, size: 50 } }),
    { role: "bookings", rowAttrs: (b) => ({ "data-booking": b.id }), empty: t("fair_no_bookings") },
  );
  const refresh = h("button", { type: "button", class: "btn btn-small", "data-action": "refresh-bookings", onClick: (e) => busy(e.currentTarget, () => paged.reload()) }, t("fair_refresh"));
  const el = h("section", { class: "card spaced" }, h("div", { class: "card-head" }, h("h2", {}, t("fair_bookings")), refresh), h("p", { class: "muted small" }, t("fair_bookings_hint")), paged.el);
  return { el, reload: paged.reload };
}

function nextHour(hours = 1) {
  const d = new Date(Date.now() + hours * 3600_000);
  d.setMinutes(0, 0, 0);
  return isoToLocal(d.toISOString());
}

function creator(reload) {
  const name = input("name", { required: true, maxlength: "100", placeholder: t("session_name_placeholder") });
  const starts = input("starts_at", { type: "datetime-local", required: true, value: nextHour(1) });
  const ends = input("ends_at", { type: "datetime-local", required: true, value: nextHour(2) });
  // flags bite only in sales that turn flagged members away: on unless ops say otherwise
  const rules = rulesFields({ exclude_flagged: true });
  const rows = [itemRow()];
  const itemsBox = h("div", { class: "items-box" }, rows[0].el);
  const addItem = h(
    "button",
    {
      type: "button",
      class: "btn btn-small",
      "data-action": "add-item",
      onClick: () => {
        const row = itemRow();
        rows.push(row);
        itemsBox.append(row.el);
      },
    },
    t("add_item"),
  );
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "save" }, t("save"));
  const m = modal(
    t("new_session"),
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "seckill-session",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            const saleRules = rules.read();
            // nobody could book a sale already started, so nobody could buy it
            if (saleRules.require_booking && new Date(localToIso(starts.value)).getTime() <= Date.now()) throw new Error(t("fair_booking_needs_future_start"));
            const body = { name: name.value.trim(), starts_at: localToIso(starts.value), ends_at: localToIso(ends.value), rules: saleRules, items: rows.map((r) => r.read()) };
            const session = await api("POST", "/seckill/sessions", { body });
            toast(t("saved"));
            m.close();
            reload();
            location.hash = `#/seckill/${session.id}`;
          });
        },
      },
      h("div", { class: "grid-3" }, field(t("session_name"), name), field(t("starts_at"), starts, t("shanghai_time")), field(t("ends_at"), ends)),
      rules.el,
      h("h3", {}, t("items")),
      itemsBox,
      addItem,
      h("div", { class: "actions" }, submit),
    ),
    { wide: true },
  );
  name.focus();
}

async function winners(item) {
  const box = h("div", { class: "modal-body" }, t("loading"));
  const m = modal(t("winners_of", { name: item.title }), box, { wide: true });
  const load = async () => {
    const page = await api("GET", `/seckill/items/${item.id}/winners`, { query: { size: 100 } });
    clear(box).append(
      table(
        [
          [t("won_at"), (w) => when(w.won_at)],
          [t("member"), (w) => `#${w.member_id}`],
          [t("reservation"), (w) => h("code", {}, w.reservation_id)],
          [t("status"), (w) => badge(w.status)],
          [t("points"), (w) => num(w.points_price)],
          [t("cash"), (w) => yuan(w.cash_price_fen)],
        ],
        page.items,
        { empty: t("no_winners") },
      ),
    );
  };
  await load();
  poll(box, load, LIVE_MS * 2);
  return m;
}

function sessionsTable(sessions) {
  return table(
    [
      [t("session_name"), (s) => h("a", { href: `#/seckill/${s.id}`, "data-session": s.id }, s.name)],
      [t("starts_at"), (s) => when(s.starts_at)],
      [t("ends_at"), (s) => when(s.ends_at)],
      [t("state"), (s) => badge(t(`state_${s.state}`), STATE_KIND[s.state])],
      [t("items"), (s) => num(s.items.length)],
      [t("stock_left"), (s) => `${num(s.items.reduce((a, i) => a + i.stock_left, 0))} / ${num(s.items.reduce((a, i) => a + i.stock, 0))}`],
      [t("fair_rules"), (s) => rulesSummary(s.rules)],
    ],
    sessions,
    { rowAttrs: (s) => ({ "data-id": s.id }) },
  );
}

async function detail(main, id) {
  const head = h("div", {});
  const rules = h("section", { class: "card" });
  const body = h("div", { "data-role": "live" });
  const booked = bookings(id);
  main.append(h("p", {}, h("a", { href: "#/seckill" }, `← ${t("back")}`)), head, rules, body, booked.el);
  let shownState = null;
  const draw = (s) => {
    shownState = s.state;
    drawHead(s);
    drawRules(s);
    drawBody(s);
  };
  const drawRules = (s) => {
    const edit =
      s.state === "closed"
        ? null
        : h("button", { type: "button", class: "btn btn-small", "data-action": "edit-rules", onClick: () => rulesEditor(s, draw) }, t("fair_edit_rules"));
    clear(rules).append(h("div", { class: "card-head" }, h("h2", {}, t("fair_rules")), edit), rulesFacts(s.rules));
  };
  const drawHead = (s) => {
    clear(head).append(
      pageHead(
        s.name,
        h("button", { type: "button", class: "btn", "data-action": "warm", onClick: (e) => busy(e.currentTarget, async () => draw(await api("POST", `/seckill/sessions/${s.id}/warm`))) }, t("warm_now")),
        h(
          "button",
          {
            type: "button",
            class: "btn",
            "data-action": "reconcile",
            onClick: (e) =>
              busy(e.currentTarget, async () => {
                const checks = await api("GET", `/seckill/sessions/${s.id}/reconcile`);
                modal(
                  t("reconcile"),
                  h(
                    "div",
                    { class: "modal-body" },
                    table(
                      [
                        [t("item"), (c) => c.title],
                        [t("initial"), (c) => num(c.initial)],
                        [t("live_stock"), (c) => (c.redis_stock === null ? "—" : num(c.redis_stock))],
                        [t("held"), (c) => num(c.held)],
                        [t("backlog"), (c) => num(c.backlog)],
                        [t("result"), (c) => (c.ok ? badge("OK", "good") : badge(c.problems.join("; "), "bad"))],
                      ],
                      checks,
                    ),
                  ),
                  { wide: true },
                );
              }),
          },
          t("reconcile"),
        ),
        s.state === "closed" || s.state === "ended"
          ? null
          : h(
              "button",
              {
                type: "button",
                class: "btn btn-danger",
                "data-action": "close",
                onClick: (e) =>
                  busy(e.currentTarget, async () => {
                    if (await confirmDialog(t("close_confirm"))) draw(await api("POST", `/seckill/sessions/${s.id}/close`));
                  }),
              },
              t("close_early"),
            ),
      ),
      h("p", { class: "muted" }, badge(t(`state_${s.state}`), STATE_KIND[s.state]), " ", `${when(s.starts_at)} → ${when(s.ends_at)}`, " · ", t("live_refresh", { s: LIVE_MS / 1000 })),
    );
  };
  const drawBody = (s) => {
    clear(body).append(
      table(
        [
          [t("picture"), (i) => (i.image_url ? h("img", { class: "thumb-sm", src: i.image_url, alt: "" }) : h("span", { class: "thumb-sm thumb-none" }))],
          [t("item"), (i) => i.title],
          [t("price"), (i) => [i.points_price ? `${num(i.points_price)} ${t("points")}` : null, i.cash_price_fen ? yuan(i.cash_price_fen) : null].filter(Boolean).join(" + ") || "0"],
          [t("stock"), (i) => num(i.stock)],
          [t("stock_left"), (i) => h("strong", { "data-live-stock": i.id }, num(i.stock_left))],
          [t("sold"), (i) => num(i.sold)],
          [t("held"), (i) => num(i.held)],
          [t("backlog"), (i) => num(i.backlog)],
          [t("warm"), (i) => (i.warm ? badge(t("yes"), "good") : badge(t("no")))],
          [t("per_member_limit"), (i) => num(i.per_member_limit)],
          ["", (i) => h("button", { type: "button", class: "btn btn-small", "data-action": "winners", onClick: () => winners(i).catch(showError) }, t("winners"))],
        ],
        s.items,
        { rowAttrs: (i) => ({ "data-item": i.id }) },
      ),
    );
  };
  draw(await api("GET", `/seckill/sessions/${id}`));
  await booked.reload();
  // the live figures refresh; the header (and its buttons) only when the state moves on
  return poll(
    body,
    async () => {
      const s = await api("GET", `/seckill/sessions/${id}`);
      if (s.state !== shownState) draw(s);
      else drawBody(s);
    },
    LIVE_MS,
  );
}

export async function render(main, params) {
  if (params[0]) return detail(main, Number(params[0]));
  const list = h("div", { "data-role": "list" });
  const reload = async () => {
    try {
      clear(list).append(sessionsTable(await api("GET", "/seckill/sessions")));
    } catch (err) {
      showError(err);
    }
  };
  main.append(pageHead(t("menu_seckill"), h("button", { type: "button", class: "btn btn-primary", "data-action": "new", onClick: () => creator(reload) }, t("new_session"))), list);
  await reload();
  return poll(list, reload, 5000);
}
