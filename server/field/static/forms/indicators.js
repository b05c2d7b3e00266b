// Household indicators (两不愁三保障 plus drinking water): a port of the household picture of
// forms/indicators.py (with forms/housing.py and the monitoring rules of forms/household.py),
// so a tablet shows the same verdicts the county server computes from the same records.
// Three-valued: true/false when the criteria decide, null when a value they need is missing.
import * as decimal from "./decimal.js";
import { PlainDate } from "./dates.js";
import { validateRecord } from "./validation.js";
import * as identity from "./identity.js";

const ROSTER = "household_roster";
const HOUSING = "housing_safety";
const WATER = "drinking_water";
const EDUCATION = "compulsory_education";
const INSURANCE = "medical_insurance";
const MONITORING = "monitoring_household";

const WATER_REGION_TYPES = ["water_rich", "water_short"];
const WATER_QUANTITY_THRESHOLDS = { water_rich: 35, water_short: 20 };
const CARRY_MINUTES_MAX = 20;
const CARRY_DISTANCE_MAX_M = 800;
const CARRY_VERTICAL_MAX_M = 80;
const INTERRUPTION_DAYS_MAX = 36;
const PIPED_INTO_HOME = "集中供水入户";
const INCOME_ITEMS = ["wage_income", "business_income", "property_income", "transfer_income"];
const FULL_LABOUR = new Set(["技能劳动力", "普通劳动力"]);
const ANY_LABOUR = new Set(["技能劳动力", "普通劳动力", "弱劳动力或半劳动力"]);
const MAX_AMOUNT = 1e12; // larger amounts are typing accidents: unknown, not money

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isEmpty = (v) => v === null || v === undefined || v === "" || (Array.isArray(v) && v.length === 0);
const get = (data, key) => (data && Object.hasOwn(data, key) ? data[key] : null);
const hasData = (data) => isObject(data) && Object.keys(data).length > 0;
const rows = (data, name) => (Array.isArray(get(data, name)) ? get(data, name).filter(isObject) : []);

function number(value) {
  if (typeof value !== "number" || !Number.isFinite(value) || Math.abs(value) > MAX_AMOUNT) return null;
  return value;
}

function money(value) {
  const n = number(value);
  return n === null ? null : decimal.toDecimal(n);
}

function threeValued(verdicts) {
  if (verdicts.some((v) => v === false)) return false;
  if (verdicts.some((v) => v === null)) return null;
  return true;
}

function selected(data, name) {
  const value = get(data, name);
  if (typeof value === "string") return value.split(/\s+/u).filter(Boolean);
  return Array.isArray(value) ? value.filter((v) => typeof v === "string") : [];
}

function idKey(value) {
  if (!(typeof value === "string" || (typeof value === "number" && Number.isInteger(value)))) return null;
  try {
    return identity.normalizeIdNumber(value).slice(0, 18);
  } catch (error) {
    if (error instanceof identity.IdNumberError) return null;
    throw error;
  }
}

// --- the county's monitoring configuration (MonitoringConfig.from_mapping's JSON shape) -----

function longestPrefixes(code, prefixes) {
  if (typeof code !== "string") return [];
  return prefixes.filter((p) => code.startsWith(p)).sort((a, b) => b.length - a.length);
}

function lookup(table, code, year) {
  for (const prefix of longestPrefixes(code, Object.keys(table || {}))) {
    const years = Object.keys(table[prefix]).map(Number).filter((y) => y <= year);
    if (years.length) return table[prefix][String(Math.max(...years))];
  }
  return null;
}

function monitoringLine(config, villageCode, year) {
  const line = lookup(config.monitoring_lines, villageCode, year);
  return line === null ? config.default_monitoring_line ?? null : line;
}

function waterRegionType(config, villageCode) {
  const regions = config.water_region_types || {};
  const [prefix] = longestPrefixes(villageCode, Object.keys(regions));
  return prefix !== undefined ? regions[prefix] : config.default_water_region_type || "water_rich";
}

// --- the indicators -------------------------------------------------------------------------

function housingIndicator(data) {
  if (!hasData(data) || isEmpty(get(data, "appraisal_grade"))) return { safe: null, reason: "no_data" };
  const grade = data.appraisal_grade;
  if (grade === "A" || grade === "B") return { safe: true, reason: "appraised_safe" };
  if (get(data, "safety_basis") === "保障安全") return { safe: true, reason: "public_housing" };
  if (["C", "D", "无房"].includes(grade)) {
    if (get(data, "renovation_accepted") === true) return { safe: true, reason: "renovated" };
    return { safe: false, reason: grade === "无房" ? "no_house" : "dangerous_house" };
  }
  return { safe: null, reason: "not_appraised" };
}

function atMost(value, limit) {
  const n = number(value);
  return n === null ? null : n <= limit;
}

function waterIndicator(data, regionType) {
  const region = WATER_REGION_TYPES.includes(regionType) ? regionType : "water_rich";
  const litres = number(get(data, "litres_per_person_day"));
  const quality = get(data, "quality_ok");
  let convenience;
  if (get(data, "supply_type") === PIPED_INTO_HOME) convenience = true;
  else {
    const measures = [
      atMost(get(data, "carry_minutes"), CARRY_MINUTES_MAX),
      atMost(get(data, "carry_distance_m"), CARRY_DISTANCE_MAX_M),
      atMost(get(data, "carry_vertical_m"), CARRY_VERTICAL_MAX_M),
    ];
    // Any one measure within its limit is enough (the criteria say "or").
    if (measures.includes(true)) convenience = true;
    else if (measures.includes(false)) convenience = false;
    else convenience = null;
  }
  const verdicts = {
    quantity: litres === null ? null : litres >= WATER_QUANTITY_THRESHOLDS[region],
    quality: typeof quality === "boolean" ? quality : null,
    convenience,
    reliability: atMost(get(data, "interruption_days"), INTERRUPTION_DAYS_MAX),
  };
  const entries = Object.entries(verdicts);
  return {
    safe: threeValued(Object.values(verdicts)),
    failed: entries.filter(([, ok]) => ok === false).map(([name]) => name),
  };
}

function schoolAge(idNumber, on) {
  try {
    const info = identity.parseIdNumber(idNumber, on);
    return identity.ageOn(info.birthDate, identity.schoolYearReference(on));
  } catch (error) {
    if (error instanceof identity.IdNumberError) return null;
    throw error;
  }
}

function educationIndicator(data, on) {
  const surveyed = typeof get(data, "survey_date") === "string" ? PlainDate.parse(data.survey_date) : null;
  const when = surveyed || on;
  const dropouts = [];
  let unknown = 0;
  for (const row of rows(data, "children")) {
    const id = get(row, "id_number");
    const age = typeof id === "string" || (typeof id === "number" && Number.isInteger(id)) ? schoolAge(id, when) : null;
    if (age === null) {
      unknown += 1;
      continue;
    }
    if (age < 6 || age > 16) continue;
    if (isEmpty(get(row, "schooling"))) {
      dropouts.push({ row_id: get(row, "_id"), name: get(row, "name"), age, reason: get(row, "dropout_reason") });
    }
  }
  return { dropoutPresent: dropouts.length ? true : unknown ? null : false, dropouts, unknown };
}

function insuranceIndicator(data, roster) {
  const uninsured = [];
  for (const row of rows(data, "members")) {
    const resident = get(row, "resident_insurance") === true;
    const employee = get(row, "employee_insurance") === true;
    if (!resident && !employee) uninsured.push({ row_id: get(row, "_id"), name: get(row, "name"), problem: "uninsured" });
  }
  const listed = new Set(rows(data, "members").map((r) => idKey(get(r, "id_number"))));
  for (const r of rows(roster, "members")) {
    if (!listed.has(idKey(get(r, "id_number")))) {
      uninsured.push({ row_id: get(r, "_id"), name: get(r, "name"), problem: "not_listed" });
    }
  }
  return { everyoneInsured: uninsured.length === 0, uninsured };
}

// Net = wages + business + property + transfers − production costs; per capita = net ÷
// member_count (or the roster's size), in decimal, half-up to the fen.
function incomeIndicator(data, line, members) {
  const items = INCOME_ITEMS.map((name) => money(get(data, name)));
  if (items.every((item) => item === null)) return { net: null, perCapita: null, below: null };
  const costs = money(get(data, "production_costs")) || { m: 0n, e: 0 };
  let net = { m: 0n, e: 0 };
  for (const item of items) if (item !== null) net = decimal.add(net, item);
  net = decimal.subtract(net, costs);
  let count = get(data, "member_count");
  if (typeof count !== "number" || !Number.isInteger(count) || count < 1) count = members && members > 0 ? members : null;
  const perCapita = count === null ? null : decimal.quantizeHalfUp(decimal.divide(net, decimal.toDecimal(count)), 2);
  const below = perCapita === null || line === null ? null : decimal.compare(perCapita, decimal.toDecimal(line)) < 0;
  return {
    net: decimal.toNumber(decimal.quantizeHalfUp(net, 2)),
    perCapita: perCapita === null ? null : decimal.toNumber(perCapita),
    below,
  };
}

// The household cross-checks of forms/household.py that are errors of the monitoring record.
function monitoringRuleErrors(records) {
  const monitoring = hasData(records[MONITORING]) ? records[MONITORING] : null;
  if (monitoring === null) return [];
  const roster = hasData(records[ROSTER]) ? records[ROSTER] : null;
  const members = rows(roster, "members");
  const risks = selected(monitoring, "risks");
  const labour = members.map((m) => get(m, "labour_capacity"));
  const out = [];
  if (members.length && risks.includes("缺劳动力") && labour.some((c) => FULL_LABOUR.has(c))) {
    out.push("lack_of_labour_but_can_work");
  }
  const nobodyWorks = members.length > 0 && !labour.some((c) => ANY_LABOUR.has(c));
  if (nobodyWorks && risks.includes("因务工就业不稳")) out.push("unstable_work_but_nobody_can_work");
  if (nobodyWorks && get(monitoring, "risk_removed") === true) out.push("removed_without_labour");
  const householdType = get(roster, "household_type");
  if (get(monitoring, "category") === "脱贫不稳定户" && ![null, "", "脱贫户"].includes(householdType)) {
    out.push("unstable_needs_lifted_out_household");
  }
  return out;
}

function monitoringConsistency(records, villageCode, year, config, on, definitions) {
  const monitoring = records[MONITORING];
  if (!isObject(monitoring) || isEmpty(get(monitoring, "category"))) return [null, []];
  const when = on || new PlainDate(year, 9, 1);
  const reasons = monitoringRuleErrors(records);
  const definition = definitions[MONITORING];
  if (!definition) throw new Error(`householdIndicators needs the ${MONITORING} definition`);
  const evaluation = { water_region_type: waterRegionType(config, villageCode) };
  const line = monitoringLine(config, villageCode, year);
  if (line !== null) evaluation.monitoring_line = line;
  const checked = validateRecord(definition, monitoring, { today: when, config: evaluation });
  for (const issue of checked.errors) if (issue.code === "check" && issue.check) reasons.push(issue.check);
  return [reasons.length === 0, reasons];
}

// The household's picture from its records (form id → record data). options: {villageCode,
// year, monitoring (the county's settings, MonitoringConfig's JSON shape), on ('YYYY-MM-DD':
// dates school age when a record has no survey_date; default 1 September of the year),
// definitions ({monitoring_household: definition document}, for its checks)}.
export function householdIndicators(records, options) {
  const { villageCode = null, year, monitoring: config = {}, definitions = {} } = options;
  const on = typeof options.on === "string" ? PlainDate.parse(options.on) : options.on || null;
  const present = Object.fromEntries(Object.entries(records || {}).filter(([, v]) => isObject(v)));
  const roster = present[ROSTER] || null;
  const monitoring = present[MONITORING] || null;
  const housing = hasData(present[HOUSING]) ? housingIndicator(present[HOUSING]) : null;
  const region = waterRegionType(config, villageCode);
  const water = hasData(present[WATER]) ? waterIndicator(present[WATER], region) : null;
  const education = hasData(present[EDUCATION]) ? educationIndicator(present[EDUCATION], on || new PlainDate(year, 9, 1)) : null;
  const insurance = hasData(present[INSURANCE]) ? insuranceIndicator(present[INSURANCE], roster) : null;
  const line = monitoringLine(config, villageCode, year);
  const rosterSize = rows(roster, "members").length || null;
  const income = hasData(monitoring) ? incomeIndicator(monitoring, line, rosterSize) : null;
  const [consistent, reasons] = monitoringConsistency(present, villageCode, year, config, on, definitions);
  const verdicts = {
    housing: housing === null ? null : housing.safe,
    water: water === null ? null : water.safe,
    education: education === null || education.dropoutPresent === null ? null : !education.dropoutPresent,
    insurance: insurance === null ? null : insurance.everyoneInsured,
    income: income === null || income.below === null ? null : !income.below,
  };
  return {
    village_code: villageCode,
    year,
    housing_safe: verdicts.housing,
    housing_reason: housing === null ? null : housing.reason,
    water_safe: verdicts.water,
    water_failed: water === null ? [] : water.failed,
    water_region_type: region,
    dropout_present: education === null ? null : education.dropoutPresent,
    dropouts: education === null ? [] : education.dropouts,
    everyone_insured: verdicts.insurance,
    uninsured: insurance === null ? [] : insurance.uninsured,
    net_income: income === null ? null : income.net,
    per_capita_income: income === null ? null : income.perCapita,
    monitoring_line: line,
    income_below_line: income === null ? null : income.below,
    monitoring_category: get(monitoring, "category"),
    risk_removed: get(monitoring, "risk_removed"),
    open_problems: Object.entries(verdicts).filter(([, ok]) => ok === false).map(([name]) => name),
    all_assured: threeValued(Object.values(verdicts)),
    unknown_age: education === null ? 0 : education.unknown,
    category_consistent: consistent,
    category_reasons: reasons,
  };
}
