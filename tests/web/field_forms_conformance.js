// The form engine's answers to the conformance checks (docs/protocol.md §11): the browser
// counterpart of tests/sync_protocol/conformance_python.py for the checks of forms/. Loaded by
// tests/web/test_field_forms_js.py in Chromium; `engine` is server/field/static/forms/engine.js.

function typed(engine, value) {
  if (value === null || value === undefined) return { kind: "empty", value: null };
  if (typeof value === "boolean") return { kind: "boolean", value };
  if (typeof value === "number") return { kind: "number", value };
  if (value instanceof engine.PlainDate) return { kind: "date", value: value.iso };
  if (typeof value === "string") return { kind: "string", value };
  return { kind: "list", value: [...value] };
}

const CHECKS = {
  "paths.flatten": (engine, input) => {
    const flat = engine.flatten(input.data);
    return { flat, unflattened: engine.unflatten(flat) };
  },
  "expression.evaluate": (engine, input) => {
    let expression;
    try {
      expression = engine.parseExpression(input.expression);
    } catch (error) {
      if (!(error instanceof engine.ExpressionError)) throw error;
      return { error: { code: error.code, position: error.position } };
    }
    try {
      return typed(
        engine,
        engine.evaluate(expression, {
          values: input.values,
          current: input.current,
          today: input.today,
          config: input.config,
          levelNames: input.level_names ?? null,
          rows: input.rows || [],
          choice: input.choice ?? null,
          labels: input.labels ?? null,
          tables: input.tables ?? null,
        }),
      );
    } catch (error) {
      if (!(error instanceof engine.EvaluationError)) throw error;
      return { error: { code: error.code } };
    }
  },
  "record.validate": (engine, input, definitions) => {
    // A case may carry a form of its own (choice_filter, repeat_count, ...).
    const definition = input.definition ?? definitions[input.form_id];
    if (!definition || definition.version !== input.form_version) {
      return { no_definition: `${input.form_id}@${input.form_version}` };
    }
    return engine.validateRecord(definition, input.data, { today: input.today, config: input.config });
  },
  "record.prefill": (engine, input) => ({
    data: engine.prefill(input.definition, input.data, { today: input.today, config: input.config }),
  }),
  "household.indicators": (engine, input, definitions) =>
    engine.householdIndicators(input.records, {
      villageCode: input.village_code,
      year: input.year,
      monitoring: input.monitoring,
      on: input.on ?? null,
      definitions,
    }),
};

export const FORM_CHECKS = Object.keys(CHECKS);

// One case's answer as plain JSON (a crash is an answer too, so the test names the case).
export function conformanceAnswer(engine, check, input, definitions) {
  try {
    return JSON.parse(JSON.stringify(CHECKS[check](engine, input, definitions)));
  } catch (error) {
    return { crashed: `${error.name}: ${error.message}`, stack: String(error.stack).slice(0, 600) };
  }
}
