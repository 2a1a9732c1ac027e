// Small DOM helpers. No inline style attributes anywhere: the page's CSP forbids them.
import { t, lang } from "./i18n.js";

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "value" && "value" in el && el.namespaceURI !== SVG_NS) {
      el.value = value;
    } else if (name === "checked" || name === "selected" || name === "disabled") {
      el[name] = Boolean(value);
      if (value) el.setAttribute(name, "");
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** h("button", {class: "btn", onClick}, "Save") */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// --- messages -----------------------------------------------------------------

let toastBox = null;

export function toast(message, kind = "ok") {
  if (!toastBox) {
    toastBox = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(toastBox);
  }
  const item = h("div", { class: `toast toast-${kind}` }, message);
  toastBox.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 3500);
}

/** Shows an API error: its message, and each field's problem. */
export function showError(err) {
  const text = err && err.message ? err.message : String(err);
  const fields = (err && err.fields) || [];
  const detail = fields.map((f) => `${f.field}: ${f.message}`).join("; ");
  toast(detail ? `${text} (${detail})` : text, "error");
}

// --- modal dialogs ------------------------------------------------------------

/** Opens a dialog; returns {close}. `body` is a node; the dialog closes on Escape. */
export function modal(title, body, { wide = false } = {}) {
  const dialog = h("dialog", { class: wide ? "modal modal-wide" : "modal" });
  const close = () => {
    dialog.close();
    dialog.remove();
  };
  dialog.append(
    h(
      "header",
      { class: "modal-head" },
      h("h2", {}, title),
      h("button", { class: "btn-icon", type: "button", "aria-label": t("close"), onClick: close }, "×"),
    ),
    body,
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return { close, dialog };
}

export function confirmDialog(message) {
  return new Promise((resolve) => {
    const done = (answer) => {
      m.close();
      resolve(answer);
    };
    const m = modal(
      t("confirm"),
      h(
        "div",
        { class: "modal-body" },
        h("p", {}, message),
        h(
          "div",
          { class: "actions" },
          h("button", { class: "btn", type: "button", onClick: () => done(false) }, t("cancel")),
          h("button", { class: "btn btn-primary", type: "button", onClick: () => done(true) }, t("ok")),
        ),
      ),
    );
  });
}

// --- forms ----------------------------------------------------------------------

/** A labelled field. `input` is any control; `hint` shows under it. */
export function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), input, hint ? h("small", {}, hint) : null);
}

export function input(name, attrs = {}) {
  return h("input", { name, id: `f-${name}`, ...attrs });
}

export function select(name, options, value) {
  return h(
    "select",
    { name, id: `f-${name}` },
    options.map(([v, label]) => h("option", { value: v, selected: String(v) === String(value ?? "") }, label)),
  );
}

/** Busy state for a button while `work` runs; errors are shown, not thrown. */
export async function busy(button, work) {
  if (button.disabled) return undefined;
  button.disabled = true;
  button.classList.add("is-busy");
  try {
    return await work();
  } catch (err) {
    showError(err);
    return undefined;
  } finally {
    button.disabled = false;
    button.classList.remove("is-busy");
  }
}

// --- formatting -----------------------------------------------------------------

export function yuan(fen) {
  if (fen === null || fen === undefined) return "—";
  const sign = fen < 0 ? "-" : "";
  const abs = Math.abs(fen);
  const whole = Math.floor(abs / 100).toLocaleString(lang() === "en" ? "en-US" : "zh-CN");
  return `${sign}¥${whole}.${String(abs % 100).padStart(2, "0")}`;
}

/** "12.5" -> 1250 fen; exact (no floating point); null when not a money amount. */
export function toFen(text) {
  const m = /^\s*(\d{1,9})(?:\.(\d{1,2}))?\s*$/.exec(String(text ?? ""));
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] || "0").padEnd(2, "0"));
}

export function fenToText(fen) {
  if (fen === null || fen === undefined) return "";
  return `${Math.floor(fen / 100)}.${String(fen % 100).padStart(2, "0")}`;
}

export function num(n) {
  if (n === null || n === undefined) return "—";
  return Number(n).toLocaleString(lang() === "en" ? "en-US" : "zh-CN");
}

export function pct(rate, digits = 1) {
  if (rate === null || rate === undefined) return "—";
  return `${(rate * 100).toFixed(digits)}%`;
}

const TZ = "Asia/Shanghai";

export function when(iso) {
  if (!iso) return "—";
  return new Intl.DateTimeFormat(lang() === "en" ? "en-GB" : "zh-CN", {
    timeZone: TZ,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  }).format(new Date(iso));
}

/** A datetime-local value ("2025-06-01T10:00") read as Shanghai time -> ISO with offset. */
export function localToIso(value) {
  if (!value) return null;
  const withSeconds = value.length === 16 ? `${value}:00` : value;
  return `${withSeconds}+08:00`;
}

/** ISO -> datetime-local value in Shanghai time. */
export function isoToLocal(iso) {
  if (!iso) return "";
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: TZ,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  }).formatToParts(new Date(iso));
  const get = (type) => parts.find((p) => p.type === type).value;
  const hour = get("hour") === "24" ? "00" : get("hour");
  return `${get("year")}-${get("month")}-${get("day")}T${hour}:${get("minute")}`;
}

/** A table from rows; `columns` are [header, row => cell]. */
export function table(columns, rows, { empty, rowAttrs } = {}) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table" },
      h("thead", {}, h("tr", {}, columns.map(([head]) => h("th", {}, head)))),
      h(
        "tbody",
        {},
        rows.length
          ? rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map(([, cell]) => h("td", {}, cell(row)))))
          : h("tr", {}, h("td", { class: "empty", colspan: columns.length }, empty || t("empty"))),
      ),
    ),
  );
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind ? `badge-${kind}` : ""}` }, text);
}

export function pageHead(title, ...actions) {
  return h("div", { class: "page-head" }, h("h1", {}, title), h("div", { class: "actions" }, actions));
}

/** Calls `fn` every `ms` while `el` is on the page (stops by itself when it is gone). */
export function poll(el, fn, ms) {
  let timer = null;
  const tick = async () => {
    if (!el.isConnected) return;
    try {
      await fn();
    } catch (err) {
      /* a failed refresh is retried on the next tick */
    }
    if (el.isConnected) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => clearTimeout(timer);
}
