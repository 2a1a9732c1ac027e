// The console shell: login, role-aware menu, hash routes, language switch.
import { api, logout, session, whenUnauthorized } from "./api.js";
import { h, clear, busy, field, input, showError } from "./dom.js";
import { t, lang, setLang } from "./i18n.js";
import * as dashboard from "./views/dashboard.js";
import * as orders from "./views/orders.js";
import * as members from "./views/members.js";
import * as wallet from "./views/wallet.js";
import * as payrec from "./views/payrec.js";
import * as products from "./views/products.js";
import * as pointsmall from "./views/pointsmall.js";
import * as seckill from "./views/seckill.js";
import * as fairsales from "./views/fairsales.js";
import * as blindbox from "./views/blindbox.js";
import * as coupons from "./views/coupons.js";
import * as importer from "./views/import.js";
import * as segments from "./views/segments.js";
import * as referral from "./views/referral.js";
import * as admin from "./views/admin.js";
import * as rules from "./views/rules.js";
import * as audit from "./views/audit.js";

// `admin: true` entries are for the admin role only (the API refuses ops there too)
const MENU = [
  { path: "dashboard", label: "menu_dashboard", view: dashboard },
  { path: "orders", label: "menu_orders", view: orders },
  { path: "members", label: "menu_members", view: members },
  { path: "wallet", label: "menu_wallet", view: wallet },
  { path: "pay-reconciliation", label: "menu_pay_reconciliation", view: payrec },
  { path: "products", label: "menu_products", view: products },
  { path: "points-mall", label: "menu_points_mall", view: pointsmall },
  { path: "seckill", label: "menu_seckill", view: seckill },
  { path: "fair-sales", label: "menu_fair_sales", view: fairsales },
  { path: "blind-boxes", label: "menu_blind_boxes", view: blindbox },
  { path: "coupons", label: "menu_coupons", view: coupons },
  { path: "import", label: "menu_import", view: importer },
  { path: "segments", label: "menu_segments", view: segments },
  { path: "referral", label: "menu_referral", view: referral },
  { path: "staff", label: "menu_staff", view: admin.staff, admin: true },
  { path: "rules", label: "menu_rules", view: rules, admin: true },
  { path: "audit", label: "menu_audit", view: audit, admin: true },
];

const root = document.getElementById("app");
let cleanup = null;
let renders = 0;

function allowed(entry) {
  return !entry.admin || (session.staff && session.staff.role === "admin");
}

function route() {
  const [path, ...rest] = (location.hash.replace(/^#\/?/, "") || "dashboard").split("/");
  return { path, params: rest };
}

function langSwitch() {
  return h(
    "div",
    { class: "lang-switch", role: "group", "aria-label": "Language" },
    ["zh", "en"].map((code) =>
      h(
        "button",
        {
          type: "button",
          class: `btn-link ${lang() === code ? "is-active" : ""}`,
          "data-lang": code,
          "aria-pressed": String(lang() === code),
          onClick: () => {
            setLang(code);
            render();
          },
        },
        code === "zh" ? "中文" : "English",
      ),
    ),
  );
}

function loginPage() {
  document.title = t("console_title");
  const username = input("username", { autocomplete: "username", required: true, autofocus: true });
  const password = input("password", { type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { class: "btn btn-primary btn-block", type: "submit" }, t("login"));
  const error = h("p", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    {
      class: "login-card",
      onSubmit: (e) => {
        e.preventDefault();
        error.textContent = "";
        busy(submit, async () => {
          try {
            const answer = await api("POST", "/login", { body: { username: username.value.trim(), password: password.value } });
            session.save(answer.token, answer.staff, answer.refresh_token);
            if (!location.hash || location.hash === "#/login") location.hash = "#/dashboard";
            render();
          } catch (err) {
            error.textContent = err.message;
          }
        });
      },
    },
    h("h1", {}, t("console_title")),
    h("p", { class: "muted" }, t("login_hint")),
    field(t("username"), username),
    field(t("password"), password),
    error,
    submit,
    langSwitch(),
  );
  clear(root).append(h("main", { class: "login-page" }, form));
  username.focus();
}

function shell() {
  const staff = session.staff;
  const current = route();
  const entries = MENU.filter(allowed);
  const nav = h(
    "nav",
    { class: "sidebar", "aria-label": t("menu") },
    h("div", { class: "brand" }, t("console_title")),
    h(
      "ul",
      {},
      entries.map((entry) =>
        h(
          "li",
          {},
          h(
            "a",
            {
              href: `#/${entry.path}`,
              "data-menu": entry.path,
              class: entry.path === current.path ? "is-active" : "",
              "aria-current": entry.path === current.path ? "page" : false,
            },
            t(entry.label),
          ),
        ),
      ),
    ),
  );
  const top = h(
    "header",
    { class: "topbar" },
    h("div", { class: "who" }, h("strong", { "data-role": "staff-name" }, staff.username), " ", h("span", { class: "badge", "data-role": "staff-role" }, t(`role_${staff.role}`))),
    langSwitch(),
    h(
      "button",
      {
        type: "button",
        class: "btn",
        "data-action": "logout",
        onClick: async () => {
          await logout();
          location.hash = "";
          render();
        },
      },
      t("logout"),
    ),
  );
  const main = h("main", { class: "content", id: "content", tabindex: "-1" });
  clear(root).append(h("div", { class: "layout" }, nav, h("div", { class: "main-col" }, top, main)));
  return main;
}

function render() {
  document.documentElement.lang = lang() === "en" ? "en" : "zh-CN";
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  if (!session.token || !session.staff) {
    loginPage();
    return;
  }
  const main = shell();
  const { path, params } = route();
  const entry = MENU.find((m) => m.path === path);
  if (!entry || !allowed(entry)) {
    main.append(h("div", { class: "notice" }, entry ? t("not_allowed") : t("not_found")));
    return;
  }
  document.title = `${t(entry.label)} · ${t("console_title")}`;
  const generation = ++renders;
  try {
    const result = entry.view.render(main, params);
    Promise.resolve(result)
      .then((done) => {
        if (typeof done !== "function") return;
        if (generation === renders) cleanup = done;
        else done(); // the page changed while it loaded
      })
      .catch(showError);
  } catch (err) {
    showError(err);
  }
}

whenUnauthorized(() => render());
window.addEventListener("hashchange", render);

// refresh who we are (role changes, a token that lapsed) before the first page
if (session.token) {
  api("GET", "/me")
    .then((staff) => {
      session.save(session.token, staff);
      render();
    })
    .catch(() => render());
} else {
  render();
}
