// Pictures: drop files (or pick them), see a preview at once, upload each through
// POST /uploads/images and keep the stored URL. Reorder by dragging thumbnails.
import { api } from "./api.js";
import { h, clear, showError } from "./dom.js";
import { t } from "./i18n.js";

const TYPES = ["image/jpeg", "image/png", "image/webp"];

/** Returns {el, urls(), pending()}; `urls()` are the stored pictures, in order. */
export function pictureField(initial = [], { max = 12, name = "pictures" } = {}) {
  let entries = initial.map((url) => ({ url, preview: url, state: "done" }));
  const grid = h("div", { class: "thumbs" });
  const picker = h("input", { type: "file", accept: TYPES.join(","), multiple: max > 1, class: "visually-hidden", "data-role": "file-input" });
  const zone = h(
    "div",
    { class: "dropzone", tabindex: "0", role: "button", "data-role": "dropzone", "aria-label": t("drop_pictures") },
    h("strong", {}, t("drop_pictures")),
    h("small", {}, t("picture_rules")),
    picker,
  );
  const el = h("div", { class: "pictures", "data-field": name }, grid, zone);

  function render() {
    clear(grid);
    entries.forEach((entry, index) => {
      const thumb = h(
        "figure",
        { class: `thumb is-${entry.state}`, draggable: "true", "data-index": index },
        h("img", { src: entry.preview, alt: "" }),
        entry.state === "uploading" ? h("figcaption", {}, t("uploading")) : null,
        entry.state === "failed" ? h("figcaption", { class: "error" }, entry.error || t("upload_failed")) : null,
        index === 0 && entry.state === "done" ? h("figcaption", { class: "cover" }, t("cover")) : null,
        h(
          "button",
          {
            type: "button",
            class: "thumb-remove",
            "aria-label": t("remove"),
            onClick: () => {
              entries.splice(index, 1);
              render();
            },
          },
          "×",
        ),
      );
      thumb.addEventListener("dragstart", (e) => {
        e.dataTransfer.setData("text/x-thumb", String(index));
      });
      thumb.addEventListener("dragover", (e) => {
        if (e.dataTransfer.types.includes("text/x-thumb")) e.preventDefault();
      });
      thumb.addEventListener("drop", (e) => {
        const from = e.dataTransfer.getData("text/x-thumb");
        if (from === "") return;
        e.preventDefault();
        e.stopPropagation();
        const [moved] = entries.splice(Number(from), 1);
        entries.splice(index, 0, moved);
        render();
      });
      grid.append(thumb);
    });
    zone.classList.toggle("is-full", entries.length >= max);
  }

  async function add(files) {
    for (const file of files) {
      if (entries.length >= max) {
        showError(new Error(t("too_many_pictures", { max })));
        break;
      }
      if (!TYPES.includes(file.type)) {
        showError(new Error(t("picture_type", { name: file.name })));
        continue;
      }
      const entry = { url: null, preview: URL.createObjectURL(file), state: "uploading" };
      entries.push(entry);
      render();
      const form = new FormData();
      form.append("file", file, file.name);
      try {
        const stored = await api("POST", "/uploads/images", { form });
        URL.revokeObjectURL(entry.preview);
        Object.assign(entry, { url: stored.url, preview: stored.url, state: "done" });
      } catch (err) {
        Object.assign(entry, { state: "failed", error: err.message });
        showError(err);
      }
      render();
    }
  }

  picker.addEventListener("change", () => {
    add(Array.from(picker.files));
    picker.value = "";
  });
  zone.addEventListener("click", (e) => {
    if (e.target !== picker) picker.click();
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      picker.click();
    }
  });
  zone.addEventListener("dragover", (e) => {
    if (!e.dataTransfer.types.includes("Files")) return;
    e.preventDefault();
    zone.classList.add("is-over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("is-over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("is-over");
    add(Array.from(e.dataTransfer.files || []));
  });
  render();

  return {
    el,
    urls: () => entries.filter((e) => e.state === "done").map((e) => e.url),
    pending: () => entries.some((e) => e.state === "uploading"),
  };
}

/** A drop zone for one data file (CSV/JSON import). `onFile(file)` is called with it. */
export function fileDrop({ accept, label, onFile }) {
  const picker = h("input", { type: "file", accept, class: "visually-hidden", "data-role": "file-input" });
  const zone = h("div", { class: "dropzone dropzone-wide", tabindex: "0", role: "button", "data-role": "dropzone" }, h("strong", {}, label), picker);
  picker.addEventListener("change", () => {
    if (picker.files[0]) onFile(picker.files[0]);
    picker.value = "";
  });
  zone.addEventListener("click", (e) => {
    if (e.target !== picker) picker.click();
  });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("is-over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("is-over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("is-over");
    const file = e.dataTransfer.files && e.dataTransfer.files[0];
    if (file) onFile(file);
  });
  return zone;
}
