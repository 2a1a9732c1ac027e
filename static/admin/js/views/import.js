// Marketplace order import: upload a CSV (or JSON) export; row-level errors are listed.
import { api } from "../api.js";
import { h, clear, table, pageHead, num, toast, showError } from "../dom.js";
import { t } from "../i18n.js";
import { fileDrop } from "../upload.js";

const SAMPLE = "platform,order_no,phone,paid_fen,paid_at,status\ntmall,TM20250601001,13800138000,19900,2025-06-01 10:00:00,completed\n";

export async function render(main) {
  const result = h("div", { "data-role": "import-result" });
  const status = h("p", { class: "muted", "data-role": "import-status" });
  const send = async (file) => {
    status.textContent = t("importing", { name: file.name });
    clear(result);
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const out = await api("POST", "/external-orders/import", { form });
      status.textContent = t("imported_file", { name: file.name });
      result.append(
        h(
          "div",
          { class: "kpis" },
          [
            ["rows", out.rows],
            ["created", out.created],
            ["updated", out.updated],
            ["unchanged", out.unchanged],
            ["errors", out.errors.length],
          ].map(([k, v]) => h("div", { class: `kpi ${k === "errors" && v ? "kpi-bad" : ""}`, "data-kpi": k }, h("span", { class: "kpi-label" }, t(`import_${k}`)), h("strong", { class: "kpi-value" }, num(v)))),
        ),
        out.errors.length
          ? h(
              "section",
              { class: "card" },
              h("h2", {}, t("row_errors")),
              table(
                [
                  [t("row"), (e) => num(e.row)],
                  [t("order_no"), (e) => e.order_no || "—"],
                  [t("code"), (e) => h("code", {}, e.code)],
                  [t("message"), (e) => e.message],
                ],
                out.errors,
                { rowAttrs: (e) => ({ "data-row": e.row }) },
              ),
            )
          : h("div", { class: "notice notice-ok" }, t("no_row_errors")),
      );
      toast(t("import_done", { rows: num(out.rows), errors: num(out.errors.length) }), out.errors.length ? "warn" : "ok");
    } catch (err) {
      status.textContent = "";
      showError(err);
    }
  };
  const sample = h("a", { href: `data:text/csv;charset=utf-8,${encodeURIComponent(SAMPLE)}`, download: "orders-sample.csv" }, t("download_sample"));
  main.append(
    pageHead(t("menu_import")),
    h("section", { class: "card" }, h("p", {}, t("import_help")), h("p", { class: "muted small" }, h("code", {}, "platform, order_no, phone, paid_fen, paid_at, status"), " · ", sample), fileDrop({ accept: ".csv,.json,text/csv,application/json", label: t("drop_csv"), onFile: send }), status),
    result,
  );
}
