// The form renderer of the field app: a definition document → an accessible form on a 360 px
// screen, driven by the engine's own validation (skip logic, constraints, calculations and
// checks are exactly what the server will apply). What a person typed stays in the inputs even
// while a question is hidden, so switching an answer back restores it; values() is the cleaned
// record the server would store.
import { inspectRecord, prefill } from "./validation.js";
import { readDefinition } from "./definition.js";
import { evaluationContext } from "./expressions.js";

const RTL_LANGUAGES = new Set(["ug", "ar", "fa", "he", "ur"]);

// The renderer's own words, per language (zh is always there).
const WORDS = {
  zh: { add: "添加一行", remove: "删除此行", row: "第 {n} 行", yes: "是", no: "否", required: "必填", calculated: "自动计算", none: "—", choose: "请选择" },
  en: { add: "Add a row", remove: "Remove this row", row: "Row {n}", yes: "Yes", no: "No", required: "required", calculated: "calculated", none: "—", choose: "Choose" },
  ug: { add: "قۇر قوشۇش", remove: "بۇ قۇرنى ئۆچۈرۈش", row: "{n}-قۇر", yes: "ھەئە", no: "ياق", required: "زۆرۈر", calculated: "ئاپتوماتىك ھېسابلاش", none: "—", choose: "تاللاڭ" },
};
// Words of the field types added with XLSForm (kept apart so the table above stays as it was).
const MORE_WORDS = {
  zh: { up: "上移", down: "下移", points: "纬度 经度; 纬度 经度; …", point: "纬度 经度", photo: "拍照或选择照片", photoTaken: "已拍照", photoWorking: "正在压缩照片…" },
  en: { up: "Move up", down: "Move down", points: "lat lon; lat lon; …", point: "lat lon", photo: "Take or choose a photo", photoTaken: "Photo taken", photoWorking: "Shrinking the photo…" },
  ug: { up: "ئۈستىگە", down: "ئاستىغا", points: "lat lon; lat lon; …", point: "lat lon", photo: "سۈرەت تارتىش", photoTaken: "سۈرەت تارتىلدى", photoWorking: "سۈرەت كىچىكلىتىلىۋاتىدۇ…" },
};
for (const [code, more] of Object.entries(MORE_WORDS)) Object.assign(WORDS[code], more);
// Recorded as content-addressed attachments like a photo: what the file picker accepts.
const ATTACHMENT_ACCEPT = { audio: "audio/*", video: "video/*", file: null };
// A stored date-time a datetime-local input can show as it is (no zone, no fraction).
const LOCAL_DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/;

const MANY_CHOICES = 8; // more than this: a drop-down instead of a column of radio buttons

let stylesheetAdded = false;

// render.css next to this module, unless the page passes its own URL (a content-hashed asset)
// or false (it links the styles itself).
function addStylesheet(doc, href) {
  if (href === false || stylesheetAdded || doc.querySelector("link[data-forms-render]")) return;
  const link = doc.createElement("link");
  link.rel = "stylesheet";
  link.href = href || new URL("./render.css", import.meta.url).href;
  link.dataset.formsRender = "";
  doc.head.append(link);
  stylesheetAdded = true;
}

function newRowId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID().replaceAll("-", "").slice(0, 16);
  return `r${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

function el(doc, tag, attrs = {}, ...children) {
  const node = doc.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter(Boolean));
  return node;
}

function valueAt(data, path) {
  let node = data;
  const segments = path.split("/");
  for (let i = 0; i < segments.length; i += 1) {
    if (node === null || node === undefined) return undefined;
    if (i % 2 === 1) node = Array.isArray(node) ? node.find((row) => row && row._id === segments[i]) : undefined;
    else node = node[segments[i]];
  }
  return node;
}

// A stored geopoint {lat, lon, alt?, accuracy?} as the "lat lon [alt [accuracy]]" text one
// types (accuracy without alt has no text form: the stored point stands until it is retyped).
function pointText(point) {
  const keys = "alt" in point ? ["lat", "lon", "alt", "accuracy"] : ["lat", "lon"];
  return keys.filter((k) => k in point).map((k) => point[k]).join(" ");
}

function showValue(value, words) {
  if (value === null || value === undefined || value === "") return words.none;
  if (typeof value === "boolean") return value ? words.yes : words.no;
  if (Array.isArray(value)) return value.join(" ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function renderForm(root, definition, options = {}) {
  const defn = readDefinition(definition);
  const doc = root.ownerDocument;
  addStylesheet(doc, options.stylesheet);
  const context = evaluationContext(options);
  const readOnly = Boolean(options.readOnly);
  const onChange = options.onChange || (() => {});
  // A new record (no stored values) starts with the form's defaults, as a tablet makes it.
  const fresh = options.prefill ?? (options.values === undefined && !readOnly);
  const data = fresh ? prefill(defn, {}, context) : structuredClone(options.values || {});
  const autoRows = new Set(); // rows repeat_count added that nobody has answered in yet
  let language = options.language || "zh";
  let showAll = false;
  let result = null;
  const touched = new Set(); // data paths a person has answered
  const slots = new Map(); // data path → {fld, box, message, output, focus}
  const texts = []; // [node, localized text or word key] re-rendered by setLanguage

  const words = () => (Object.hasOwn(WORDS, language) ? WORDS[language] : WORDS.zh);
  const say = (localizedText) => (localizedText ? localizedText[language] ?? localizedText.zh : "");
  const sayNode = (tag, attrs, localizedText) => {
    const node = el(doc, tag, attrs);
    node.textContent = say(localizedText);
    texts.push([node, () => say(localizedText)]);
    return node;
  };
  const wordNode = (tag, attrs, key, vars = {}) => {
    const node = el(doc, tag, attrs);
    const render = () => words()[key].replace(/\{(\w+)\}/g, (_, v) => vars[v]);
    node.textContent = render();
    texts.push([node, render]);
    return node;
  };

  function changed(path) {
    touched.add(path);
    for (const row of autoRows) if (path.includes(`/${row._id}/`)) autoRows.delete(row);
    refresh();
  }

  function setValue(holder, name, value, path) {
    if (value === "" || value === null || (Array.isArray(value) && value.length === 0)) delete holder[name];
    else holder[name] = value;
    changed(path);
  }

  // A text-like input: the record follows what is typed, except while an input method is
  // composing (pinyin letters are not an answer yet): the composed text lands on compositionend.
  function textInput(holder, fld, path, attrs) {
    const input = el(doc, "input", { ...attrs, id: `f-${path}`, name: path, disabled: readOnly });
    const initial = holder[fld.name];
    if (Array.isArray(initial)) input.value = initial.map((p) => (p && typeof p === "object" ? pointText(p) : String(p))).join("; ");
    else if (initial !== undefined && initial !== null) input.value = typeof initial === "object" ? pointText(initial) : String(initial);
    const update = () => {
      for (const row of autoRows) if (path.includes(`/${row._id}/`)) autoRows.delete(row);
      const value = input.value;
      if (value === "") delete holder[fld.name];
      else holder[fld.name] = value;
      refresh();
    };
    input.addEventListener("input", (event) => {
      if (!event.isComposing) update();
    });
    input.addEventListener("compositionend", update);
    // Issues appear once an answer is given (change fires on leaving an edited field), not
    // while typing and not for a field merely passed through: a message appearing on blur
    // would move the button the person is tapping.
    input.addEventListener("change", () => changed(path));
    return input;
  }

  function choiceInputs(holder, fld, path, multiple) {
    const choices = defn.choicesOf(fld);
    const current = holder[fld.name];
    if (!multiple && choices.length > MANY_CHOICES) {
      const select = el(doc, "select", { id: `f-${path}`, name: path, disabled: readOnly });
      const blank = wordNode("option", { value: "" }, "choose");
      select.append(blank);
      for (const choice of choices) {
        const option = sayNode("option", { value: choice.value }, choice.label);
        if (String(current) === choice.value) option.selected = true;
        option.dataset.choice = choice.value;
        select.append(option);
      }
      select.addEventListener("change", () => setValue(holder, fld.name, select.value, path));
      return [select, select];
    }
    const list = el(doc, "div", { class: "vf-choices", role: multiple ? "group" : "radiogroup" });
    const chosen = new Set(Array.isArray(current) ? current.map(String) : typeof current === "string" ? current.split(/\s+/) : current !== undefined ? [String(current)] : []);
    let first = null;
    for (const choice of choices) {
      const input = el(doc, "input", { type: multiple ? "checkbox" : "radio", name: path, value: choice.value, disabled: readOnly });
      input.checked = chosen.has(choice.value);
      first = first || input;
      input.addEventListener("change", () => {
        if (multiple) {
          const picked = [...list.querySelectorAll("input:checked")].map((i) => i.value);
          setValue(holder, fld.name, picked, path);
        } else setValue(holder, fld.name, input.value, path);
      });
      list.append(el(doc, "label", { class: "vf-choice", "data-choice": choice.value }, input, sayNode("span", {}, choice.label)));
    }
    return [list, first];
  }

  // Only the choices a choice_filter offers now are shown; one already chosen stays visible
  // (and its issue says why it no longer fits) so nothing answered disappears silently.
  function filterChoices(slot, offered) {
    const allowed = offered ? new Set(offered) : null;
    for (const node of slot.box.querySelectorAll("[data-choice]")) {
      const chosen = node.tagName === "OPTION" ? node.selected : node.querySelector("input")?.checked;
      const hide = allowed !== null && !allowed.has(node.dataset.choice) && !chosen;
      node.hidden = hide;
      if (node.tagName === "OPTION") node.disabled = hide;
    }
  }

  // rank: every choice in a numbered list, moved up or down; the order is the answer.
  function rankInputs(holder, fld, path) {
    const choices = defn.choicesOf(fld);
    const list = el(doc, "ol", { class: "vf-rank", id: `f-${path}`, "aria-label": fld.name });
    const current = Array.isArray(holder[fld.name]) ? holder[fld.name].map(String) : typeof holder[fld.name] === "string" ? holder[fld.name].split(/\s+/).filter(Boolean) : [];
    const ordered = [...current.map((v) => choices.find((c) => c.value === v)).filter(Boolean), ...choices.filter((c) => !current.includes(c.value))];
    let first = null;
    for (const choice of ordered) {
      const item = el(doc, "li", { class: "vf-rank-item", "data-choice": choice.value }, sayNode("span", { class: "vf-rank-label" }, choice.label));
      for (const [key, step] of [["up", -1], ["down", 1]]) {
        const button = wordNode("button", { type: "button", class: `vf-rank-${key}`, disabled: readOnly }, key);
        first = first || button;
        button.addEventListener("click", () => {
          const items = [...list.children];
          const at = items.indexOf(item);
          const to = at + step;
          if (to < 0 || to >= items.length) return;
          if (step < 0) list.insertBefore(item, items[to]);
          else list.insertBefore(items[to], item);
          setValue(holder, fld.name, [...list.children].map((li) => li.dataset.choice), path);
          button.focus();
        });
        item.append(button);
      }
      list.append(item);
    }
    return [list, first];
  }

  // audio, video, file: picked on the device, recorded as the file's content address
  // (sha256:…) like a photo; the shell keeps the bytes (options.onAttachment).
  function attachmentInput(holder, fld, path) {
    const input = el(doc, "input", { type: "file", id: `f-${path}`, name: path, accept: ATTACHMENT_ACCEPT[fld.type], disabled: readOnly });
    input.addEventListener("change", async () => {
      const file = input.files?.[0];
      if (!file) return;
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
      const address = `sha256:${[...digest].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
      options.onAttachment?.({ path, address, file });
      setValue(holder, fld.name, address, path);
    });
    return input;
  }

  // image, with a shell that can take photos: a camera/file button; the thumbnail (when the shell
  // can show one) replaces the content address a person cannot read.
  function photoInput(holder, fld, path) {
    const input = el(doc, "input", { type: "file", id: `f-${path}`, name: path, accept: "image/*", capture: "environment", class: "vf-photo-file" });
    const button = el(doc, "label", { class: "vf-photo-button", for: `f-${path}` }, wordNode("span", {}, "photo"));
    const output = el(doc, "output", { class: "vf-output vf-photo", for: `f-${path}` });
    output.dataset.image = "yes";
    input.addEventListener("change", async () => {
      const file = input.files?.[0];
      if (!file) return;
      input.value = "";
      output.dataset.shown = "…";
      output.replaceChildren(wordNode("span", {}, "photoWorking"));
      let address = null;
      try {
        address = await options.takePhoto(file, path);
      } catch (error) {
        // Not kept (no room, a picture the browser cannot open): say why in the row itself.
        output.dataset.shown = "!";
        output.replaceChildren(el(doc, "span", { class: "vf-error", role: "alert", text: error.message }));
        return;
      }
      if (address) setValue(holder, fld.name, address, path);
      else showPhoto(output, holder[fld.name]);
    });
    return [el(doc, "div", { class: "vf-attachment" }, input, button, output), input, output];
  }

  function showPhoto(output, value) {
    const address = typeof value === "string" && value.startsWith("sha256:") ? value : null;
    if (output.dataset.shown === (address || "")) return;
    output.dataset.shown = address || "";
    output.replaceChildren(address ? wordNode("span", {}, "photoTaken") : doc.createTextNode(words().none));
    if (!address || !options.photoPreview) return;
    Promise.resolve(options.photoPreview(address)).then((url) => {
      if (url && output.dataset.shown === address) output.append(el(doc, "img", { src: url, alt: "", class: "vf-thumb" }));
    });
  }

  function booleanInputs(holder, fld, path) {
    const list = el(doc, "div", { class: "vf-choices vf-inline", role: "radiogroup" });
    let first = null;
    for (const [flag, key] of [[true, "yes"], [false, "no"]]) {
      const input = el(doc, "input", { type: "radio", name: path, value: String(flag), disabled: readOnly });
      input.checked = holder[fld.name] === flag;
      first = first || input;
      input.addEventListener("change", () => setValue(holder, fld.name, flag, path));
      list.append(el(doc, "label", { class: "vf-choice" }, input, wordNode("span", {}, key)));
    }
    return [list, first];
  }

  function fieldBox(holder, fld, prefix) {
    const path = prefix + fld.name;
    if (fld.type === "repeat") return repeatBox(holder, fld, path);
    const box = el(doc, "div", { class: `vf-field vf-${fld.type}`, "data-path": path });
    const message = el(doc, "div", { class: "vf-message", role: "alert", id: `m-${path}` });
    let control = null;
    let focus = null;
    let output = null;
    if (fld.type === "note") {
      box.append(sayNode("p", { class: "vf-note" }, fld.label));
    } else if (fld.type === "image" && options.takePhoto && !readOnly) {
      // The shell takes the photo (downscaled, sealed, content-addressed) and hands back its
      // address; the question keeps it in its own row, beside the row's description.
      [control, focus, output] = photoInput(holder, fld, path);
      box.append(sayNode("span", { class: "vf-label" }, fld.label));
      if (fld.required === true) box.lastChild.append(" ", wordNode("span", { class: "vf-required" }, "required"));
      if (fld.hint) box.append(sayNode("p", { class: "vf-hint" }, fld.hint));
      box.append(control);
    } else if (fld.type === "calculate" || fld.type === "image") {
      // A calculation is shown, not typed; a photo is taken by the app shell, which puts its
      // content address (sha256:…) into the record: here it is only shown.
      if (!fld.label) box.hidden = true;
      output = el(doc, "output", { id: `f-${path}`, class: "vf-output" });
      box.append(sayNode("span", { class: "vf-label" }, fld.label));
      if (fld.hint) box.append(sayNode("p", { class: "vf-hint" }, fld.hint));
      box.append(output);
    } else {
      const kind = {
        text: ["input", { type: "text", autocomplete: "off" }],
        integer: ["input", { type: "text", inputmode: "numeric" }],
        decimal: ["input", { type: "text", inputmode: "decimal" }],
        date: ["input", { type: "date" }],
        geopoint: ["input", { type: "text", inputmode: "decimal", placeholder: words().point }],
        time: ["input", { type: "time" }],
        datetime: ["input", { type: LOCAL_DATETIME.test(holder[fld.name] ?? "2000-01-01T00:00") ? "datetime-local" : "text" }],
        geotrace: ["input", { type: "text", inputmode: "decimal", placeholder: words().points }],
        geoshape: ["input", { type: "text", inputmode: "decimal", placeholder: words().points }],
      }[fld.type];
      if (fld.type === "select_one" || fld.type === "select_multiple") [control, focus] = choiceInputs(holder, fld, path, fld.type === "select_multiple");
      else if (fld.type === "boolean") [control, focus] = booleanInputs(holder, fld, path);
      else if (fld.type === "rank") [control, focus] = rankInputs(holder, fld, path);
      else if (Object.hasOwn(ATTACHMENT_ACCEPT, fld.type)) {
        control = el(doc, "div", { class: "vf-attachment" }, attachmentInput(holder, fld, path));
        focus = control.firstChild;
        output = el(doc, "output", { class: "vf-output", for: `f-${path}` });
        control.append(output);
      } else {
        control = textInput(holder, fld, path, kind[1]);
        focus = control;
      }
      const grouped = control.tagName === "DIV" || control.tagName === "OL";
      // The text in its own span: a language switch rewrites it, not the "required" mark.
      const label = el(doc, grouped ? "legend" : "label", { class: "vf-label" }, sayNode("span", {}, fld.label));
      if (!grouped) label.htmlFor = `f-${path}`;
      if (fld.required === true) label.append(" ", wordNode("span", { class: "vf-required" }, "required"));
      if (grouped) {
        const set = el(doc, "fieldset", { class: "vf-set" }, label);
        if (fld.hint) set.append(sayNode("p", { class: "vf-hint" }, fld.hint));
        set.append(control);
        box.append(set);
      } else {
        box.append(label);
        if (fld.hint) box.append(sayNode("p", { class: "vf-hint" }, fld.hint));
        const row = el(doc, "div", { class: "vf-input" }, control);
        if (fld.unit) row.append(el(doc, "span", { class: "vf-unit", text: fld.unit }));
        box.append(row);
      }
      (focus || control).setAttribute("aria-describedby", `m-${path}`);
    }
    box.append(message);
    slots.set(path, { fld, box, message, output, focus });
    return box;
  }

  function rowCard(rows, fld, path, row, index) {
    const prefix = `${path}/${row._id}/`;
    const card = el(doc, "fieldset", { class: "vf-row", "data-path": `${path}/${row._id}` });
    card.append(wordNode("legend", { class: "vf-row-title" }, "row", { n: index }));
    for (const sub of fld.fields) card.append(fieldBox(row, sub, prefix));
    if (!readOnly) {
      const remove = wordNode("button", { type: "button", class: "vf-remove" }, "remove");
      remove.addEventListener("click", () => {
        rows.splice(rows.indexOf(row), 1);
        for (const key of [...slots.keys()]) if (key.startsWith(prefix)) slots.delete(key);
        card.remove();
        renumber();
        changed(path);
      });
      card.append(remove);
    }
    return card;
  }

  function renumber() {
    for (const list of root.querySelectorAll(".vf-rows")) {
      [...list.children].forEach((card, i) => {
        const title = card.querySelector(":scope > .vf-row-title");
        if (title) title.textContent = words().row.replace("{n}", i + 1);
      });
    }
  }

  function repeatBox(holder, fld, path) {
    if (!Array.isArray(holder[fld.name])) holder[fld.name] = [];
    const rows = holder[fld.name];
    const box = el(doc, "section", { class: "vf-field vf-repeat", "data-path": path });
    box.append(sayNode("h3", { class: "vf-label" }, fld.label));
    if (fld.hint) box.append(sayNode("p", { class: "vf-hint" }, fld.hint));
    const list = el(doc, "div", { class: "vf-rows" });
    rows.forEach((row, i) => {
      if (!row._id) row._id = newRowId();
      list.append(rowCard(rows, fld, path, row, i + 1));
    });
    box.append(list);
    const message = el(doc, "div", { class: "vf-message", role: "alert", id: `m-${path}` });
    let focus = null;
    if (!readOnly) {
      const add = wordNode("button", { type: "button", class: "vf-add" }, "add");
      add.addEventListener("click", () => {
        const row = prefilledRow(path);
        rows.push(row);
        const card = rowCard(rows, fld, path, row, rows.length);
        list.append(card);
        changed(path);
        card.querySelector("input:not([readonly]), select")?.focus();
      });
      box.append(add);
      focus = add;
    }
    box.append(message);
    slots.set(path, { fld, box, message, output: null, focus, rows, list, add: focus });
    return box;
  }

  // A new row with the defaults of its fields (prefill evaluates them in the row's context).
  function prefilledRow(path) {
    const row = { _id: newRowId() };
    const rows = valueAt(data, path);
    rows.push(row);
    Object.assign(row, valueAt(prefill(defn, data, context), `${path}/${row._id}`));
    rows.pop();
    return row;
  }

  // A repeat with a repeat_count has the rows it asks for: missing ones are added, surplus
  // ones removed from the end while nobody has answered in them (an answered row stays, and
  // the "rows" issue says one is too many). Returns whether any row changed.
  function followRowCounts() {
    let moved = false;
    for (const [path, slot] of slots) {
      if (slot.fld.type !== "repeat" || slot.fld.repeatCount === null || readOnly) continue;
      const expected = result.rowCounts?.[path];
      if (slot.add) slot.add.hidden = expected !== undefined;
      if (expected === undefined || !slot.box.isConnected || isHidden(path, result.hidden)) continue;
      const rows = slot.rows;
      while (rows.length < expected) {
        const row = prefilledRow(path);
        rows.push(row);
        autoRows.add(row);
        slot.list.append(rowCard(rows, slot.fld, path, row, rows.length));
        moved = true;
      }
      while (rows.length > expected && autoRows.has(rows[rows.length - 1])) {
        const row = rows.pop();
        const prefix = `${path}/${row._id}/`;
        for (const key of [...slots.keys()]) if (key.startsWith(prefix)) slots.delete(key);
        slot.list.lastElementChild.remove();
        moved = true;
      }
      if (rows.length > expected) touched.add(path); // say at once why a row is too many
    }
    return moved;
  }

  function isHidden(path, hidden) {
    return hidden.some((h) => path === h || path.startsWith(`${h}/`));
  }

  // Chinese first, then the page's language beside it when the message has that text. Each
  // line carries its own direction, so Chinese punctuation stays put on a right-to-left page.
  function messageNodes(issue) {
    const line = (code, extra) =>
      el(doc, "span", { lang: code, dir: RTL_LANGUAGES.has(code) ? "rtl" : "ltr", ...extra, text: issue.message[code] });
    const lines = [line("zh", {})];
    if (language !== "zh" && issue.message[language]) lines.push(line(language, { class: "vf-translation" }));
    return lines;
  }

  function refresh() {
    // Rows the person left empty are still rows: validation sees them as they are.
    result = inspectRecord(defn, data, context);
    // Rows a repeat_count adds or drops change what is computed: inspect again (bounded, as a
    // count may read the rows it sets).
    for (let round = 0; round < 3 && followRowCounts(); round += 1) result = inspectRecord(defn, data, context);
    const hidden = result.hidden;
    const byPath = new Map();
    for (const issue of [...result.errors, ...result.warnings]) {
      if (issue.code === "unknown_field") continue;
      if (!byPath.has(issue.path)) byPath.set(issue.path, []);
      byPath.get(issue.path).push(issue);
    }
    for (const [path, slot] of slots) {
      slot.box.hidden = isHidden(path, hidden) || (slot.fld.type === "calculate" && !slot.fld.label);
      if (slot.output?.dataset.image) showPhoto(slot.output, valueAt(result.cleaned, path));
      else if (slot.output) slot.output.textContent = showValue(valueAt(result.cleaned, path), words());
      if (slot.fld.choiceFilter !== null) filterChoices(slot, result.offered?.[path]);
      const shown = showAll || touched.has(path) ? byPath.get(path) || [] : [];
      slot.message.replaceChildren(...shown.flatMap((issue) => [el(doc, "p", { class: `vf-${issue.severity}` }, ...messageNodes(issue))]));
      slot.box.classList.toggle("vf-invalid", shown.some((i) => i.severity === "error"));
      slot.focus?.setAttribute("aria-invalid", String(shown.some((i) => i.severity === "error")));
    }
    const general = [...byPath.entries()].filter(([path]) => !slots.has(path)).flatMap(([, list]) => list);
    summary.replaceChildren(...(showAll ? general : []).map((issue) => el(doc, "p", { class: `vf-${issue.severity}` }, ...messageNodes(issue))));
    onChange(result.cleaned, [...result.errors, ...result.warnings]);
  }

  function applyLanguage() {
    root.lang = language;
    root.dir = RTL_LANGUAGES.has(language) ? "rtl" : "ltr";
    for (const [node, render] of texts) node.textContent = render();
    renumber();
  }

  root.replaceChildren();
  root.classList.add("vf-form");
  const title = sayNode("h2", { class: "vf-title" }, defn.title);
  const summary = el(doc, "div", { class: "vf-summary", role: "alert" });
  const body = el(doc, "div", { class: "vf-body" });
  for (const fld of defn.fields) body.append(fieldBox(data, fld, ""));
  root.append(title, body, summary);
  applyLanguage();
  refresh();

  return {
    values: () => structuredClone(result.cleaned),
    issues: () => [...result.errors, ...result.warnings],
    setLanguage(code) {
      language = code;
      applyLanguage();
      refresh();
    },
    // Show every issue and move to the first error a person can fix on screen.
    focusFirstIssue() {
      showAll = true;
      refresh();
      const issue = result.errors.find((i) => slots.has(i.path) && !slots.get(i.path).box.hidden);
      if (!issue) return null;
      const slot = slots.get(issue.path);
      slot.box.scrollIntoView({ block: "center" });
      (slot.focus || slot.box).focus();
      return issue;
    },
  };
}
