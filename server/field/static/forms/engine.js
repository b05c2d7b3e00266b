// The form engine of the field app: the one rule set of forms/ (Python) in the browser.
// A facade over the modules next to it; docs/field-app-forms.md describes the API and how the
// conformance vectors prove both sides agree.
export {
  Environment,
  EvaluationError,
  Expression,
  ExpressionError,
  FUNCTION_NAMES,
  evaluationContext,
  parseExpression,
  truthy,
} from "./expressions.js";
export { PlainDate } from "./dates.js";
export { Definition, readDefinition } from "./definition.js";
export { inspectRecord, prefill, validateRecord } from "./validation.js";
export { flatten, unflatten, splitPath, schemaPath, PathError } from "./paths.js";
export { parseIdNumber, IdNumberError } from "./identity.js";

import { Environment, evaluationContext, parseExpression } from "./expressions.js";

// Evaluate an expression (text or parsed) against {values, current, today, config, now,
// levelNames (schema path → names), rows ([{repeat, row}], outermost first), choice (the
// choice a choice_filter tests), labels (jr:choice-name), tables (pulldata)}.
export function evaluate(expression, context = {}) {
  const parsed = typeof expression === "string" ? parseExpression(expression) : expression;
  const names = context.levelNames
    ? Object.fromEntries(Object.entries(context.levelNames).map(([k, v]) => [k, new Set(v)]))
    : null;
  let env = new Environment(context.values || {}, null, evaluationContext(context), names);
  for (const scope of context.rows || []) env = env.inRow(scope.repeat, scope.row);
  if (context.choice != null) env = env.withChoice(context.choice);
  if (context.labels != null || context.tables != null) env = env.withLookups(context.labels ?? null, context.tables ?? null);
  return parsed.evaluate(env.withCurrent(context.current ?? null));
}
export { householdIndicators } from "./indicators.js";
