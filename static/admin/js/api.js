// The admin API client: bearer token from sessionStorage, language from the console's
// switch (server messages come back in it), errors as ApiError {status, code, message}.
import { lang } from "./i18n.js";

const BASE = "/api/admin/v1";
const TOKEN = "mall.console.token";
const STAFF = "mall.console.staff";

export class ApiError extends Error {
  constructor(status, code, message, fields) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields || [];
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN);
  },
  get staff() {
    const raw = sessionStorage.getItem(STAFF);
    return raw ? JSON.parse(raw) : null;
  },
  save(token, staff) {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(STAFF, JSON.stringify(staff));
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(STAFF);
  },
};

let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** A fresh Idempotency-Key (works on plain http too, unlike crypto.randomUUID). */
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * api("GET", "/products", {query}) / api("POST", "/products", {body, key}) /
 * api("POST", "/uploads/images", {form})
 */
export async function api(method, path, { body, form, query, key, raw } = {}) {
  const headers = { "Accept-Language": lang() === "en" ? "en" : "zh-CN" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (key) headers["Idempotency-Key"] = key;
  let payload;
  if (form) {
    payload = form;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let url = BASE + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") params.set(k, v);
    }
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload });
  } catch (err) {
    throw new ApiError(0, "NETWORK", lang() === "en" ? "Network error: the server cannot be reached" : "网络错误：无法连接服务器");
  }
  if (response.status === 401 && path !== "/login") {
    session.clear();
    onUnauthorized();
  }
  if (!response.ok) {
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch (_) {
      /* not JSON */
    }
    throw new ApiError(response.status, error.code || `HTTP_${response.status}`, error.message || response.statusText, error.fields);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** Every page of a cursor-paginated list (bounded, for small admin lists). */
export async function allPages(path, query = {}, limit = 10) {
  const items = [];
  let cursor;
  for (let i = 0; i < limit; i += 1) {
    const page = await api("GET", path, { query: { ...query, cursor } });
    items.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return items;
}
