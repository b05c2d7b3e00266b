// The shell's plain renderer, used only while the form engine (../forms/render.js) is absent:
// the top-level questions of a definition as labelled inputs, Chinese labels first, no skip
// logic or validation (the form engine owns those rules). It keeps drafts working offline in any
// build, so what a worker typed is never lost for want of a module.

const SIMPLE = new Set(["text", "integer", "decimal", "date", "select_one", "select_multiple", "boolean"]);

function text(map, language) {
  if (map == null) return "";
  if (typeof map === "string") return map;
  return map[language] || map.zh || Object.values(map)[0] || "";
}

function choiceList(definition, fieldDef) {
  const lists = definition.choice_lists || {};
  const named = typeof fieldDef.choices === "string" ? lists[fieldDef.choices] : fieldDef.choices;
  return Array.isArray(named) ? named : [];
}

function inputFor(definition, fieldDef, value, language) {
  const id = `f-${fieldDef.name}`;
  let control;
  if (fieldDef.type === "select_one" || fieldDef.type === "boolean") {
    control = document.createElement("select");
    const options =
      fieldDef.type === "boolean"
        ? [
            { value: "true", label: { zh: "是" } },
            { value: "false", label: { zh: "否" } },
          ]
        : choiceList(definition, fieldDef);
    control.append(new Option("（请选择）", ""));
    for (const choice of options) {
      control.append(new Option(text(choice.label, language), String(choice.value ?? choice.name)));
    }
    control.value = value == null ? "" : String(value);
  } else {
    control = document.createElement("input");
    control.type = fieldDef.type === "date" ? "date" : "text";
    if (fieldDef.type === "integer") control.inputMode = "numeric";
    if (fieldDef.type === "decimal") control.inputMode = "decimal";
    control.value = value == null ? "" : String(value);
  }
  control.id = id;
  control.name = fieldDef.name;
  control.dataset.field = fieldDef.name;
  control.dataset.type = fieldDef.type;
  return control;
}

function readValue(control) {
  const raw = control.value;
  if (raw === "") return null;
  switch (control.dataset.type) {
    case "integer":
      return /^-?\d+$/.test(raw.trim()) ? Number(raw.trim()) : raw;
    case "decimal":
      return Number.isFinite(Number(raw)) && raw.trim() !== "" ? Number(raw) : raw;
    case "boolean":
      return raw === "true";
    case "select_multiple":
      return raw.split(/\s+/).filter(Boolean);
    default:
      return raw;
  }
}

/** Same contract as forms/render.js's renderForm (values, issues, setLanguage, focusFirstIssue). */
export function renderPlainForm(root, definition, { values = {}, language = "zh", onChange = () => {}, readOnly = false } = {}) {
  root.replaceChildren();
  const controls = [];
  for (const fieldDef of definition.fields || []) {
    if (fieldDef.type === "calculate") continue; // computed by the form engine, never typed
    const wrap = document.createElement("div");
    wrap.className = "question";
    const label = document.createElement("label");
    label.textContent = text(fieldDef.label, language) + (fieldDef.required ? " *" : "");
    wrap.append(label);
    if (!SIMPLE.has(fieldDef.type)) {
      const note = document.createElement("p");
      note.className = "hint";
      note.textContent = "（此题需要表单引擎，稍后填写）";
      wrap.append(note);
      root.append(wrap);
      continue;
    }
    const control = inputFor(definition, fieldDef, values[fieldDef.name], language);
    label.htmlFor = control.id;
    control.disabled = readOnly;
    if (fieldDef.hint) {
      const hint = document.createElement("p");
      hint.className = "hint";
      hint.textContent = text(fieldDef.hint, language);
      wrap.append(hint);
    }
    wrap.append(control);
    root.append(wrap);
    controls.push(control);
    // A Chinese IME sends input events while composing; report the value once it is chosen.
    let composing = false;
    control.addEventListener("compositionstart", () => (composing = true));
    control.addEventListener("compositionend", () => {
      composing = false;
      onChange(current());
    });
    control.addEventListener("input", () => composing || onChange(current()));
    control.addEventListener("change", () => onChange(current()));
  }
  const kept = { ...values };
  function current() {
    const out = { ...kept };
    for (const control of controls) {
      const value = readValue(control);
      if (value === null) delete out[control.name];
      else out[control.name] = value;
    }
    return out;
  }
  return {
    values: current,
    issues: () => [],
    setLanguage: () => {},
    focusFirstIssue: () => controls[0]?.focus(),
  };
}
