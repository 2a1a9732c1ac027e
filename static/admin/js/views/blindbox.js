// Blind boxes: series with prizes and weights; live stock (polled); the draw log.
import { api } from "../api.js";
import { h, clear, busy, field, input, modal, table, badge, pageHead, yuan, toFen, num, when, toast, showError, localToIso, poll } from "../dom.js";
import { t } from "../i18n.js";
import { pictureField } from "../upload.js";
import { stockDialog } from "./products.js";

const STATUS_KIND = { on_sale: "good", draft: "warn", off_sale: "" };
const LIVE_MS = 3000;

function prizeRow() {
  const row = {
    name: input("prize_name", { required: true, maxlength: "64" }),
    tier: input("prize_tier", { required: true, value: "common", pattern: "[a-z0-9_]+", maxlength: "16" }),
    weight: input("prize_weight", { type: "number", min: "0", step: "1", required: true, value: "100" }),
    stock: input("prize_stock", { type: "number", min: "0", step: "1", placeholder: t("unlimited") }),
    value: input("prize_value", { inputmode: "decimal", value: "0" }),
  };
  row.el = h("div", { class: "grid-5 prize-row" }, field(t("prize_name"), row.name), field(t("tier"), row.tier), field(t("weight"), row.weight), field(t("stock"), row.stock, t("blank_unlimited")), field(t("value_yuan"), row.value));
  row.read = () => {
    const value = toFen(row.value.value || "0");
    if (value === null) throw new Error(t("price_invalid"));
    return {
      name: row.name.value.trim(),
      tier: row.tier.value.trim(),
      weight: Number(row.weight.value),
      stock: row.stock.value === "" ? null : Number(row.stock.value),
      value_fen: value,
    };
  };
  return row;
}

function creator(reload) {
  const f = {
    name: input("name", { required: true, maxlength: "64" }),
    cost: input("points_cost", { type: "number", min: "1", step: "1", required: true }),
    starts: input("starts_at", { type: "datetime-local" }),
    ends: input("ends_at", { type: "datetime-local" }),
    cap: input("daily_draw_cap", { type: "number", min: "1", step: "1", placeholder: t("optional") }),
    minAge: input("min_age", { type: "number", min: "8", step: "1", placeholder: "8" }),
    gTier: input("guarantee_tier", { placeholder: "rare", pattern: "[a-z0-9_]*" }),
    gEvery: input("guarantee_every", { type: "number", min: "2", step: "1", placeholder: "10" }),
    description: h("textarea", { name: "description", rows: "2" }),
    rules: h("textarea", { name: "rules", rows: "2" }),
  };
  const cover = pictureField([], { max: 1, name: "cover_image" });
  const rows = [prizeRow()];
  const prizesBox = h("div", {}, rows[0].el);
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "save" }, t("save"));
  const m = modal(
    t("new_series"),
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "blind-box",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            if (cover.pending()) throw new Error(t("wait_uploads"));
            const body = {
              name: f.name.value.trim(),
              points_cost: Number(f.cost.value),
              cover_image: cover.urls()[0] || "",
              description: f.description.value,
              rules: f.rules.value,
              starts_at: localToIso(f.starts.value),
              ends_at: localToIso(f.ends.value),
              prizes: rows.map((r) => r.read()),
            };
            if (f.cap.value) body.daily_draw_cap = Number(f.cap.value);
            if (f.minAge.value) body.min_age = Number(f.minAge.value);
            if (f.gTier.value.trim()) {
              body.guarantee_tier = f.gTier.value.trim();
              body.guarantee_every = Number(f.gEvery.value || 10);
            }
            const series = await api("POST", "/blind-boxes", { body });
            toast(t("saved"));
            m.close();
            reload();
            location.hash = `#/blind-boxes/${series.id}`;
          });
        },
      },
      h("div", { class: "grid-3" }, field(t("series_name"), f.name), field(t("points_cost"), f.cost), field(t("daily_draw_cap"), f.cap), field(t("starts_at"), f.starts, t("shanghai_time")), field(t("ends_at"), f.ends), field(t("min_age"), f.minAge, t("min_age_hint")), field(t("guarantee_tier"), f.gTier), field(t("guarantee_every"), f.gEvery)),
      field(t("cover"), cover.el),
      h("div", { class: "grid-2" }, field(t("description"), f.description), field(t("rules_text"), f.rules)),
      h("h3", {}, t("prizes")),
      prizesBox,
      h(
        "button",
        {
          type: "button",
          class: "btn btn-small",
          onClick: () => {
            const row = prizeRow();
            rows.push(row);
            prizesBox.append(row.el);
          },
        },
        t("add_prize"),
      ),
      h("div", { class: "actions" }, submit),
    ),
    { wide: true },
  );
  f.name.focus();
}

function addPrize(series, after) {
  const row = prizeRow();
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, t("save"));
  const m = modal(
    t("add_prize"),
    h(
      "form",
      {
        class: "modal-body form",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            await api("POST", `/blind-boxes/${series.id}/prizes`, { body: row.read() });
            toast(t("saved"));
            m.close();
            after();
          });
        },
      },
      row.el,
      h("div", { class: "actions" }, submit),
    ),
    { wide: true },
  );
}

async function detail(main, id) {
  const head = h("div", {});
  const prizes = h("div", { "data-role": "prizes" });
  const draws = h("div", { "data-role": "draws" });
  main.append(h("p", {}, h("a", { href: "#/blind-boxes" }, `← ${t("back")}`)), head, h("h2", {}, t("prizes")), prizes, h("h2", {}, t("draw_log")), draws);
  let shown = null;
  const setStatus = (s, status) => async (e) =>
    busy(e.currentTarget, async () => {
      drawAll(await api("PATCH", `/blind-boxes/${s.id}`, { body: { status } }));
      toast(t("saved"));
    });
  const drawHead = (s) => {
    clear(head).append(
      pageHead(
        s.name,
        s.status !== "on_sale" ? h("button", { type: "button", class: "btn btn-primary", "data-action": "on-sale", onClick: (e) => setStatus(s, "on_sale")(e) }, t("open_sale")) : null,
        s.status === "on_sale" ? h("button", { type: "button", class: "btn btn-danger", "data-action": "off-sale", onClick: (e) => setStatus(s, "off_sale")(e) }, t("close_sale")) : null,
        h("button", { type: "button", class: "btn", onClick: () => addPrize(s, refresh) }, t("add_prize")),
        h(
          "button",
          {
            type: "button",
            class: "btn",
            onClick: (e) =>
              busy(e.currentTarget, async () => {
                const response = await api("GET", `/blind-boxes/${s.id}/draws.csv`, { raw: true });
                const url = URL.createObjectURL(await response.blob());
                const a = h("a", { href: url, download: `blindbox-${s.id}-draws.csv` });
                document.body.append(a);
                a.click();
                a.remove();
              }),
          },
          t("export_csv"),
        ),
      ),
      h(
        "p",
        { class: "muted" },
        badge(t(`status_${s.status}`), STATUS_KIND[s.status]),
        " ",
        t("cost_per_draw", { n: num(s.points_cost) }),
        s.guarantee_tier ? ` · ${t("guarantee", { tier: s.guarantee_tier, n: s.guarantee_every })}` : "",
        s.daily_draw_cap ? ` · ${t("daily_cap", { n: s.daily_draw_cap })}` : "",
        ` · ${t("draws_total", { n: num(s.draws) })}`,
      ),
    );
  };
  const drawPrizes = (s) => {
    const total = s.prizes.reduce((a, p) => a + (p.stock_left === 0 ? 0 : p.weight), 0);
    clear(prizes).append(
      table(
        [
          [t("prize_name"), (p) => p.name],
          [t("tier"), (p) => badge(p.tier)],
          [t("weight"), (p) => num(p.weight)],
          [t("probability"), (p) => (total && p.stock_left !== 0 ? `${((p.weight / total) * 100).toFixed(2)}%` : "0%")],
          [t("value"), (p) => yuan(p.value_fen)],
          [t("stock"), (p) => (p.stock === null ? t("unlimited") : num(p.stock))],
          [t("stock_left"), (p) => h("strong", { "data-live-stock": p.id }, p.stock_left === null ? "∞" : num(p.stock_left))],
          [t("drawn"), (p) => num(p.drawn)],
          [
            "",
            (p) =>
              p.stock === null
                ? ""
                : h(
                    "button",
                    {
                      type: "button",
                      class: "btn btn-small",
                      "data-action": "adjust-stock",
                      onClick: () => stockDialog(t("adjust_stock"), p.stock_left ?? p.stock, (delta, reason, key) => api("POST", `/blind-boxes/${s.id}/prizes/${p.id}/stock`, { body: { delta, reason }, key }), refresh),
                    },
                    t("adjust_stock"),
                  ),
          ],
        ],
        s.prizes,
        { rowAttrs: (p) => ({ "data-prize": p.id }) },
      ),
    );
  };
  const drawLog = (page) =>
    clear(draws).append(
      table(
        [
          [t("time"), (d) => when(d.created_at)],
          [t("seq"), (d) => num(d.seq)],
          [t("member"), (d) => `#${d.member_id}`],
          [t("prize_name"), (d) => d.prize_name],
          [t("tier"), (d) => badge(d.tier)],
          [t("guaranteed"), (d) => (d.guaranteed ? badge(t("yes"), "good") : "")],
          [t("random_value"), (d) => h("code", {}, String(d.random_value))],
          [t("pity"), (d) => `${d.pity_before} → ${d.pity_after}`],
          [t("points"), (d) => num(d.points_cost)],
          [t("fulfilment"), (d) => d.fulfilment_status],
        ],
        page.items,
        { empty: t("no_draws") },
      ),
    );
  const drawAll = (s) => {
    if (s.status !== shown) {
      shown = s.status;
      drawHead(s);
    }
    drawPrizes(s);
  };
  const refresh = async () => {
    const [s, log] = await Promise.all([api("GET", `/blind-boxes/${id}`), api("GET", `/blind-boxes/${id}/draws`, { query: { size: 50 } })]);
    drawAll(s);
    drawLog(log);
  };
  await refresh();
  return poll(prizes, refresh, LIVE_MS);
}

export async function render(main, params) {
  if (params[0]) return detail(main, Number(params[0]));
  const list = h("div", { "data-role": "list" });
  const reload = async () => {
    try {
      const rows = await api("GET", "/blind-boxes");
      clear(list).append(
        table(
          [
            [t("series_name"), (s) => h("a", { href: `#/blind-boxes/${s.id}` }, s.name)],
            [t("points_cost"), (s) => num(s.points_cost)],
            [t("status"), (s) => badge(t(`status_${s.status}`), STATUS_KIND[s.status])],
            [t("prizes"), (s) => num(s.prizes.length)],
            [t("draws"), (s) => num(s.draws)],
            [t("window"), (s) => (s.starts_at || s.ends_at ? `${when(s.starts_at)} → ${when(s.ends_at)}` : t("always"))],
          ],
          rows,
          { rowAttrs: (s) => ({ "data-id": s.id }) },
        ),
      );
    } catch (err) {
      showError(err);
    }
  };
  main.append(pageHead(t("menu_blind_boxes"), h("button", { type: "button", class: "btn btn-primary", "data-action": "new", onClick: () => creator(reload) }, t("new_series"))), list);
  await reload();
}
