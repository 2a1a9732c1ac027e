// Points rules (#/rules, admin only) as a form: earning and order binding, sign-in streak
// rewards, levels (threshold, level price, member-day price, birthday points: the one
// place prices come from), member day, points as cash, shipping and expiry. Saving sends
// the whole document to PUT /rules (versioned and audited by the API); the API's field
// errors are shown next to their fields. Sections the form does not know (another
// domain's, added later) go back unchanged; "advanced" edits the JSON itself.
import { api } from "../api.js";
import { h, clear, busy, field, select, pageHead, when, toast, toFen, fenToText, showError } from "../dom.js";
import { t } from "../i18n.js";
import "../i18n_ops.js";

// rules paths -> label keys (levels.N.<field> and sign_in.daily_points.N are patterns)
const LABELS = {
  "earn.fen_per_point": "rule_fen_per_point",
  "earn.growth_from_paid": "rule_growth_from_paid",
  "sign_in.daily_points": "rule_daily_points",
  "sign_in.repeat": "rule_sign_in_repeat",
  "pricing.member_day_of_month": "rule_member_day_of_month",
  "pricing.member_day_policy": "rule_member_day_policy",
  "pricing.points_per_yuan": "rule_points_per_yuan",
  "pricing.points_max_share_percent": "rule_points_max_share",
  "pricing.free_shipping_over_fen": "rule_free_shipping_over",
  "pricing.express_fee_fen": "rule_express_fee",
  "pricing.same_city_fee_fen": "rule_same_city_fee",
  "pricing.pickup_fee_fen": "rule_pickup_fee",
  "expiry.mode": "rule_expiry_mode",
  "expiry.days": "rule_expiry_days_n",
};
const LEVEL_FIELDS = ["name", "threshold", "discount_percent", "member_day_percent", "birthday_points"];

/** A rules path ("levels.1.discount_percent") in words; the path itself when unknown. */
export function ruleLabel(path) {
  if (LABELS[path]) return t(LABELS[path]);
  let m = /^levels\.(\d+)\.(\w+)$/.exec(path);
  if (m && LEVEL_FIELDS.concat("level").includes(m[2])) return `${t("level")} ${m[1]} · ${t(`rule_level_${m[2]}`)}`;
  m = /^levels\.(\d+)$/.exec(path);
  if (m) return `${t("level")} ${m[1]}`;
  m = /^sign_in\.daily_points\.(\d+)$/.exec(path);
  if (m) return `${t("rule_daily_points")} · ${t("rule_day_n", { n: Number(m[1]) + 1 })}`;
  return path;
}

const clone = (value) => JSON.parse(JSON.stringify(value));

// --- one form ---------------------------------------------------------------------

class RulesForm {
  constructor(rules) {
    this.rules = clone(rules);
    this.inputs = new Map(); // path -> {box, error, read}
    this.boxes = new Map(); // section paths -> error box ("levels", "sign_in.daily_points", "")
    this.dayCount = 0;
    this.levels = [];
  }

  error(path) {
    return h("small", { class: "field-error", "data-error-for": path, role: "alert" });
  }

  /** A whole number; `optional` lets it be left empty (null). */
  intInput(path, value, { optional = false, attrs = {} } = {}) {
    const box = h("input", { type: "number", step: "1", inputmode: "numeric", name: path, "data-path": path, value: value ?? "", ...attrs });
    const error = this.error(path);
    box.addEventListener("input", () => this.clearOne(path));
    this.inputs.set(path, {
      box,
      error,
      read: () => {
        const text = box.value.trim();
        if (!text) {
          if (optional) return null;
          throw t("rule_required");
        }
        if (!/^-?\d+$/.test(text)) throw t("rule_whole_number");
        return Number(text);
      },
    });
    return { box, error };
  }

  /** An amount in yuan, stored as fen. */
  yuanInput(path, fen) {
    const box = h("input", { inputmode: "decimal", name: path, "data-path": path, value: fenToText(fen) });
    const error = this.error(path);
    box.addEventListener("input", () => this.clearOne(path));
    this.inputs.set(path, {
      box,
      error,
      read: () => {
        const value = toFen(box.value);
        if (value === null) throw t("amount_invalid");
        return value;
      },
    });
    return { box, error };
  }

  checkbox(path, checked) {
    const box = h("input", { type: "checkbox", name: path, "data-path": path, checked });
    this.inputs.set(path, { box, error: this.error(path), read: () => box.checked });
    return box;
  }

  choice(path, options, value) {
    const box = select(path.replace(/\./g, "_"), options, value);
    box.dataset.path = path;
    const error = this.error(path);
    this.inputs.set(path, { box, error, read: () => box.value });
    return { box, error };
  }

  labelled(path, control, hint) {
    const el = field(t(LABELS[path]), control.box, hint);
    el.append(control.error);
    return el;
  }

  sectionBox(path) {
    const box = h("p", { class: "form-error section-error", "data-error-for": path || "rules", role: "alert" });
    this.boxes.set(path, box);
    return box;
  }

  // --- sections -------------------------------------------------------------------

  earnSection() {
    const { earn } = this.rules;
    return h(
      "section",
      { class: "card", "data-section": "earn" },
      h("h2", {}, t("rules_earn")),
      h("p", { class: "muted small" }, t("rules_earn_help")),
      h("div", { class: "grid-3" }, this.labelled("earn.fen_per_point", this.yuanInput("earn.fen_per_point", earn.fen_per_point), t("rule_fen_per_point_hint"))),
      h("label", { class: "check" }, this.checkbox("earn.growth_from_paid", earn.growth_from_paid), t("rule_growth_from_paid")),
    );
  }

  signInSection() {
    const list = h("div", { class: "rule-days", "data-role": "sign-in-days" });
    const sectionError = this.sectionBox("sign_in.daily_points");
    let values = this.rules.sign_in.daily_points.map(String);
    const path = (i) => `sign_in.daily_points.${i}`;
    // keeps what was typed when days are added or removed
    const keep = () => (values = values.map((_, i) => this.inputs.get(path(i)).box.value));
    const draw = () => {
      for (const key of [...this.inputs.keys()]) if (key.startsWith("sign_in.daily_points.")) this.inputs.delete(key);
      const days = values.map((v, i) => this.intInput(path(i), v, { attrs: { min: "0" } }));
      this.dayCount = days.length;
      clear(list).append(...days.map((d, i) => h("label", { class: "field rule-day" }, h("span", { class: "field-label" }, t("rule_day_n", { n: i + 1 })), d.box, d.error)));
    };
    draw();
    const add = h("button", { type: "button", class: "btn btn-small", "data-action": "add-day" }, t("rule_add_day"));
    add.addEventListener("click", () => {
      keep();
      values.push(values[values.length - 1] || "5");
      draw();
    });
    const remove = h("button", { type: "button", class: "btn btn-small", "data-action": "remove-day" }, t("rule_remove_day"));
    remove.addEventListener("click", () => {
      if (values.length <= 1) return;
      keep();
      values.pop();
      draw();
    });
    return h(
      "section",
      { class: "card", "data-section": "sign-in" },
      h("h2", {}, t("rules_sign_in")),
      h("p", { class: "muted small" }, t("rules_sign_in_help")),
      list,
      sectionError,
      h("div", { class: "actions" }, add, remove),
      h("label", { class: "check" }, this.checkbox("sign_in.repeat", this.rules.sign_in.repeat), t("rule_sign_in_repeat")),
    );
  }

  levelsSection() {
    const body = h("tbody", {});
    const sectionError = this.sectionBox("levels");
    const cell = (control) => h("td", {}, control.box, control.error);
    const row = (lv, i) => {
      const name = h("input", { name: `levels.${i}.name`, "data-path": `levels.${i}.name`, value: lv.name, maxlength: "32" });
      const nameError = this.error(`levels.${i}.name`);
      name.addEventListener("input", () => this.clearOne(`levels.${i}.name`));
      this.inputs.set(`levels.${i}.name`, {
        box: name,
        error: nameError,
        read: () => {
          if (!name.value.trim()) throw t("rule_required");
          return name.value.trim();
        },
      });
      const threshold = this.intInput(`levels.${i}.threshold`, lv.threshold, { attrs: { min: "0" } });
      if (i === 0) threshold.box.readOnly = true; // level 0 is everyone: threshold 0
      return h(
        "tr",
        { "data-level": i },
        h("td", {}, h("strong", {}, `Lv${i}`)),
        h("td", {}, name, nameError),
        cell(threshold),
        cell(this.intInput(`levels.${i}.discount_percent`, lv.discount_percent, { attrs: { min: "1", max: "100" } })),
        cell(this.intInput(`levels.${i}.member_day_percent`, lv.member_day_percent, { optional: true, attrs: { min: "1", max: "100", placeholder: t("rule_same_as_level") } })),
        cell(this.intInput(`levels.${i}.birthday_points`, lv.birthday_points ?? 0, { attrs: { min: "0" } })),
      );
    };
    const draw = () => {
      for (const key of [...this.inputs.keys()]) if (key.startsWith("levels.")) this.inputs.delete(key);
      clear(body).append(...this.levels.map(row));
    };
    this.levels = this.rules.levels.map((lv) => ({ ...lv }));
    draw();
    // keeps what was typed when rows are added or removed
    const keep = () => {
      this.levels = this.levels.map((lv, i) => {
        const value = (f) => (this.inputs.get(`levels.${i}.${f}`) || {}).box.value;
        return { ...lv, name: value("name"), threshold: value("threshold"), discount_percent: value("discount_percent"), member_day_percent: value("member_day_percent"), birthday_points: value("birthday_points") };
      });
    };
    const add = h("button", { type: "button", class: "btn btn-small", "data-action": "add-level" }, t("rule_add_level"));
    add.addEventListener("click", () => {
      keep();
      const last = this.levels[this.levels.length - 1];
      this.levels.push({ level: this.levels.length, name: "", threshold: "", discount_percent: last.discount_percent, member_day_percent: last.member_day_percent, birthday_points: last.birthday_points });
      draw();
    });
    const remove = h("button", { type: "button", class: "btn btn-small", "data-action": "remove-level" }, t("rule_remove_level"));
    remove.addEventListener("click", () => {
      if (this.levels.length <= 1) return;
      keep();
      this.levels.pop();
      draw();
    });
    const head = ["level", "rule_level_name", "rule_level_threshold", "rule_level_discount_percent", "rule_level_member_day_percent", "rule_level_birthday_points"];
    return h(
      "section",
      { class: "card", "data-section": "levels" },
      h("h2", {}, t("rules_levels")),
      h("p", { class: "muted small" }, t("rules_levels_help")),
      h("div", { class: "table-wrap" }, h("table", { class: "table table-edit", "data-role": "levels" }, h("thead", {}, h("tr", {}, head.map((k) => h("th", {}, t(k))))), body)),
      sectionError,
      h("div", { class: "actions spaced" }, add, remove),
    );
  }

  pricingSection() {
    const p = this.rules.pricing;
    const policies = ["member_day", "better", "both"].map((v) => [v, t(`rule_policy_${v}`)]);
    return h(
      "section",
      { class: "card", "data-section": "pricing" },
      h("h2", {}, t("rules_member_day")),
      h("p", { class: "muted small" }, t("rules_member_day_help")),
      h(
        "div",
        { class: "grid-3" },
        this.labelled("pricing.member_day_of_month", this.intInput("pricing.member_day_of_month", p.member_day_of_month, { attrs: { min: "1", max: "31" } }), t("rule_member_day_of_month_hint")),
        this.labelled("pricing.member_day_policy", this.choice("pricing.member_day_policy", policies, p.member_day_policy)),
      ),
      h("h3", {}, t("rules_points_cash")),
      h(
        "div",
        { class: "grid-3" },
        this.labelled("pricing.points_per_yuan", this.intInput("pricing.points_per_yuan", p.points_per_yuan, { attrs: { min: "1" } }), t("rule_points_per_yuan_hint")),
        this.labelled("pricing.points_max_share_percent", this.intInput("pricing.points_max_share_percent", p.points_max_share_percent, { attrs: { min: "0", max: "100" } }), t("rule_points_max_share_hint")),
      ),
      h("h3", {}, t("rules_shipping")),
      h(
        "div",
        { class: "grid-3" },
        this.labelled("pricing.free_shipping_over_fen", this.yuanInput("pricing.free_shipping_over_fen", p.free_shipping_over_fen), t("rule_free_shipping_over_hint")),
        this.labelled("pricing.express_fee_fen", this.yuanInput("pricing.express_fee_fen", p.express_fee_fen)),
        this.labelled("pricing.same_city_fee_fen", this.yuanInput("pricing.same_city_fee_fen", p.same_city_fee_fen)),
        this.labelled("pricing.pickup_fee_fen", this.yuanInput("pricing.pickup_fee_fen", p.pickup_fee_fen)),
      ),
    );
  }

  expirySection() {
    const e = this.rules.expiry;
    const modes = ["end_of_following_year", "days", "never"].map((v) => [v, t(`rule_expiry_${v}`)]);
    const mode = this.choice("expiry.mode", modes, e.mode);
    const days = this.intInput("expiry.days", e.days, { attrs: { min: "1" } });
    const sync = () => (days.box.disabled = mode.box.value !== "days");
    mode.box.addEventListener("change", sync);
    sync();
    return h(
      "section",
      { class: "card", "data-section": "expiry" },
      h("h2", {}, t("rules_expiry")),
      h("div", { class: "grid-3" }, this.labelled("expiry.mode", mode), this.labelled("expiry.days", days)),
    );
  }

  // --- reading and errors ---------------------------------------------------------

  clearOne(path) {
    const entry = this.inputs.get(path);
    if (entry) {
      entry.error.textContent = "";
      entry.box.removeAttribute("aria-invalid");
    }
  }

  clearErrors() {
    for (const path of this.inputs.keys()) this.clearOne(path);
    for (const box of this.boxes.values()) box.textContent = "";
  }

  /** Shows `message` at `path` (a rules path), or at the nearest section that has a box. */
  show(path, message) {
    const entry = this.inputs.get(path);
    if (entry) {
      entry.error.textContent = message;
      entry.box.setAttribute("aria-invalid", "true");
      return;
    }
    let at = path;
    while (at && !this.boxes.has(at)) at = at.includes(".") ? at.slice(0, at.lastIndexOf(".")) : "";
    const box = this.boxes.get(at);
    const where = at === path || !path ? "" : `${ruleLabel(path)}: `;
    box.textContent = box.textContent ? `${box.textContent} ${where}${message}` : `${where}${message}`;
  }

  /** The document to save, or null after showing what is wrong with the form. */
  read() {
    this.clearErrors();
    const doc = clone(this.rules);
    let bad = 0;
    const value = (path) => {
      try {
        return this.inputs.get(path).read();
      } catch (message) {
        bad += 1;
        this.show(path, String(message));
        return undefined;
      }
    };
    doc.earn = { ...doc.earn, fen_per_point: value("earn.fen_per_point"), growth_from_paid: value("earn.growth_from_paid") };
    doc.sign_in = { ...doc.sign_in, daily_points: Array.from({ length: this.dayCount }, (_, i) => value(`sign_in.daily_points.${i}`)), repeat: value("sign_in.repeat") };
    doc.levels = this.levels.map((lv, i) => {
      const out = { ...(this.rules.levels[i] || {}), level: i };
      for (const f of LEVEL_FIELDS) out[f] = value(`levels.${i}.${f}`);
      return out;
    });
    // the obvious level rules, next to the field that breaks them (the API checks them too)
    doc.levels.forEach((lv, i) => {
      if (i === 0 && lv.threshold !== undefined && lv.threshold !== 0) {
        bad += 1;
        this.show("levels.0.threshold", t("rule_level0_threshold"));
      }
      const before = doc.levels[i - 1];
      if (i > 0 && lv.threshold !== undefined && before.threshold !== undefined && lv.threshold <= before.threshold) {
        bad += 1;
        this.show(`levels.${i}.threshold`, t("rule_threshold_rises", { n: before.threshold }));
      }
    });
    const pricing = {};
    for (const key of ["member_day_of_month", "member_day_policy", "points_per_yuan", "points_max_share_percent", "free_shipping_over_fen", "express_fee_fen", "same_city_fee_fen", "pickup_fee_fen"]) {
      pricing[key] = value(`pricing.${key}`);
    }
    doc.pricing = { ...doc.pricing, ...pricing };
    const mode = value("expiry.mode");
    doc.expiry = { ...doc.expiry, mode, days: mode === "days" ? value("expiry.days") : doc.expiry.days };
    if (bad) {
      this.show("", t("rules_fix_fields", { n: bad }));
      return null;
    }
    return doc;
  }

  /** The API's 422 field errors ("body.rules.levels.1.threshold") at their fields. */
  showApiErrors(err) {
    this.clearErrors();
    const fields = err.fields || [];
    for (const f of fields) {
      const path = String(f.field || "").replace(/^body\.rules\.?/, "");
      this.show(path, f.message);
    }
    if (!fields.length) this.show("", err.message);
    else this.boxes.get("").prepend(`${err.message} `);
  }

  render() {
    return [this.earnSection(), this.signInSection(), this.levelsSection(), this.pricingSection(), this.expirySection()];
  }
}

// --- the page -----------------------------------------------------------------------

export async function render(main) {
  const body = h("div", { "data-role": "rules-form" });
  const meta = h("p", { class: "muted", "data-role": "rules-version" });
  const save = h("button", { type: "submit", class: "btn btn-primary", "data-action": "save" }, t("save"));
  const formError = h("p", { class: "form-error", "data-error-for": "rules", role: "alert" });
  const json = h("textarea", { class: "code", name: "rules_json", rows: "24", spellcheck: "false" });
  const saveJson = h("button", { type: "button", class: "btn", "data-action": "save-json" }, t("rules_save_json"));
  let version = null;
  let form = null;

  const load = async () => {
    const r = await api("GET", "/rules");
    version = r.version;
    form = new RulesForm(r.rules);
    form.boxes.set("", formError);
    formError.textContent = "";
    clear(body).append(...form.render());
    json.value = JSON.stringify(r.rules, null, 2);
    meta.textContent = t("rules_version", { v: r.version, at: when(r.updated_at) });
  };
  const put = async (rules) => {
    await api("PUT", "/rules", { body: { rules, base_version: version } });
    toast(t("saved"));
    await load();
  };

  const el = h(
    "form",
    {
      class: "form",
      "data-form": "rules",
      novalidate: true,
      onSubmit: (e) => {
        e.preventDefault();
        busy(save, async () => {
          const doc = form.read();
          if (!doc) return;
          try {
            await put(doc);
          } catch (err) {
            if (err.status === 422) form.showApiErrors(err);
            else throw err;
          }
        });
      },
    },
    meta,
    h("p", { class: "muted small" }, t("rules_form_help")),
    body,
    formError,
    h("div", { class: "actions" }, save),
  );
  saveJson.addEventListener("click", () =>
    busy(saveJson, async () => {
      let doc;
      try {
        doc = JSON.parse(json.value);
      } catch (err) {
        throw new Error(t("json_invalid", { error: err.message }));
      }
      await put(doc);
    }),
  );
  const advanced = h(
    "details",
    { class: "card", "data-role": "advanced" },
    h("summary", {}, t("rules_advanced")),
    h("p", { class: "muted small" }, t("rules_advanced_help")),
    json,
    h("div", { class: "actions spaced" }, saveJson),
  );
  // the page is long: the head saves too
  const saveTop = h("button", { type: "button", class: "btn btn-primary", "data-action": "save-top", onClick: () => el.requestSubmit(save) }, t("save"));
  const history = h("a", { class: "btn", href: "#/audit/points.rules.update", "data-action": "history" }, t("rules_history"));
  main.append(pageHead(t("menu_rules"), history, saveTop), el, advanced);
  await load().catch(showError);
}
