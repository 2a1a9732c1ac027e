// Admin-only pages: staff accounts, earning rules, audit log. The API refuses ops
// here too; the menu only hides them.
import { api } from "../api.js";
import { h, clear, busy, field, input, select, table, badge, pageHead, when, toast, showError } from "../dom.js";
import { t } from "../i18n.js";

export const staff = {
  async render(main) {
    const list = h("div", { "data-role": "list" });
    const reload = async () => {
      const rows = await api("GET", "/staff");
      clear(list).append(
        table(
          [
            ["ID", (s) => s.id],
            [t("username"), (s) => s.username],
            [t("role"), (s) => badge(t(`role_${s.role}`), s.role === "admin" ? "warn" : "")],
            [t("status"), (s) => (s.active === false ? badge(t("inactive")) : badge(t("active"), "good"))],
          ],
          rows,
        ),
      );
    };
    const username = input("new_username", { required: true, minlength: "3", maxlength: "64", autocomplete: "off" });
    const password = input("new_password", { type: "password", required: true, minlength: "8", autocomplete: "new-password" });
    const role = select(
      "role",
      [
        ["ops", t("role_ops")],
        ["admin", t("role_admin")],
      ],
      "ops",
    );
    const submit = h("button", { class: "btn btn-primary", type: "submit" }, t("create"));
    const form = h(
      "form",
      {
        class: "card form",
        "data-form": "staff",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            await api("POST", "/staff", { body: { username: username.value.trim(), password: password.value, role: role.value } });
            toast(t("saved"));
            form.reset();
            await reload();
          });
        },
      },
      h("h2", {}, t("new_staff")),
      h("div", { class: "grid-3" }, field(t("username"), username), field(t("password"), password, t("password_hint")), field(t("role"), role)),
      h("div", { class: "actions" }, submit),
    );
    main.append(pageHead(t("menu_staff")), list, form);
    await reload();
  },
};

export const rules = {
  async render(main) {
    const editor = h("textarea", { class: "code", name: "rules", rows: "28", spellcheck: "false" });
    const meta = h("p", { class: "muted" });
    let version = null;
    const load = async () => {
      const r = await api("GET", "/rules");
      version = r.version;
      editor.value = JSON.stringify(r.rules, null, 2);
      meta.textContent = t("rules_version", { v: r.version, at: when(r.updated_at) });
    };
    const save = h("button", { type: "button", class: "btn btn-primary", "data-action": "save" }, t("save"));
    save.addEventListener("click", () =>
      busy(save, async () => {
        let doc;
        try {
          doc = JSON.parse(editor.value);
        } catch (err) {
          throw new Error(t("json_invalid", { error: err.message }));
        }
        await api("PUT", "/rules", { body: { rules: doc, base_version: version } });
        toast(t("saved"));
        await load();
      }),
    );
    main.append(pageHead(t("menu_rules"), save), h("section", { class: "card" }, h("p", {}, t("rules_help")), meta, editor));
    await load();
  },
};

export const audit = {
  async render(main) {
    const action = input("action", { placeholder: t("filter_action") });
    const list = h("div", { "data-role": "list" });
    const reload = async () => {
      const rows = await api("GET", "/audit-log", { query: { action: action.value.trim(), limit: 200 } });
      clear(list).append(
        table(
          [
            [t("time"), (a) => when(a.created_at)],
            [t("staff"), (a) => a.staff_username],
            [t("action"), (a) => h("code", {}, a.action)],
            [t("target"), (a) => a.target],
            [t("detail"), (a) => h("code", { class: "detail" }, JSON.stringify(a.detail))],
          ],
          rows,
        ),
      );
    };
    action.addEventListener("change", () => reload().catch(showError));
    main.append(pageHead(t("menu_audit")), h("div", { class: "filters" }, action), list);
    await reload();
  },
};
