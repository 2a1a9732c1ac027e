// Catalog products: list, create, edit, pictures, on/off shelf, SKUs and stock.
import { api, newKey } from "../api.js";
import { h, clear, busy, field, input, select, modal, table, badge, pageHead, yuan, toFen, fenToText, num, toast, showError } from "../dom.js";
import { t } from "../i18n.js";
import { pictureField } from "../upload.js";

const MODES = ["express", "same_city", "pickup"];

function parseSpecs(text) {
  const specs = {};
  for (const part of String(text || "").split(/[,，;；]/)) {
    if (!part.trim()) continue;
    const [k, ...v] = part.split(/[:：=]/);
    if (!k.trim() || !v.join("").trim()) throw new Error(t("specs_format"));
    specs[k.trim()] = v.join(":").trim();
  }
  return specs;
}

const specsText = (specs) =>
  Object.entries(specs || {})
    .map(([k, v]) => `${k}:${v}`)
    .join(", ");

/** A stock adjustment dialog (delta and a reason); `send(delta, reason, key)` posts it. */
export function stockDialog(title, current, send, after) {
  const key = newKey();
  const delta = input("delta", { type: "number", step: "1", required: true, placeholder: "+50 / -3" });
  const reason = input("reason", { required: true, maxlength: "200", placeholder: t("reason_placeholder") });
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, t("save"));
  const m = modal(
    title,
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "stock",
        onSubmit: (e) => {
          e.preventDefault();
          const n = Number(delta.value);
          if (!Number.isInteger(n) || n === 0) return showError(new Error(t("delta_nonzero")));
          if (!reason.value.trim()) return showError(new Error(t("reason_required")));
          return busy(submit, async () => {
            await send(n, reason.value.trim(), key);
            toast(t("saved"));
            m.close();
            after();
          });
        },
      },
      h("p", {}, t("stock_now", { n: num(current) })),
      field(t("stock_delta"), delta, t("stock_delta_hint")),
      field(t("reason"), reason),
      h("div", { class: "actions" }, submit),
    ),
  );
  delta.focus();
}

async function categories() {
  try {
    return await api("GET", "/categories");
  } catch (err) {
    return [];
  }
}

function skuRows(container) {
  const rows = [];
  const body = h("tbody");
  const add = () => {
    const row = {
      specs: input("sku_specs", { placeholder: t("specs_placeholder") }),
      price: input("sku_price", { inputmode: "decimal", placeholder: "0.00", required: true }),
      stock: input("sku_stock", { type: "number", min: "0", step: "1", value: "0" }),
      code: input("sku_code", { placeholder: t("optional") }),
    };
    const tr = h(
      "tr",
      {},
      h("td", {}, row.specs),
      h("td", {}, row.price),
      h("td", {}, row.stock),
      h("td", {}, row.code),
      h(
        "td",
        {},
        h(
          "button",
          {
            type: "button",
            class: "btn-icon",
            "aria-label": t("remove"),
            onClick: () => {
              rows.splice(rows.indexOf(row), 1);
              tr.remove();
            },
          },
          "×",
        ),
      ),
    );
    rows.push(row);
    body.append(tr);
  };
  container.append(
    h("table", { class: "table table-edit" }, h("thead", {}, h("tr", {}, [t("specs"), t("price_yuan"), t("initial_stock"), t("sku_code"), ""].map((x) => h("th", {}, x)))), body),
    h("button", { type: "button", class: "btn btn-small", "data-action": "add-sku", onClick: add }, t("add_sku")),
  );
  add();
  return () =>
    rows.map((r) => {
      const price = toFen(r.price.value);
      if (price === null) throw new Error(t("price_invalid"));
      const sku = { specs: parseSpecs(r.specs.value), price, stock: Number(r.stock.value || 0) };
      if (r.code.value.trim()) sku.code = r.code.value.trim();
      return sku;
    });
}

async function editor(product, reload) {
  const cats = await categories();
  const creating = !product;
  const p = product || { name: "", subtitle: "", description: "", category_id: null, images: [], list_price: null, delivery_modes: ["express"], on_shelf: false, skus: [] };
  const key = newKey();
  const name = input("name", { value: p.name, required: true, maxlength: "60" });
  const subtitle = input("subtitle", { value: p.subtitle, maxlength: "120" });
  const price = input("list_price", { value: fenToText(p.list_price), inputmode: "decimal", required: true, placeholder: "0.00" });
  const category = select("category_id", [["", t("none")], ...cats.map((c) => [c.id, c.name])], p.category_id);
  const description = h("textarea", { name: "description", rows: "4", maxlength: "20000" }, p.description);
  const modes = MODES.map((m) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "delivery_modes", value: m, checked: p.delivery_modes.includes(m) }), t(`mode_${m}`)));
  const onShelf = h("input", { type: "checkbox", name: "on_shelf", checked: p.on_shelf });
  const pictures = pictureField(p.images, { max: 20, name: "images" });
  const skuBox = h("div", { class: "sku-box" });
  const readSkus = creating ? skuRows(skuBox) : null;
  const submit = h("button", { class: "btn btn-primary", type: "submit", "data-action": "save" }, t("save"));
  const m = modal(
    creating ? t("new_product") : t("edit_product", { name: p.name }),
    h(
      "form",
      {
        class: "modal-body form",
        "data-form": "product",
        onSubmit: (e) => {
          e.preventDefault();
          busy(submit, async () => {
            if (pictures.pending()) throw new Error(t("wait_uploads"));
            const listPrice = toFen(price.value);
            if (listPrice === null) throw new Error(t("price_invalid"));
            const chosen = modes.map((l) => l.querySelector("input")).filter((c) => c.checked).map((c) => c.value);
            const body = {
              name: name.value.trim(),
              subtitle: subtitle.value.trim(),
              description: description.value,
              category_id: category.value ? Number(category.value) : null,
              images: pictures.urls(),
              list_price: listPrice,
              delivery_modes: chosen.length ? chosen : ["express"],
            };
            if (creating) {
              body.on_shelf = onShelf.checked;
              body.skus = readSkus();
              await api("POST", "/products", { body, key });
            } else {
              await api("PATCH", `/products/${p.id}`, { body });
            }
            toast(t("saved"));
            m.close();
            reload();
          });
        },
      },
      h("div", { class: "grid-2" }, field(t("name"), name), field(t("subtitle"), subtitle), field(t("list_price_yuan"), price), field(t("category"), category)),
      field(t("pictures"), pictures.el, t("pictures_hint")),
      field(t("description"), description),
      h("div", { class: "field" }, h("span", { class: "field-label" }, t("delivery")), h("div", { class: "checks" }, modes)),
      creating ? h("label", { class: "check" }, onShelf, t("put_on_shelf_now")) : null,
      creating ? h("div", { class: "field" }, h("span", { class: "field-label" }, t("skus")), skuBox) : null,
      h("div", { class: "actions" }, submit),
    ),
    { wide: true },
  );
  name.focus();
}

function skuDialog(product, reload) {
  const box = h("div", { class: "modal-body" });
  const m = modal(t("skus_of", { name: product.name }), box, { wide: true });
  const draw = (p) => {
    const addBox = h("div", { class: "sku-box" });
    const readNew = skuRows(addBox);
    const addBtn = h("button", { type: "button", class: "btn btn-primary" }, t("save_new_skus"));
    addBtn.addEventListener("click", () =>
      busy(addBtn, async () => {
        for (const sku of readNew()) await api("POST", `/products/${p.id}/skus`, { body: sku, key: newKey() });
        toast(t("saved"));
        refresh();
      }),
    );
    clear(box).append(
      table(
        [
          [t("specs"), (s) => specsText(s.specs) || t("default_sku")],
          [t("sku_code"), (s) => s.code || "—"],
          [t("price"), (s) => yuan(s.price)],
          [t("stock"), (s) => h("span", { "data-stock": s.id }, num(s.stock))],
          [
            "",
            (s) =>
              h(
                "button",
                {
                  type: "button",
                  class: "btn btn-small",
                  "data-action": "adjust-stock",
                  onClick: () => stockDialog(t("adjust_stock"), s.stock, (delta, reason, key) => api("POST", `/skus/${s.id}/stock`, { body: { delta, reason }, key }), refresh),
                },
                t("adjust_stock"),
              ),
          ],
        ],
        p.skus,
      ),
      h("h3", {}, t("add_sku")),
      addBox,
      h("div", { class: "actions" }, addBtn),
    );
  };
  const refresh = async () => {
    try {
      draw(await api("GET", `/products/${product.id}`));
      reload();
    } catch (err) {
      showError(err);
    }
  };
  draw(product);
  return m;
}

export async function render(main) {
  const q = input("q", { type: "search", placeholder: t("search_name") });
  const shelf = select(
    "on_shelf",
    [
      ["", t("all")],
      ["true", t("on_shelf")],
      ["false", t("off_shelf")],
    ],
    "",
  );
  const list = h("div", { "data-role": "list" });
  const more = h("button", { type: "button", class: "btn", hidden: true }, t("load_more"));
  let cursor = null;
  let rows = [];

  const draw = () => {
    clear(list).append(
      table(
        [
          [t("picture"), (p) => (p.images[0] ? h("img", { class: "thumb-sm", src: p.images[0], alt: "" }) : h("span", { class: "thumb-sm thumb-none" }))],
          [t("name"), (p) => h("div", {}, h("strong", {}, p.name), h("div", { class: "muted small" }, p.subtitle))],
          [t("list_price"), (p) => yuan(p.list_price)],
          [t("skus"), (p) => num(p.skus.length)],
          [t("stock"), (p) => num(p.skus.reduce((a, s) => a + s.stock, 0))],
          [t("status"), (p) => (p.on_shelf ? badge(t("on_shelf"), "good") : badge(t("off_shelf")))],
          [
            t("actions"),
            (p) =>
              h(
                "div",
                { class: "row-actions" },
                h("button", { type: "button", class: "btn btn-small", "data-action": "edit", onClick: () => editor(p, reload) }, t("edit")),
                h("button", { type: "button", class: "btn btn-small", "data-action": "skus", onClick: () => skuDialog(p, reload) }, t("skus_stock")),
                h(
                  "button",
                  {
                    type: "button",
                    class: "btn btn-small",
                    "data-action": p.on_shelf ? "off-shelf" : "on-shelf",
                    onClick: (e) =>
                      busy(e.currentTarget, async () => {
                        await api("POST", `/products/${p.id}/${p.on_shelf ? "off-shelf" : "on-shelf"}`);
                        toast(p.on_shelf ? t("taken_off") : t("put_on"));
                        reload();
                      }),
                  },
                  p.on_shelf ? t("take_off_shelf") : t("put_on_shelf"),
                ),
              ),
          ],
        ],
        rows,
        { rowAttrs: (p) => ({ "data-id": p.id }) },
      ),
    );
    more.hidden = !cursor;
  };
  const fetchPage = async (reset) => {
    const page = await api("GET", "/products", { query: { q: q.value.trim(), on_shelf: shelf.value, cursor: reset ? null : cursor, size: 20 } });
    rows = reset ? page.items : rows.concat(page.items);
    cursor = page.next_cursor;
    draw();
  };
  const reload = () => fetchPage(true).catch(showError);
  more.addEventListener("click", () => busy(more, () => fetchPage(false)));
  q.addEventListener("change", reload);
  shelf.addEventListener("change", reload);
  main.append(
    pageHead(t("menu_products"), h("button", { type: "button", class: "btn btn-primary", "data-action": "new", onClick: () => editor(null, reload).catch(showError) }, t("new_product"))),
    h("div", { class: "filters" }, q, shelf),
    list,
    more,
  );
  await fetchPage(true);
}
