// Points mall: items (create, edit, pictures, shelf, stock with a reason) and redemptions.
import { api, newKey } from "../api.js";
import { h, clear, busy, field, input, select, modal, table, badge, pageHead, yuan, toFen, fenToText, num, when, toast, showError, isoToLocal, localToIso } from "../dom.js";
import { t } from "../i18n.js";
import { pictureField } from "../upload.js";
import { stockDialog } from "./products.js";

const STATUS_KIND = { on: "good", off: "", draft: "warn", archived: "" };

function editor(item, reload) {
  const creating = !item;
  const it = item || { name: "", kind: "gift", description: "", pictures: [], points_price: "", marked_value_fen: null, total_stock: 0, limit_per_member: 0, level_required: 0, min_points_balance: 0, sort_order: 0, on_shelf_at: null, off_shelf_at: null };
  const key = newKey();
  const f = {
    name: input("name", { value: it.name, required: true, maxlength: "64" }),
    kind: select(
      "kind",
      ["gift", "voucher", "activity"].map((k) => [k, t(`kind_${k}`)]),
      it.kind,
    ),
    points_price: input("points_price", { type: "number", min: "1", step: "1", value: it.points_price, required: true }),
    marked_value: input("marked_value", { inputmode: "decimal", value: fenToText(it.marked_value_fen), placeholder: t("optional") }),
    total_stock: input("total_stock", { type: "number", min: "0", step: "1", value: it.total_stock, required: true }),
    limit_per_member: input("limit_per_member", { type: "number", min: "0", step: "1", value: it.limit_per_member }),
    level_required: input("level_required", { type: "number", min: "0", step: "1", value: it.level_required }),
    min_points_balance: input("min_points_balance", { type: "number", min: "0", step: "1", value: it.min_points_balance }),
    on_shelf_at: input("on_shelf_at", { type: "datetime-local", value: isoToLocal(it.on_shelf_at) }),
    off_shelf_at: input("off_shelf_at", { type: "datetime-local", value: isoToLocal(it.off_shelf_at) }),
    description: h("textarea", { name: "description", rows: "3", maxlength: "5000" }, it.description),
  };
  const onShelf = h("input", { type: "checkbox", name: "on_shelf" });
  const pictures = pictureField(it.pictures, { max: 12 });
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "save" }, t("save"));
  const m = modal(
    creating ? t("new_item") : t("edit_item", { name: it.name }),
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "points-item",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            if (pictures.pending()) throw new Error(t("wait_uploads"));
            let marked = null;
            if (f.marked_value.value.trim()) {
              marked = toFen(f.marked_value.value);
              if (marked === null) throw new Error(t("price_invalid"));
            }
            const body = {
              name: f.name.value.trim(),
              description: f.description.value,
              pictures: pictures.urls(),
              points_price: Number(f.points_price.value),
              marked_value_fen: marked,
              limit_per_member: Number(f.limit_per_member.value || 0),
              level_required: Number(f.level_required.value || 0),
              min_points_balance: Number(f.min_points_balance.value || 0),
              on_shelf_at: localToIso(f.on_shelf_at.value),
              off_shelf_at: localToIso(f.off_shelf_at.value),
            };
            if (creating) {
              Object.assign(body, { kind: f.kind.value, total_stock: Number(f.total_stock.value), on_shelf: onShelf.checked });
              await api("POST", "/points-mall/items", { body, key });
            } else {
              await api("PATCH", `/points-mall/items/${it.id}`, { body });
            }
            toast(t("saved"));
            m.close();
            reload();
          });
        },
      },
      h(
        "div",
        { class: "grid-2" },
        field(t("name"), f.name),
        creating ? field(t("item_kind"), f.kind) : field(t("item_kind"), h("span", {}, t(`kind_${it.kind}`))),
        field(t("points_price"), f.points_price),
        field(t("marked_value_yuan"), f.marked_value),
        creating ? field(t("total_stock"), f.total_stock) : field(t("stock"), h("span", {}, `${num(it.stock)} / ${num(it.total_stock)}`), t("stock_via_adjust")),
        field(t("limit_per_member"), f.limit_per_member, t("zero_no_limit")),
        field(t("level_required"), f.level_required),
        field(t("min_points_balance"), f.min_points_balance, t("min_balance_hint")),
        field(t("shelf_from"), f.on_shelf_at),
        field(t("shelf_until"), f.off_shelf_at),
      ),
      field(t("pictures"), pictures.el, t("pictures_hint")),
      field(t("description"), f.description),
      creating ? h("label", { class: "check" }, onShelf, t("put_on_shelf_now")) : null,
      h("div", { class: "actions" }, submit),
    ),
    { wide: true },
  );
  f.name.focus();
}

async function history(item) {
  const rows = await api("GET", `/points-mall/items/${item.id}/stock-adjustments`);
  modal(
    t("stock_history", { name: item.name }),
    h(
      "div",
      { class: "modal-body" },
      table(
        [
          [t("time"), (a) => when(a.created_at)],
          [t("stock_delta"), (a) => (a.delta > 0 ? `+${a.delta}` : a.delta)],
          [t("total_after"), (a) => num(a.total_after)],
          [t("reason"), (a) => a.reason],
          [t("staff"), (a) => a.staff_username],
        ],
        rows,
      ),
    ),
    { wide: true },
  );
}

function itemsTab(box) {
  const status = select(
    "status",
    [["", t("all")], ...["on", "off", "draft", "archived"].map((s) => [s, t(`status_${s}`)])],
    "",
  );
  const list = h("div", { "data-role": "list" });
  const reload = async () => {
    try {
      const page = await api("GET", "/points-mall/items", { query: { status: status.value, size: 100 } });
      draw(page.items);
    } catch (err) {
      showError(err);
    }
  };
  const draw = (items) =>
    clear(list).append(
      table(
        [
          [t("picture"), (i) => (i.pictures[0] ? h("img", { class: "thumb-sm", src: i.pictures[0], alt: "" }) : h("span", { class: "thumb-sm thumb-none" }))],
          [t("name"), (i) => h("div", {}, h("strong", {}, i.name), h("div", { class: "muted small" }, t(`kind_${i.kind}`)))],
          [t("points_price"), (i) => num(i.points_price)],
          [t("marked_value"), (i) => yuan(i.marked_value_fen)],
          [t("stock"), (i) => h("span", { "data-stock": i.id }, `${num(i.stock)} / ${num(i.total_stock)}`, i.redis_stock !== null && i.redis_stock !== i.stock ? h("small", { class: "muted" }, ` (${t("live")} ${i.redis_stock})`) : null)],
          [t("status"), (i) => badge(t(`status_${i.status}`), STATUS_KIND[i.status])],
          [
            t("actions"),
            (i) =>
              h(
                "div",
                { class: "row-actions" },
                h("button", { type: "button", class: "btn btn-small", "data-action": "edit", onClick: () => editor(i, reload) }, t("edit")),
                h(
                  "button",
                  {
                    type: "button",
                    class: "btn btn-small",
                    "data-action": "adjust-stock",
                    onClick: () => stockDialog(t("adjust_stock"), i.stock, (delta, reason, key) => api("POST", `/points-mall/items/${i.id}/stock-adjustments`, { body: { delta, reason }, key }), reload),
                  },
                  t("adjust_stock"),
                ),
                h("button", { type: "button", class: "btn btn-small", onClick: () => history(i).catch(showError) }, t("history")),
                i.status === "archived"
                  ? null
                  : h(
                      "button",
                      {
                        type: "button",
                        class: "btn btn-small",
                        "data-action": i.status === "on" ? "off-shelf" : "on-shelf",
                        onClick: (e) =>
                          busy(e.currentTarget, async () => {
                            await api("POST", `/points-mall/items/${i.id}/${i.status === "on" ? "off-shelf" : "on-shelf"}`);
                            toast(i.status === "on" ? t("taken_off") : t("put_on"));
                            reload();
                          }),
                      },
                      i.status === "on" ? t("take_off_shelf") : t("put_on_shelf"),
                    ),
              ),
          ],
        ],
        items,
        { rowAttrs: (i) => ({ "data-id": i.id }) },
      ),
    );
  status.addEventListener("change", reload);
  clear(box).append(
    h("div", { class: "filters" }, status, h("button", { type: "button", class: "btn btn-primary", "data-action": "new", onClick: () => editor(null, reload) }, t("new_item"))),
    list,
  );
  return reload();
}

async function download(path, query, filename) {
  const response = await api("GET", path, { query, raw: true });
  const url = URL.createObjectURL(await response.blob());
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function shipDialog(r, reload) {
  const carrier = input("carrier", { required: true, maxlength: "32", placeholder: "SF" });
  const number = input("tracking_number", { required: true, maxlength: "64" });
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, t("save"));
  const m = modal(
    t("ship"),
    h(
      "form",
      {
        class: "modal-body form",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            await api("POST", `/points-mall/redemptions/${r.id}/ship`, { body: { carrier: carrier.value.trim(), tracking_number: number.value.trim() } });
            toast(t("saved"));
            m.close();
            reload();
          });
        },
      },
      field(t("carrier"), carrier),
      field(t("tracking_number"), number),
      h("div", { class: "actions" }, submit),
    ),
  );
}

function redemptionsTab(box) {
  const list = h("div", { "data-role": "list" });
  const reload = async () => {
    try {
      const page = await api("GET", "/points-mall/redemptions", { query: { size: 100 } });
      clear(list).append(
        table(
          [
            [t("time"), (r) => when(r.created_at)],
            [t("member"), (r) => `#${r.member_id}`],
            [t("item"), (r) => `${r.item_name} × ${r.quantity}`],
            [t("points"), (r) => num(r.points_spent)],
            [t("status"), (r) => badge(r.status)],
            [t("address"), (r) => (r.address ? `${r.address.name || ""} ${r.address.phone || ""}` : "—")],
            [t("shipping"), (r) => (r.tracking_number ? `${r.carrier} ${r.tracking_number}` : "—")],
            [
              t("actions"),
              (r) =>
                r.kind === "gift" && !r.shipped_at && !r.cancelled_at
                  ? h("button", { type: "button", class: "btn btn-small", onClick: () => shipDialog(r, reload) }, t("ship"))
                  : "",
            ],
          ],
          page.items,
        ),
      );
    } catch (err) {
      showError(err);
    }
  };
  const exportBtn = h("button", { type: "button", class: "btn" }, t("export_csv"));
  exportBtn.addEventListener("click", () => busy(exportBtn, () => download("/points-mall/redemptions/export", {}, "redemptions.csv")));
  clear(box).append(h("div", { class: "filters" }, exportBtn), list);
  return reload();
}

export async function render(main) {
  const box = h("div", {});
  const tabs = [
    ["items", t("tab_items"), itemsTab],
    ["redemptions", t("tab_redemptions"), redemptionsTab],
  ];
  const bar = h("div", { class: "tabs", role: "tablist" });
  const open = (name) => {
    for (const b of bar.children) b.setAttribute("aria-selected", String(b.dataset.tab === name));
    const [, , fn] = tabs.find(([n]) => n === name);
    return fn(box);
  };
  for (const [name, label] of tabs) bar.append(h("button", { type: "button", role: "tab", "data-tab": name, onClick: () => open(name) }, label));
  main.append(pageHead(t("menu_points_mall")), bar, box);
  await open("items");
}
