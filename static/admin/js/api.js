// The admin API client: bearer token from sessionStorage (renewed with the refresh token
// when it expires), language from the console's switch (server messages come back in it),
// errors as ApiError {status, code, message}.
import { lang } from "./i18n.js";

const BASE = "/api/admin/v1";
const TOKEN = "mall.console.token";
const STAFF = "mall.console.staff";
const REFRESH = "mall.console.refresh";
// routes that must not trigger a token renewal
const NO_RENEW = new Set(["/login", "/refresh"]);

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
  get refreshToken() {
    return sessionStorage.getItem(REFRESH);
  },
  get staff() {
    const raw = sessionStorage.getItem(STAFF);
    return raw ? JSON.parse(raw) : null;
  },
  /** After a login (with its refresh token) or a /me (the tokens stay). */
  save(token, staff, refreshToken) {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(STAFF, JSON.stringify(staff));
    if (refreshToken !== undefined) sessionStorage.setItem(REFRESH, refreshToken);
  },
  setTokens(token, refreshToken) {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(REFRESH, refreshToken);
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(REFRESH);
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

function networkError() {
  return new ApiError(0, "NETWORK", lang() === "en" ? "Network error: the server cannot be reached" : "网络错误：无法连接服务器");
}

// Access tokens last minutes; an expired one is renewed with the refresh token. Each
// refresh token works once (a second use ends the session on the server), so every
// request that finds its token expired waits on the same renewal.
let renewing = null;
function renew() {
  if (!renewing) {
    const refreshToken = session.refreshToken;
    renewing = (async () => {
      if (!refreshToken) return false;
      try {
        const response = await fetch(`${BASE}/refresh`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ refresh_token: refreshToken }),
        });
        if (!response.ok) return false;
        const answer = await response.json();
        // a logout (or a login) while this was under way: its answer is not this tab's
        if (session.refreshToken !== refreshToken) return false;
        session.setTokens(answer.token, answer.refresh_token);
        return true;
      } catch (_) {
        return false;
      }
    })().finally(() => {
      renewing = null;
    });
  }
  return renewing;
}

async function errorCode(response) {
  try {
    return ((await response.clone().json()).error || {}).code || "";
  } catch (_) {
    return "";
  }
}

/**
 * api("GET", "/products", {query}) / api("POST", "/products", {body, key}) /
 * api("POST", "/uploads/images", {form})
 */
export async function api(method, path, { body, form, query, key, raw } = {}) {
  let payload;
  let contentType;
  if (form) {
    payload = form;
  } else if (body !== undefined) {
    contentType = "application/json";
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
  const send = async () => {
    const headers = { "Accept-Language": lang() === "en" ? "en" : "zh-CN" };
    if (session.token) headers.Authorization = `Bearer ${session.token}`;
    if (key) headers["Idempotency-Key"] = key;
    if (contentType) headers["Content-Type"] = contentType;
    try {
      return await fetch(url, { method, headers, body: payload });
    } catch (err) {
      throw networkError();
    }
  };
  let response = await send();
  if (response.status === 401 && !NO_RENEW.has(path)) {
    // only an expired token is renewed: a revoked session stays ended
    if ((await errorCode(response)) === "TOKEN_EXPIRED" && (await renew())) {
      response = await send();
    }
    if (response.status === 401) {
      session.clear();
      onUnauthorized();
    }
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

/** End the session on the server (its tokens stop working), then forget it here. */
export async function logout() {
  if (session.token) {
    try {
      await api("POST", "/logout");
    } catch (_) {
      /* already ended, or offline: forget it anyway */
    }
  }
  session.clear();
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
