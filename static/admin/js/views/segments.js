// Segments (crowd packs): rule builder with a live count, members, and campaigns
// (subscribe message or gift pack) with their counts. Routes: #/segments,
// #/segments/new, #/segments/<id>, #/segments/<id>/edit.
import { api, newKey } from "../api.js";
import { h, clear, busy, field, input, select, table, badge, pageHead, num, when, toast, showError, confirmDialog, poll } from "../dom.js";
import { t } from "../i18n.js";

// the predicates the API accepts (mall/segments/schemas.py); anything else is edited as JSON
const FIELDS = ["purchase_count", "last_purchase", "bound_platform", "level", "birthday_month", "points_balance", "tags"];
const SOURCES = ["all", "mall", "marketplace"];
const COUNTS = ["sent", "skipped_by_cap", "no_grant", "refused", "failed"];

const list = (text) =>
  String(text || "")
    .split(/[,，\s]+/)
    .map((x) => x.trim())
    .filter(Boolean);
const ints = (text) => list(text).map(Number);
const optInt = (el) => (el.value.trim() === "" ? undefined : Number(el.value));

function numberInput(name, value) {
  return input(name, { type: "number", min: "0", step: "1", value: value ?? "", class: "small-input" });
}

/** One predicate row: a field picker and that field's controls. */
function predicateRow(pred, onChange, onRemove) {
  const known = pred && FIELDS.includes(pred.field);
  const kind = select(
    "pred_field",
    [...FIELDS.map((f) => [f, t(`pred_${f}`)]), ["json", t("pred_json")]],
    known ? pred.field : pred ? "json" : "level",
  );
  const body = h("div", { class: "pred-body" });
  const row = h("div", { class: "pred-row", "data-role": "predicate" }, kind, body, h("button", { type: "button", class: "btn-icon", "aria-label": t("remove"), "data-action": "remove-rule", onClick: onRemove }, "×"));
  let read = () => null;

  const build = (p) => {
    clear(body);
    const f = kind.value;
    row.dataset.field = f;
    const src = (v) => select("source", SOURCES.map((s) => [s, t(`source_${s}`)]), v || "all");
    if (f === "purchase_count" || f === "points_balance") {
      const gte = numberInput("gte", p.gte);
      const lte = numberInput("lte", p.lte);
      const source = f === "purchase_count" ? src(p.source) : null;
      body.append(field(t("at_least"), gte), field(t("at_most"), lte), source ? field(t("order_source"), source) : null);
      read = () => ({ field: f, gte: optInt(gte), lte: optInt(lte), ...(source && source.value !== "all" ? { source: source.value } : {}) });
    } else if (f === "level") {
      const gte = numberInput("gte", p.gte);
      const lte = numberInput("lte", p.lte);
      const among = input("in", { value: (p.in || []).join(", "), placeholder: "1, 3" });
      body.append(field(t("at_least"), gte), field(t("at_most"), lte), field(t("level_in"), among, t("level_in_hint")));
      read = () => (among.value.trim() ? { field: f, in: ints(among.value) } : { field: f, gte: optInt(gte), lte: optInt(lte) });
    } else if (f === "last_purchase") {
      const after = input("after", { type: "date", value: p.after || "" });
      const before = input("before", { type: "date", value: p.before || "" });
      const never = h("input", { type: "checkbox", name: "include_never", checked: Boolean(p.include_never) });
      const source = src(p.source);
      body.append(field(t("on_or_after"), after), field(t("before_day"), before), field(t("order_source"), source), h("label", { class: "check" }, never, t("include_never")));
      read = () => ({
        field: f,
        after: after.value || undefined,
        before: before.value || undefined,
        ...(never.checked ? { include_never: true } : {}),
        ...(source.value !== "all" ? { source: source.value } : {}),
      });
    } else if (f === "bound_platform") {
      const platforms = input("platforms", { value: (p.platforms || []).join(", "), placeholder: "tmall, jd, douyin" });
      const bound = select("bound", [["true", t("has_bound")], ["false", t("has_not_bound")]], p.bound === false ? "false" : "true");
      body.append(field(t("bound_state"), bound), field(t("platforms"), platforms, t("platforms_hint")));
      read = () => ({ field: f, platforms: list(platforms.value), ...(bound.value === "false" ? { bound: false } : {}) });
    } else if (f === "birthday_month") {
      const months = input("months", { value: (p.months || []).join(", "), placeholder: "3, 4" });
      const thisMonth = h("input", { type: "checkbox", name: "this_month", checked: Boolean(p.this_month) });
      body.append(field(t("months"), months, t("months_hint")), h("label", { class: "check" }, thisMonth, t("this_month")));
      read = () => ({ field: f, ...(months.value.trim() ? { months: ints(months.value) } : {}), ...(thisMonth.checked ? { this_month: true } : {}) });
    } else if (f === "tags") {
      const any = input("tags_any", { value: (p.any || []).join(", "), placeholder: "vip, auto:repeat_buyer" });
      const all = input("tags_all", { value: (p.all || []).join(", ") });
      const none = input("tags_none", { value: (p.none || []).join(", ") });
      body.append(field(t("tags_any"), any), field(t("tags_all"), all), field(t("tags_none"), none));
      read = () => {
        const out = { field: f };
        for (const [k, el] of [["any", any], ["all", all], ["none", none]]) if (el.value.trim()) out[k] = list(el.value);
        return out;
      };
    } else {
      const raw = h("textarea", { class: "code", name: "pred_json", rows: "3", spellcheck: "false" }, p && Object.keys(p).length ? JSON.stringify(p) : '{"field": ""}');
      body.append(field(t("pred_json_label"), raw));
      read = () => {
        try {
          return JSON.parse(raw.value);
        } catch (err) {
          throw new Error(t("json_invalid", { error: err.message }));
        }
      };
    }
  };
  kind.addEventListener("change", () => {
    build({});
    onChange();
  });
  build(pred || { field: "level" });
  // drop the fields left blank so the API sees only what ops gave
  const value = () => JSON.parse(JSON.stringify(read()));
  return { el: row, value };
}

/** The whole rule document: builder rows, or one JSON text for everything. */
function ruleEditor(doc, onChange) {
  const rows = [];
  const box = h("div", { class: "pred-list", "data-role": "rules" });
  const json = h("textarea", { class: "code", name: "rules_json", id: "f-rules_json", rows: "12", spellcheck: "false", hidden: true });
  let asJson = false;
  const add = (pred) => {
    const row = predicateRow(pred, onChange, () => {
      rows.splice(rows.indexOf(row), 1);
      row.el.remove();
      onChange();
    });
    rows.push(row);
    box.append(row.el);
  };
  for (const pred of (doc && doc.all) || []) add(pred);
  const empty = h("p", { class: "muted small" }, t("rules_empty_hint"));
  const addBtn = h("button", { type: "button", class: "btn btn-small", "data-action": "add-rule", onClick: () => (add(null), onChange()) }, t("add_rule"));
  const value = () => {
    if (!asJson) return { all: rows.map((r) => r.value()) };
    try {
      return JSON.parse(json.value);
    } catch (err) {
      throw new Error(t("json_invalid", { error: err.message }));
    }
  };
  const toggle = h("button", { type: "button", class: "btn btn-small", "data-action": "toggle-json" }, t("edit_as_json"));
  toggle.addEventListener("click", () => {
    try {
      const current = value();
      asJson = !asJson;
      if (asJson) {
        json.value = JSON.stringify(current, null, 2);
      } else {
        rows.splice(0).forEach((r) => r.el.remove());
        for (const pred of current.all || []) add(pred);
      }
      json.hidden = !asJson;
      box.hidden = asJson;
      addBtn.hidden = asJson;
      toggle.textContent = asJson ? t("edit_with_builder") : t("edit_as_json");
      onChange();
    } catch (err) {
      showError(err);
    }
  });
  const el = h("div", { class: "rule-editor" }, h("div", { class: "card-head" }, h("h2", {}, t("rules_all_of")), h("div", { class: "actions" }, addBtn, toggle)), empty, box, json);
  el.addEventListener("input", onChange);
  el.addEventListener("change", onChange);
  return { el, value };
}

function rulesSummary(doc) {
  const preds = (doc && doc.all) || [];
  if (!preds.length) return t("everyone");
  return preds
    .map((p) => {
      const { field: f, ...rest } = p;
      const label = FIELDS.includes(f) ? t(`pred_${f}`) : f;
      return `${label} ${JSON.stringify(rest)}`;
    })
    .join("；");
}

function membersTable(sample) {
  return table(
    [
      ["ID", (m) => m.id],
      [t("nickname"), (m) => m.nickname || "—"],
      [t("level"), (m) => m.level],
      [t("points"), (m) => num(m.points_balance)],
      [t("birthday"), (m) => m.birthday || "—"],
      [t("tags"), (m) => (m.tags || []).map((x) => badge(x))],
      [t("joined_at"), (m) => when(m.created_at)],
    ],
    sample,
    { rowAttrs: (m) => ({ "data-member": m.id }) },
  );
}

// --- editor page ----------------------------------------------------------------

async function editorPage(main, id) {
  const segment = id ? await api("GET", `/segments/${id}`) : null;
  const name = input("name", { required: true, maxlength: "64", value: segment ? segment.name : "" });
  const description = input("description", { maxlength: "255", value: segment ? segment.description : "" });
  const count = h("strong", { class: "kpi-value", "data-role": "preview-count" }, "—");
  const previewNote = h("p", { class: "form-error", "data-role": "preview-error", role: "alert" });
  const sampleBox = h("div", { "data-role": "preview-sample" });
  let timer = null;
  let asked = 0;
  const preview = async () => {
    const mine = ++asked;
    let rules;
    try {
      rules = editor.value();
    } catch (err) {
      previewNote.textContent = err.message;
      return;
    }
    try {
      const out = await api("POST", "/segments/preview", { body: { rules, sample_size: 10 } });
      if (mine !== asked) return; // a newer edit is being counted
      previewNote.textContent = "";
      count.textContent = num(out.count);
      count.dataset.count = String(out.count);
      clear(sampleBox).append(membersTable(out.sample));
    } catch (err) {
      if (mine !== asked) return;
      const detail = (err.fields || []).map((f) => `${f.field}: ${f.message}`).join("; ");
      previewNote.textContent = detail ? `${err.message} (${detail})` : err.message;
      count.textContent = "—";
      delete count.dataset.count;
    }
  };
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(preview, 300);
  };
  const editor = ruleEditor(segment ? segment.rules : { all: [] }, schedule);
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "save" }, t("save"));
  const form = h(
    "form",
    {
      class: "form",
      "data-form": "segment",
      onSubmit: (e) => {
        e.preventDefault();
        busy(submit, async () => {
          const body = { name: name.value.trim(), description: description.value.trim(), rules: editor.value() };
          const saved = id ? await api("PATCH", `/segments/${id}`, { body }) : await api("POST", "/segments", { body });
          toast(t("saved"));
          location.hash = `#/segments/${saved.id}`;
        });
      },
    },
    h("section", { class: "card" }, h("div", { class: "grid-2" }, field(t("name"), name), field(t("description"), description))),
    h("section", { class: "card" }, editor.el),
    h(
      "section",
      { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, t("live_preview")), h("div", { class: "kpi kpi-inline" }, h("span", { class: "kpi-label" }, t("matching_members")), count)),
      previewNote,
      sampleBox,
    ),
    h("div", { class: "actions" }, h("a", { class: "btn", href: id ? `#/segments/${id}` : "#/segments" }, t("cancel")), submit),
  );
  main.append(pageHead(id ? t("edit_segment") : t("new_segment")), form);
  name.focus();
  await preview();
  return () => clearTimeout(timer);
}

// --- campaign form and list -------------------------------------------------------

function countsCells() {
  return COUNTS.map((k) => [t(`count_${k}`), (x) => h("span", { "data-count": k }, num(x[k]))]);
}

async function giftPacks() {
  try {
    return await api("GET", "/gift-packs");
  } catch (err) {
    return []; // no coupons domain: subscribe messages only
  }
}

async function campaignForm(segment, allPacks, onDone) {
  const packs = allPacks.filter((p) => p.active);
  let key = newKey();
  const kind = select("campaign_kind", [["gift_pack", t("campaign_kind_gift_pack")], ["subscribe_message", t("campaign_kind_subscribe_message")]], packs.length ? "gift_pack" : "subscribe_message");
  const pack = select("gift_pack_id", packs.map((p) => [p.id, p.name]));
  const template = input("template_id", { maxlength: "128", placeholder: "tmpl-activity-1" });
  const data = h("textarea", { name: "message_data", id: "f-message_data", rows: "3", placeholder: "thing1=会员日活动\ndate2=2025年3月18日" });
  const pagePath = input("page", { maxlength: "256", placeholder: "pages/index/index" });
  const parts = {
    gift_pack: field(t("gift_pack"), pack, packs.length ? null : t("no_active_packs")),
    subscribe_message: h("div", { class: "grid-3" }, field(t("template_id"), template), field(t("message_data"), data, t("message_data_hint")), field(t("page_path"), pagePath, t("optional"))),
  };
  const show = () => {
    for (const [name, el] of Object.entries(parts)) el.hidden = name !== kind.value;
  };
  kind.addEventListener("change", show);
  show();
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "send" }, t("send_campaign"));
  const form = h(
    "form",
    {
      class: "card form",
      "data-form": "campaign",
      onSubmit: (e) => {
        e.preventDefault();
        busy(submit, async () => {
          let body;
          if (kind.value === "gift_pack") {
            if (!pack.value) throw new Error(t("pick_pack"));
            body = { kind: "gift_pack", gift_pack_id: Number(pack.value) };
          } else {
            const pairs = {};
            for (const line of data.value.split("\n")) {
              if (!line.trim()) continue;
              const at = line.indexOf("=");
              if (at < 1) throw new Error(t("message_data_invalid", { line }));
              pairs[line.slice(0, at).trim()] = line.slice(at + 1).trim();
            }
            body = { kind: "subscribe_message", template_id: template.value.trim(), data: pairs, ...(pagePath.value.trim() ? { page: pagePath.value.trim() } : {}) };
          }
          const ok = await confirmDialog(t("send_confirm", { name: segment.name, n: num(segment.last_count) }));
          if (!ok) return;
          const c = await api("POST", `/segments/${segment.id}/campaigns`, { body, key });
          key = newKey(); // the next send is a new campaign; a retry of this one was safe
          toast(t("campaign_sent", { sent: num(c.sent), members: num(c.members) }));
          await onDone(c);
        });
      },
    },
    h("h2", {}, t("send_campaign")),
    h("p", { class: "muted small" }, t("touch_cap_hint")),
    h("div", { class: "grid-3" }, field(t("campaign_kind"), kind), parts.gift_pack),
    parts.subscribe_message,
    h("div", { class: "actions" }, submit),
  );
  return form;
}

function campaignsTable(rows, packNames) {
  return table(
    [
      ["ID", (c) => c.id],
      [t("time"), (c) => when(c.created_at)],
      [t("campaign_kind"), (c) => t(`campaign_kind_${c.kind}`)],
      [t("campaign_content"), (c) => (c.kind === "gift_pack" ? packNames[c.payload.gift_pack_id] || `#${c.payload.gift_pack_id}` : c.payload.template_id)],
      [t("status"), (c) => badge(t(`campaign_${c.status}`), c.status === "done" ? "good" : "warn")],
      [t("count_members"), (c) => h("span", { "data-count": "members" }, num(c.members))],
      ...countsCells(),
    ],
    rows,
    { rowAttrs: (c) => ({ "data-campaign": c.id }) },
  );
}

// --- detail page ------------------------------------------------------------------

async function detailPage(main, id) {
  const [segment, packs] = await Promise.all([api("GET", `/segments/${id}`), giftPacks()]);
  const packNames = Object.fromEntries(packs.map((p) => [p.id, p.name]));
  const membersBox = h("div", { "data-role": "members" });
  const campaignsBox = h("div", { "data-role": "campaigns" });
  const size = h("strong", { class: "kpi-value", "data-role": "segment-count" }, num(segment.last_count));
  const loadMembers = async () => {
    const out = await api("GET", `/segments/${id}/members`, { query: { size: 50 } });
    size.textContent = num(out.count);
    clear(membersBox).append(membersTable(out.sample));
    if (out.count > out.sample.length) membersBox.append(h("p", { class: "muted small" }, t("showing_n_of", { n: num(out.sample.length), total: num(out.count) })));
  };
  let rows = [];
  const loadCampaigns = async () => {
    rows = await api("GET", `/segments/${id}/campaigns`);
    clear(campaignsBox).append(campaignsTable(rows, packNames));
  };
  const actions = [
    h("a", { class: "btn", href: "#/segments" }, t("back")),
    segment.active ? h("a", { class: "btn", href: `#/segments/${id}/edit`, "data-action": "edit" }, t("edit")) : null,
    segment.active
      ? h(
          "button",
          {
            type: "button",
            class: "btn btn-danger",
            "data-action": "deactivate",
            onClick: (e) =>
              busy(e.currentTarget, async () => {
                if (!(await confirmDialog(t("deactivate_confirm", { name: segment.name })))) return;
                await api("DELETE", `/segments/${id}`);
                location.hash = "#/segments";
              }),
          },
          t("deactivate"),
        )
      : badge(t("inactive")),
  ];
  main.append(
    pageHead(segment.name, actions),
    h(
      "section",
      { class: "card" },
      segment.description ? h("p", {}, segment.description) : null,
      h("div", { class: "kpis" }, h("div", { class: "kpi" }, h("span", { class: "kpi-label" }, t("matching_members")), size, h("small", {}, t("counted_now")))),
      h("p", { class: "muted small" }, h("code", { class: "rules-doc", "data-role": "rules-doc" }, JSON.stringify(segment.rules))),
    ),
    segment.active ? await campaignForm(segment, packs, loadCampaigns) : null,
    h("section", { class: "card" }, h("h2", {}, t("campaigns")), campaignsBox),
    h("section", { class: "card" }, h("h2", {}, t("segment_members")), membersBox),
  );
  await Promise.all([loadMembers(), loadCampaigns()]);
  // big campaigns are queued: follow them until they are done
  return poll(
    campaignsBox,
    async () => {
      if (rows.some((c) => c.status !== "done")) await loadCampaigns();
    },
    2000,
  );
}

// --- list page --------------------------------------------------------------------

async function listPage(main) {
  const showAll = h("input", { type: "checkbox", name: "show_inactive" });
  const box = h("div", { "data-role": "segments" });
  const tagsBox = h("div", { "data-role": "auto-tags" });
  const reload = async () => {
    const rows = await api("GET", "/segments", { query: showAll.checked ? {} : { active: true } });
    clear(box).append(
      table(
        [
          ["ID", (s) => s.id],
          [t("name"), (s) => h("a", { href: `#/segments/${s.id}`, "data-segment": s.id }, s.name)],
          [t("rules"), (s) => h("code", { class: "detail" }, rulesSummary(s.rules))],
          [t("last_count"), (s) => (s.last_count === null ? "—" : num(s.last_count))],
          [t("counted_at"), (s) => when(s.counted_at)],
          [t("status"), (s) => (s.active ? badge(t("active"), "good") : badge(t("inactive")))],
        ],
        rows,
        { rowAttrs: (s) => ({ "data-id": s.id }) },
      ),
    );
  };
  const loadTags = async () => {
    const tags = await api("GET", "/segments/auto-tags");
    clear(tagsBox).append(tags.length ? h("p", { class: "tag-cloud" }, tags.map((x) => badge(`${x.tag} · ${num(x.members)}`))) : h("p", { class: "muted" }, t("no_auto_tags")));
  };
  showAll.addEventListener("change", () => reload().catch(showError));
  main.append(
    pageHead(t("menu_segments"), h("a", { class: "btn btn-primary", href: "#/segments/new", "data-action": "new" }, t("new_segment"))),
    h("div", { class: "filters" }, h("label", { class: "check" }, showAll, t("show_inactive"))),
    h("section", { class: "card" }, box),
    h("section", { class: "card" }, h("h2", {}, t("auto_tags")), h("p", { class: "muted small" }, t("auto_tags_hint")), tagsBox),
  );
  await Promise.all([reload(), loadTags()]);
}

export function render(main, params) {
  const [first, second] = params;
  if (first === "new") return editorPage(main, null);
  if (first && second === "edit") return editorPage(main, Number(first));
  if (first) return detailPage(main, Number(first));
  return listPage(main);
}
