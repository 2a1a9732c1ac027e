// Flash sales: sessions with items; live stock during the sale (polled); winners.
import { api } from "../api.js";
import { h, clear, busy, field, input, modal, table, badge, pageHead, yuan, toFen, num, when, toast, showError, localToIso, isoToLocal, poll, confirmDialog } from "../dom.js";
import { t } from "../i18n.js";
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

function nextHour(hours = 1) {
  const d = new Date(Date.now() + hours * 3600_000);
  d.setMinutes(0, 0, 0);
  return isoToLocal(d.toISOString());
}

function creator(reload) {
  const name = input("name", { required: true, maxlength: "100", placeholder: t("session_name_placeholder") });
  const starts = input("starts_at", { type: "datetime-local", required: true, value: nextHour(1) });
  const ends = input("ends_at", { type: "datetime-local", required: true, value: nextHour(2) });
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
            const body = { name: name.value.trim(), starts_at: localToIso(starts.value), ends_at: localToIso(ends.value), items: rows.map((r) => r.read()) };
            const session = await api("POST", "/seckill/sessions", { body });
            toast(t("saved"));
            m.close();
            reload();
            location.hash = `#/seckill/${session.id}`;
          });
        },
      },
      h("div", { class: "grid-3" }, field(t("session_name"), name), field(t("starts_at"), starts, t("shanghai_time")), field(t("ends_at"), ends)),
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
    ],
    sessions,
    { rowAttrs: (s) => ({ "data-id": s.id }) },
  );
}

async function detail(main, id) {
  const head = h("div", {});
  const body = h("div", { "data-role": "live" });
  main.append(h("p", {}, h("a", { href: "#/seckill" }, `← ${t("back")}`)), head, body);
  let shownState = null;
  const draw = (s) => {
    shownState = s.state;
    drawHead(s);
    drawBody(s);
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
