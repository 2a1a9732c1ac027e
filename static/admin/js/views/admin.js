// Admin-only pages: staff accounts here; the points rules (rules.js) and the audit log
// (audit.js) have their own modules. The API refuses ops too; the menu only hides them.
import { api } from "../api.js";
import { h, clear, busy, field, input, select, table, badge, pageHead, toast } from "../dom.js";
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
