// Coupons: templates, gift packs, and issuing a pack to members or to a segment.
import { api, newKey } from "../api.js";
import { h, clear, busy, field, input, select, modal, table, badge, pageHead, yuan, toFen, num, pct, when, toast, showError, localToIso, confirmDialog } from "../dom.js";
import { t } from "../i18n.js";

const KINDS = ["cash", "threshold", "discount", "gift", "exchange"];

function terms(c) {
  switch (c.kind) {
    case "cash":
      return t("terms_cash", { v: yuan(c.face_value_fen) });
    case "threshold":
      return t("terms_threshold", { x: yuan(c.threshold_fen), v: yuan(c.face_value_fen) });
    case "discount":
      return t("terms_discount", { p: c.discount_percent, cap: c.discount_cap_fen ? yuan(c.discount_cap_fen) : "—" });
    case "gift":
      return t("terms_gift", { x: yuan(c.threshold_fen), sku: c.gift_sku_id });
    default:
      return t("terms_exchange", { id: (c.scope_ids || [])[0] });
  }
}

function validity(c) {
  return c.validity === "fixed" ? `${when(c.valid_from)} → ${when(c.valid_until)}` : t("valid_months", { n: c.valid_months });
}

function money(name, placeholder = "0.00") {
  return input(name, { inputmode: "decimal", placeholder });
}

function templateEditor(reload) {
  const f = {
    name: input("name", { required: true, maxlength: "64" }),
    description: input("description", { maxlength: "255" }),
    kind: select(
      "kind",
      KINDS.map((k) => [k, t(`coupon_${k}`)]),
      "cash",
    ),
    face: money("face_value"),
    threshold: money("threshold"),
    percent: input("discount_percent", { type: "number", min: "1", max: "99", value: "90" }),
    cap: money("discount_cap", t("optional")),
    giftSku: input("gift_sku_id", { type: "number", min: "1" }),
    scope: select(
      "scope",
      ["all", "categories", "products"].map((s) => [s, t(`scope_${s}`)]),
      "all",
    ),
    scopeIds: input("scope_ids", { placeholder: "1, 2, 3" }),
    validity: select(
      "validity",
      [
        ["relative", t("validity_relative")],
        ["fixed", t("validity_fixed")],
      ],
      "relative",
    ),
    months: input("valid_months", { type: "number", min: "1", max: "36", value: "3" }),
    from: input("valid_from", { type: "datetime-local" }),
    until: input("valid_until", { type: "datetime-local" }),
    total: input("total_quantity", { type: "number", min: "0", placeholder: t("unlimited") }),
    perMember: input("per_member_limit", { type: "number", min: "1", max: "100", value: "1" }),
  };
  const claimable = h("input", { type: "checkbox", name: "claimable", checked: true });
  const wrap = {};
  const show = () => {
    const k = f.kind.value;
    wrap.face.hidden = !["cash", "threshold"].includes(k);
    wrap.threshold.hidden = !["threshold", "gift"].includes(k);
    wrap.percent.hidden = k !== "discount";
    wrap.cap.hidden = k !== "discount";
    wrap.giftSku.hidden = k !== "gift";
    wrap.months.hidden = f.validity.value !== "relative";
    wrap.from.hidden = f.validity.value !== "fixed";
    wrap.until.hidden = f.validity.value !== "fixed";
    wrap.scopeIds.hidden = f.scope.value === "all";
    if (k === "exchange") f.scope.value = "products";
    wrap.scopeIds.hidden = f.scope.value === "all";
  };
  const labelled = (name, label, el, hint) => {
    wrap[name] = field(label, el, hint);
    return wrap[name];
  };
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "save" }, t("save"));
  const m = modal(
    t("new_template"),
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "coupon-template",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            const fen = (el, required) => {
              if (!el.value.trim() && !required) return 0;
              const v = toFen(el.value);
              if (v === null) throw new Error(t("price_invalid"));
              return v;
            };
            const k = f.kind.value;
            const body = {
              name: f.name.value.trim(),
              description: f.description.value.trim(),
              kind: k,
              scope: f.scope.value,
              scope_ids: f.scope.value === "all" ? [] : f.scopeIds.value.split(/[,，\s]+/).filter(Boolean).map(Number),
              validity: f.validity.value,
              per_member_limit: Number(f.perMember.value || 1),
              total_quantity: f.total.value === "" ? null : Number(f.total.value),
              claimable: claimable.checked,
            };
            if (["cash", "threshold"].includes(k)) body.face_value_fen = fen(f.face, true);
            if (["threshold", "gift"].includes(k)) body.threshold_fen = fen(f.threshold, k === "threshold");
            if (k === "discount") Object.assign(body, { discount_percent: Number(f.percent.value), discount_cap_fen: fen(f.cap, false) });
            if (k === "gift") body.gift_sku_id = Number(f.giftSku.value) || null;
            if (body.validity === "relative") body.valid_months = Number(f.months.value || 3);
            else Object.assign(body, { valid_from: localToIso(f.from.value), valid_until: localToIso(f.until.value) });
            await api("POST", "/coupon-templates", { body });
            toast(t("saved"));
            m.close();
            reload();
          });
        },
      },
      h(
        "div",
        { class: "grid-3" },
        field(t("name"), f.name),
        field(t("coupon_kind"), f.kind),
        field(t("description"), f.description),
        labelled("face", t("face_value_yuan"), f.face),
        labelled("threshold", t("threshold_yuan"), f.threshold),
        labelled("percent", t("discount_percent"), f.percent, t("discount_percent_hint")),
        labelled("cap", t("discount_cap_yuan"), f.cap),
        labelled("giftSku", t("gift_sku_id"), f.giftSku),
        field(t("scope"), f.scope),
        labelled("scopeIds", t("scope_ids"), f.scopeIds),
        field(t("validity"), f.validity),
        labelled("months", t("valid_months_label"), f.months),
        labelled("from", t("valid_from"), f.from),
        labelled("until", t("valid_until"), f.until),
        field(t("total_quantity"), f.total, t("blank_unlimited")),
        field(t("per_member_limit"), f.perMember),
      ),
      h("label", { class: "check" }, claimable, t("claimable")),
      h("div", { class: "actions" }, submit),
    ),
    { wide: true },
  );
  for (const el of [f.kind, f.validity, f.scope]) el.addEventListener("change", show);
  show();
  f.name.focus();
}

function packEditor(templates, reload) {
  const name = input("name", { required: true, maxlength: "64" });
  const description = input("description", { maxlength: "255" });
  const forNew = h("input", { type: "checkbox", name: "for_new_members" });
  const rows = [];
  const box = h("div", {});
  const addRow = () => {
    const row = {
      template: select(
        "template_id",
        templates.filter((x) => x.active).map((x) => [x.id, `${x.name} (${terms(x)})`]),
      ),
      quantity: input("quantity", { type: "number", min: "1", max: "20", value: "1" }),
    };
    row.el = h("div", { class: "grid-2 pack-row" }, field(t("template"), row.template), field(t("quantity"), row.quantity));
    rows.push(row);
    box.append(row.el);
  };
  addRow();
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "save" }, t("save"));
  const m = modal(
    t("new_pack"),
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "gift-pack",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            const body = {
              name: name.value.trim(),
              description: description.value.trim(),
              for_new_members: forNew.checked,
              items: rows.map((r) => ({ template_id: Number(r.template.value), quantity: Number(r.quantity.value || 1) })),
            };
            await api("POST", "/gift-packs", { body });
            toast(t("saved"));
            m.close();
            reload();
          });
        },
      },
      h("div", { class: "grid-2" }, field(t("name"), name), field(t("description"), description)),
      box,
      h("button", { type: "button", class: "btn btn-small", onClick: addRow }, t("add_coupon")),
      h("label", { class: "check" }, forNew, t("for_new_members")),
      h("div", { class: "actions" }, submit),
    ),
    { wide: true },
  );
  name.focus();
}

async function segmentsOrNull() {
  try {
    return (await api("GET", "/segments")).filter((s) => s.active);
  } catch (err) {
    return null; // no segments on this server
  }
}

async function issueDialog(pack) {
  const segments = await segmentsOrNull();
  const key = newKey();
  const modes = [["members", t("to_members")], ["tag", t("to_tag")], ...(segments ? [["segment", t("to_segment")]] : [])];
  const mode = select("target", modes, segments && segments.length ? "segment" : "members");
  const ids = h("textarea", { name: "member_ids", id: "f-member_ids", rows: "3", placeholder: "1001, 1002, 1003" });
  const tag = input("tag", { maxlength: "64" });
  const minLevel = input("min_level", { type: "number", min: "0", placeholder: t("optional") });
  const segment = segments ? select("segment_id", segments.map((s) => [s.id, `${s.name}${s.last_count !== null ? ` (${t("n_members", { n: num(s.last_count) })})` : ""}`])) : null;
  const parts = {
    members: field(t("member_ids"), ids, t("member_ids_hint")),
    tag: h("div", { class: "grid-2" }, field(t("tag"), tag), field(t("min_level"), minLevel)),
    segment: segment ? field(t("segment"), segment, t("touch_cap_hint")) : h("span"),
  };
  const show = () => {
    for (const [name, el] of Object.entries(parts)) el.hidden = name !== mode.value;
  };
  mode.addEventListener("change", show);
  const result = h("div", { "data-role": "issue-result" });
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "issue" }, t("issue"));
  const m = modal(
    t("issue_pack", { name: pack.name }),
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "issue-pack",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            if (mode.value === "segment") {
              if (!segment.value) throw new Error(t("pick_segment"));
              const c = await api("POST", `/segments/${segment.value}/campaigns`, { body: { kind: "gift_pack", gift_pack_id: pack.id }, key });
              clear(result).append(
                h("div", { class: "notice notice-ok" }, t("campaign_started", { status: c.status, members: num(c.members), sent: num(c.sent), capped: num(c.skipped_by_cap) })),
              );
              return;
            }
            const body = {};
            if (mode.value === "members") {
              body.member_ids = ids.value.split(/[,，\s]+/).filter(Boolean).map(Number);
              if (body.member_ids.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(t("member_ids_invalid"));
            } else {
              if (tag.value.trim()) body.tag = tag.value.trim();
              if (minLevel.value !== "") body.min_level = Number(minLevel.value);
            }
            const out = await api("POST", `/gift-packs/${pack.id}/issue`, { body, key });
            const skipped = out.results.filter((r) => !r.issued);
            clear(result).append(
              h("div", { class: "notice notice-ok" }, t("issued_result", { issued: num(out.issued), members: num(out.members) })),
              skipped.length
                ? table(
                    [
                      [t("member"), (r) => `#${r.member_id}`],
                      [t("reason"), (r) => r.reason || (r.skipped || []).map((x) => x.reason || JSON.stringify(x)).join(", ")],
                    ],
                    skipped.slice(0, 100),
                  )
                : null,
            );
            toast(t("issued_result", { issued: num(out.issued), members: num(out.members) }));
          });
        },
      },
      field(t("issue_to"), mode),
      parts.members,
      parts.tag,
      parts.segment,
      h("div", { class: "actions" }, submit),
      result,
    ),
    { wide: true },
  );
  show();
  return m;
}

export async function render(main) {
  const templatesBox = h("div", { "data-role": "templates" });
  const packsBox = h("div", { "data-role": "packs" });
  let templates = [];
  const reload = async () => {
    try {
      const [tpl, packs] = await Promise.all([api("GET", "/coupon-templates"), api("GET", "/gift-packs")]);
      templates = tpl;
      const names = Object.fromEntries(tpl.map((x) => [x.id, x.name]));
      clear(templatesBox).append(
        table(
          [
            [t("name"), (c) => h("strong", {}, c.name)],
            [t("coupon_kind"), (c) => t(`coupon_${c.kind}`)],
            [t("terms"), terms],
            [t("validity"), validity],
            [t("quantity"), (c) => (c.total_quantity === null ? t("unlimited") : num(c.total_quantity))],
            [t("issued"), (c) => num(c.issued)],
            [t("used"), (c) => num(c.used)],
            [t("redemption_rate"), (c) => pct(c.issued ? c.used / c.issued : null)],
            [t("status"), (c) => (c.active ? badge(t("active"), "good") : badge(t("inactive")))],
            [
              "",
              (c) =>
                c.active
                  ? h(
                      "button",
                      {
                        type: "button",
                        class: "btn btn-small",
                        onClick: (e) =>
                          busy(e.currentTarget, async () => {
                            if (!(await confirmDialog(t("deactivate_confirm", { name: c.name })))) return;
                            await api("DELETE", `/coupon-templates/${c.id}`);
                            reload();
                          }),
                      },
                      t("deactivate"),
                    )
                  : "",
            ],
          ],
          tpl,
          { rowAttrs: (c) => ({ "data-id": c.id }) },
        ),
      );
      clear(packsBox).append(
        table(
          [
            [t("name"), (p) => h("strong", {}, p.name)],
            [t("contents"), (p) => p.items.map((i) => `${names[i.template_id] || `#${i.template_id}`} × ${i.quantity}`).join("，")],
            [t("for_new_members"), (p) => (p.for_new_members ? badge(t("yes"), "good") : "")],
            [t("status"), (p) => (p.active ? badge(t("active"), "good") : badge(t("inactive")))],
            [
              t("actions"),
              (p) =>
                h(
                  "div",
                  { class: "row-actions" },
                  p.active ? h("button", { type: "button", class: "btn btn-small btn-primary", "data-action": "issue", onClick: () => issueDialog(p).catch(showError) }, t("issue")) : null,
                  p.active
                    ? h(
                        "button",
                        {
                          type: "button",
                          class: "btn btn-small",
                          onClick: (e) =>
                            busy(e.currentTarget, async () => {
                              if (!(await confirmDialog(t("deactivate_confirm", { name: p.name })))) return;
                              await api("DELETE", `/gift-packs/${p.id}`);
                              reload();
                            }),
                        },
                        t("deactivate"),
                      )
                    : null,
                ),
            ],
          ],
          packs,
          { rowAttrs: (p) => ({ "data-id": p.id }) },
        ),
      );
    } catch (err) {
      showError(err);
    }
  };
  main.append(
    pageHead(t("menu_coupons")),
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, t("templates")), h("button", { type: "button", class: "btn btn-primary", "data-action": "new-template", onClick: () => templateEditor(reload) }, t("new_template"))), templatesBox),
    h(
      "section",
      { class: "card" },
      h(
        "div",
        { class: "card-head" },
        h("h2", {}, t("gift_packs")),
        h(
          "button",
          {
            type: "button",
            class: "btn btn-primary",
            "data-action": "new-pack",
            onClick: () => (templates.some((x) => x.active) ? packEditor(templates, reload) : showError(new Error(t("need_template")))),
          },
          t("new_pack"),
        ),
      ),
      packsBox,
    ),
  );
  await reload();
}
