// Fair sales (#/fair-sales): flagged members (flag, and unflag with a reason; the API
// audits both), and the patterns scalpers leave (#/fair-sales/phones|addresses|logins):
// many accounts on one phone, delivery address or login IP, with a flag button per member.
import { api } from "../api.js";
import { h, clear, busy, field, input, modal, table, badge, pageHead, num, when, toast, confirmDialog } from "../dom.js";
import { t } from "../i18n.js";
import "../i18n_fair.js";
import { pagedTable, tabs, memberLink, memberWho } from "../ops_kit.js";

const FLAGS_PAGE = 50;
const REASON_MAX = 200;

/** Asks for a reason (the API wants one, for the audit log), then runs `work(reason)`. */
function reasonDialog({ title, hint, reason = "", action, form, work }) {
  const box = input("fair_reason", { required: true, maxlength: String(REASON_MAX), value: reason.slice(0, REASON_MAX) });
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": action }, title);
  const m = modal(
    title,
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": form,
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            const text = box.value.trim();
            if (!text) throw new Error(t("reason_required"));
            await work(text);
            m.close();
          });
        },
      },
      hint ? h("p", { class: "muted small" }, hint) : null,
      field(t("reason"), box),
      h("div", { class: "actions" }, submit),
    ),
  );
  box.focus();
  box.select();
}

const flagMember = (memberId, reason) => api("POST", `/seckill/members/${memberId}/flag`, { body: { reason } });

// --- flagged members --------------------------------------------------------------

function flagForm(done) {
  const member = input("flag_member_id", { type: "number", min: "1", step: "1", required: true, placeholder: t("member_id") });
  const reason = input("flag_reason", { required: true, maxlength: String(REASON_MAX) });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-action": "flag" }, t("fair_flag"));
  const form = h(
    "form",
    {
      class: "card form",
      "data-form": "flag-member",
      onSubmit: (e) => {
        e.preventDefault();
        busy(submit, async () => {
          const id = member.value.trim();
          if (!/^[1-9]\d{0,17}$/.test(id)) throw new Error(t("fair_member_id_invalid"));
          const text = reason.value.trim();
          if (!text) throw new Error(t("reason_required"));
          await flagMember(id, text);
          form.reset();
          toast(t("saved"));
          await done();
        });
      },
    },
    h("h2", {}, t("fair_flag_member")),
    h("p", { class: "muted small" }, t("fair_flag_hint")),
    h("div", { class: "grid-3" }, field(t("member_id"), member), field(t("reason"), reason)),
    h("div", { class: "actions" }, submit),
  );
  return form;
}

async function flagsTab(main) {
  let list = null;
  const unflag = (f) =>
    reasonDialog({
      title: `${t("fair_unflag")} #${f.member_id}`,
      hint: t("fair_unflag_hint"),
      action: "confirm-unflag",
      form: "unflag",
      work: async (reason) => {
        await api("POST", `/seckill/members/${f.member_id}/unflag`, { body: { reason } });
        toast(t("saved"));
        await list.reload();
      },
    });
  list = pagedTable(
    [
      [t("member"), (f) => [memberLink(f.member_id), " ", memberWho(f.member_nickname, f.member_phone)]],
      [t("reason"), (f) => f.reason],
      [t("fair_flagged_by"), (f) => f.flagged_by || "—"],
      [t("fair_flagged_at"), (f) => when(f.flagged_at)],
      [t("actions"), (f) => h("button", { type: "button", class: "btn btn-small", "data-action": "unflag", onClick: () => unflag(f) }, t("fair_unflag"))],
    ],
    async (cursor) => {
      // the flags list pages on from the last flag's id
      const items = await api("GET", "/seckill/flags", { query: { before_id: cursor, limit: FLAGS_PAGE } });
      return { items, next_cursor: items.length === FLAGS_PAGE ? String(items[items.length - 1].id) : null };
    },
    { role: "flags", rowAttrs: (f) => ({ "data-flag": f.member_id }), empty: t("fair_no_flags") },
  );
  main.append(flagForm(() => list.reload()), h("section", { class: "card" }, h("h2", {}, t("fair_tab_flags")), list.el));
  await list.reload();
}

// --- suspicious patterns ----------------------------------------------------------

const KINDS = {
  phones: {
    path: "/seckill/suspicious/phones",
    value: () => t("fair_shared_phone"),
    hint: () => t("fair_phones_hint"),
    reason: (g) => t("fair_reason_phone", { value: g.value, n: g.member_count }),
  },
  addresses: {
    path: "/seckill/suspicious/addresses",
    value: () => t("fair_shared_address"),
    hint: () => t("fair_addresses_hint"),
    reason: (g) => t("fair_reason_address", { value: g.value, n: g.member_count }),
  },
  logins: {
    path: "/seckill/suspicious/logins",
    value: () => t("fair_shared_login"),
    hint: () => t("fair_logins_hint"),
    reason: (g) => t("fair_reason_login", { value: g.value, n: g.member_count }),
    days: true,
  },
};

async function sharedTab(main, kind) {
  const spec = KINDS[kind];
  const minMembers = input("min_members", { type: "number", min: "2", max: "1000", step: "1", required: true, value: "2" });
  const days = spec.days ? input("days", { type: "number", min: "1", max: "90", step: "1", required: true, value: "7" }) : null;
  const box = h("div", { "data-role": `shared-${kind}` });
  let groups = [];

  const flagOne = (g, memberId) =>
    reasonDialog({
      title: `${t("fair_flag")} #${memberId}`,
      hint: t("fair_flag_hint"),
      reason: spec.reason(g),
      action: "confirm-flag",
      form: "flag",
      work: async (reason) => {
        await flagMember(memberId, reason);
        g.flagged_ids.push(memberId);
        toast(t("fair_flagged_n", { n: 1 }));
        draw();
      },
    });
  const flagAll = async (g) => {
    const todo = g.member_ids.filter((id) => !g.flagged_ids.includes(id));
    if (!(await confirmDialog(t("fair_flag_all_confirm", { n: todo.length })))) return;
    reasonDialog({
      title: t("fair_flag_all", { n: todo.length }),
      hint: t("fair_flag_hint"),
      reason: spec.reason(g),
      action: "confirm-flag",
      form: "flag",
      work: async (reason) => {
        // one request per member (the API flags one); those done stay done on an error
        try {
          for (const id of todo) {
            await flagMember(id, reason);
            g.flagged_ids.push(id);
          }
        } finally {
          draw();
        }
        toast(t("fair_flagged_n", { n: todo.length }));
      },
    });
  };

  // who each account is; on the phones tab the phone is the group's own, so not repeated
  const memberChip = (g, id) => {
    const who = (g.members || []).find((m) => m.id === id) || {};
    return h(
      "span",
      { class: "badge", "data-chip": id },
      memberLink(id),
      " ",
      memberWho(who.nickname, kind === "phones" ? null : who.phone),
      " ",
      g.flagged_ids.includes(id)
        ? h("span", { class: "badge badge-bad", "data-role": "flagged" }, t("fair_flagged"))
        : h("button", { type: "button", class: "btn-link", "data-action": "flag", onClick: () => flagOne(g, id) }, t("fair_flag")),
    );
  };

  const draw = () =>
    clear(box).append(
      table(
        [
          [spec.value(), (g) => h("code", {}, g.value)],
          [t("fair_accounts"), (g) => num(g.member_count)],
          [t("fair_members"), (g) => h("div", { class: "tag-cloud" }, g.member_ids.map((id) => memberChip(g, id)))],
          [
            t("actions"),
            (g) => {
              const left = g.member_ids.filter((id) => !g.flagged_ids.includes(id)).length;
              return left > 1 ? h("button", { type: "button", class: "btn btn-small", "data-action": "flag-all", onClick: () => flagAll(g) }, t("fair_flag_all", { n: left })) : null;
            },
          ],
        ],
        groups,
        { empty: t("fair_no_groups"), rowAttrs: (g) => ({ "data-group": g.value }) },
      ),
    );

  const load = async () => {
    groups = await api("GET", spec.path, { query: { min_members: minMembers.value, days: days ? days.value : undefined, limit: 50 } });
    draw();
  };
  const find = h("button", { type: "submit", class: "btn btn-primary", "data-action": "find" }, t("fair_find"));
  const filters = h(
    "form",
    {
      class: "filters",
      "data-form": "shared-filter",
      onSubmit: (e) => {
        e.preventDefault();
        busy(find, load);
      },
    },
    field(t("fair_min_members"), minMembers),
    days ? field(t("fair_days"), days) : null,
    find,
  );
  main.append(h("section", { class: "card" }, h("p", { class: "muted small" }, spec.hint()), filters, box));
  await load();
}

export async function render(main, params) {
  const tab = KINDS[params[0]] ? params[0] : "";
  main.append(
    pageHead(t("menu_fair_sales")),
    tabs("fair-sales", tab, [
      ["", t("fair_tab_flags")],
      ["phones", t("fair_tab_phones")],
      ["addresses", t("fair_tab_addresses")],
      ["logins", t("fair_tab_logins")],
    ]),
  );
  if (tab) return sharedTab(main, tab);
  return flagsTab(main);
}
