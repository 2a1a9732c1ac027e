// Dashboard: the health figures ops watch, drawn as inline SVG charts.
import { api } from "../api.js";
import { area, bars, barsWithRate, rateRows } from "../charts.js";
import { h, clear, num, pct, yuan, when, pageHead, poll, select, showError } from "../dom.js";
import { t } from "../i18n.js";

function card(title, chart, note, name) {
  return h("section", { class: "card chart-card", "data-card": name }, h("h2", {}, title), chart, note ? h("p", { class: "muted small" }, note) : null);
}

function kpi(label, value, note, state = "", name = "") {
  return h("div", { class: `kpi ${state ? `kpi-${state}` : ""}`, "data-kpi": name }, h("span", { class: "kpi-label" }, label), h("strong", { class: "kpi-value" }, value), note ? h("small", {}, note) : null);
}

function bandState(rate, [low, high]) {
  if (rate === null || rate === undefined) return "";
  if (rate < low) return "warn";
  if (rate > high) return "bad";
  return "good";
}

function draw(box, d) {
  const [low, high] = d.consumption_band;
  const months = d.months.map((m) => m.slice(2));
  const rate = d.totals.consumption_rate;
  const state = bandState(rate, d.consumption_band);
  const sv = d.stored_value;
  clear(box).append(
    h(
      "div",
      { class: "kpis" },
      kpi(t("kpi_consumption"), pct(rate), t(`band_${state || "none"}`, { low: pct(low, 0), high: pct(high, 0) }), state, "consumption"),
      kpi(t("kpi_binding"), pct(d.totals.binding_rate), `${num(d.totals.orders_bound)} / ${num(d.totals.orders_imported)}`, "", "binding"),
      kpi(t("kpi_members"), num(d.totals.members), "", "", "members"),
      kpi(t("kpi_coupons"), pct(d.coupons.rate), `${num(d.coupons.used)} / ${num(d.coupons.issued)}`, "", "coupons"),
      kpi(t("kpi_stored_value"), sv.available ? yuan(sv.outstanding_fen) : t("not_enabled"), sv.available ? t("wallets_with_balance", { n: num(sv.wallets_with_balance) }) : "", "", "stored-value"),
    ),
    h(
      "div",
      { class: "chart-grid" },
      card(
        t("chart_points"),
        barsWithRate({
          name: "points",
          label: t("chart_points"),
          labels: months,
          bars: [
            { name: t("issued"), values: d.points.map((p) => p.issued), cls: "bar-a" },
            { name: t("spent"), values: d.points.map((p) => p.spent), cls: "bar-b" },
          ],
          rate: { name: t("consumption_rate"), values: d.points.map((p) => p.consumption_rate) },
          band: [low, high],
          bandLabel: t("band_label", { low: pct(low, 0), high: pct(high, 0) }),
        }),
        t("chart_points_note"),
        "points",
      ),
      card(
        t("chart_binding"),
        bars({
          name: "binding",
          label: t("chart_binding"),
          labels: months,
          values: d.binding.map((b) => b.rate),
          max: 1,
          format: (v) => `${Math.round(v * 100)}%`,
          marks: [
            { value: 0.5, label: t("good") },
            { value: 0.8, label: t("excellent") },
          ],
          valueLabel: (v, i) => `${pct(v)} (${d.binding[i].bound}/${d.binding[i].imported})`,
        }),
        t("chart_binding_note"),
        "binding",
      ),
      card(
        t("chart_signups"),
        bars({ name: "signups", label: t("chart_signups"), labels: months, values: d.signups.map((m) => m.members), cls: "bar-c", integer: true }),
        null,
        "signups",
      ),
      card(
        t("chart_repurchase"),
        bars({
          name: "repurchase",
          label: t("chart_repurchase"),
          labels: d.repurchase.map((q) => q.quarter),
          values: d.repurchase.map((q) => q.rate),
          max: 1,
          cls: "bar-d",
          format: (v) => `${Math.round(v * 100)}%`,
          valueLabel: (v, i) => `${pct(v)} (${d.repurchase[i].repeat_buyers}/${d.repurchase[i].buyers})`,
        }),
        t("chart_repurchase_note"),
        "repurchase",
      ),
      card(
        t("chart_sell_through"),
        rateRows({
          name: "sell-through",
          label: t("chart_sell_through"),
          rows: d.seckill.map((x) => ({ label: x.name, value: x.rate, note: `${x.sold}/${x.stock}` })),
        }),
        t("chart_sell_through_note"),
        "sell-through",
      ),
      card(
        t("chart_coupons"),
        rateRows({
          name: "coupons",
          label: t("chart_coupons"),
          rows: d.coupons.templates.map((x) => ({ label: x.name, value: x.rate, note: `${x.used}/${x.issued}` })),
        }),
        t("chart_coupons_note", { rate: pct(d.coupons.rate) }),
        "coupons",
      ),
      card(
        t("chart_stored_value"),
        area({
          name: "stored-value",
          label: t("chart_stored_value"),
          labels: months,
          values: sv.available ? sv.months.map((m) => m.outstanding_fen / 100) : [],
        }),
        sv.available ? t("stored_value_note", { principal: yuan(sv.principal_fen), bonus: yuan(sv.bonus_fen) }) : t("not_enabled"),
        "stored-value",
      ),
    ),
    h("p", { class: "muted small", "data-role": "generated-at" }, t("generated_at", { at: when(d.generated_at) })),
  );
}

export async function render(main) {
  const range = select(
    "months",
    [6, 12, 24].map((n) => [n, t("last_n_months", { n })]),
    12,
  );
  const box = h("div", { class: "dashboard", "data-role": "dashboard" }, h("p", { class: "muted" }, t("loading")));
  const load = async () => {
    const d = await api("GET", "/dashboard", { query: { months: range.value } });
    draw(box, d);
  };
  range.addEventListener("change", () => load().catch(showError));
  main.append(pageHead(t("menu_dashboard"), range), box);
  try {
    await load();
  } catch (err) {
    clear(box).append(h("div", { class: "notice" }, err.message));
  }
  return poll(box, load, 60_000);
}
