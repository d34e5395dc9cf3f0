#!/usr/bin/env node
// Checks Grafana dashboards against Grafana's own types: the JSON Schemas of @grafana/schema's
// TypeScript types (Dashboard, Panel, RowPanel, and each panel plugin's Options and FieldConfig),
// made with ts-json-schema-generator once and cached, then applied with ajv.
//
//   KIT_NODE_MODULES=… node scripts/check/dashboards.mjs [dashboard.json …]
//
// Without arguments it checks every grafana/*.json. Every violation is printed with its JSON
// path; the exit status is 1 when there is one, 2 when the check itself cannot run.
//
// What is checked:
// - the dashboard against `Dashboard` (fields, types, enums, required fields; no field the type
//   does not declare);
// - each panel against `Panel`, or `RowPanel` for a row (and the panels a row holds);
// - each panel's `options` against its plugin's `Options` (raw/composable/<type>/panelcfg), and
//   `fieldConfig.defaults.custom` against the plugin's `FieldConfig` when it declares one; a
//   panel type without a panelcfg in @grafana/schema is a violation (no schema to check it by).
// Not checked: `targets` (the Prometheus query type is not in @grafana/schema, only
// Record<string, unknown>) and PromQL (the Rust tests parse every expr with promtool).
//
// One exception, where the schema is Grafana's fault rather than the dashboard's: a template
// variable may have `definition` (a string). Grafana's query-variable editor writes it (the query
// as the variables list shows it) into the dashboards it saves, and Grafana's CUE definition of
// #VariableModel, which these TypeScript types are generated from, has been open (`...`: each
// variable type carries fields of its own); a TypeScript interface cannot say that, so the
// generated VariableModel, hence this schema, is closed. Only that property, of that type, only
// on templating.list items, is added; should the type ever declare it, this script says so.
//
// The dashboards carry each stat panel's options in full (as Grafana saves them): the plugin's
// Options type requires every option that has a default, and this check keeps that.

import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

import {
  ROOT,
  cacheDir,
  cachedJson,
  describe,
  digest,
  die,
  kitModules,
  kitVersion,
  readInputs,
  requireKit,
  schemaOfType,
} from "./kit.mjs";

const args = process.argv.slice(2);
if (args.includes("-h") || args.includes("--help")) {
  process.stdout.write("usage: KIT_NODE_MODULES=… node scripts/check/dashboards.mjs [dashboard.json …]\n");
  process.exit(0);
}

const SCHEMA = "@grafana/schema";
const TYPES = join(kitModules(), SCHEMA, "dist", "types");

// The cache is keyed by the versions of the schema package and of the generator, and by this
// script (a change here regenerates).
const cache = cacheDir(
  "grafana",
  `${kitVersion(SCHEMA)}-${kitVersion("ts-json-schema-generator")}-${digest(
    readFileSync(fileURLToPath(import.meta.url)),
    readFileSync(join(ROOT, "scripts", "check", "kit.mjs")),
  )}`,
);

function dashboardSchemas() {
  return cachedJson(cache, "dashboard.json", () => {
    const index = join(TYPES, "index.d.ts");
    return {
      Dashboard: allowDefinition(schemaOfType(index, "Dashboard")),
      Panel: schemaOfType(index, "Panel"),
      RowPanel: schemaOfType(index, "RowPanel"),
    };
  });
}

/** The documented exception: `definition` on a template variable. */
function allowDefinition(dashboard) {
  const variable = dashboard?.properties?.templating?.properties?.list?.items;
  if (!variable?.properties || variable.additionalProperties !== false) {
    throw new Error("Dashboard.templating.list items are not a closed object: revisit the `definition` exception");
  }
  if (variable.properties.definition) {
    throw new Error("VariableModel declares `definition` now: drop the exception");
  }
  variable.properties.definition = {
    type: "string",
    description: "Written by Grafana's query-variable editor; absent from the TypeScript type (see scripts/check/dashboards.mjs)",
  };
  return dashboard;
}

/** The Options and FieldConfig schemas of a panel plugin, or null when @grafana/schema has none. */
function pluginSchemas(type) {
  if (!/^[a-z0-9-]+$/.test(type)) return null;
  const file = join(TYPES, "raw", "composable", type, "panelcfg", "x", "types.gen.d.ts");
  if (!existsSync(file)) return null;
  return cachedJson(cache, `panel-${type}.json`, () => {
    // Only what the plugin's file declares itself: the generator would otherwise find a type of
    // that name among the ones it imports (the dashboard's FieldConfig).
    const text = readFileSync(file, "utf8");
    const declares = (name) => new RegExp(`^export (interface|type) ${name}\\b`, "m").test(text);
    if (!declares("Options")) throw new Error(`${file} declares no Options`);
    const out = { Options: schemaOfType(file, "Options") };
    // A plugin without custom field options declares no FieldConfig.
    if (declares("FieldConfig")) out.FieldConfig = schemaOfType(file, "FieldConfig");
    return out;
  });
}

const Ajv = requireKit("ajv").default;
// strict: the generated schemas use only standard keywords (and `type` lists, as for
// `number | string`); allErrors: report every violation, not the first.
const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
const compiled = new Map();
function validator(key, schema) {
  if (!compiled.has(key)) compiled.set(key, ajv.compile(schema));
  return compiled.get(key);
}

function check(schemaKey, schema, value, prefix, out) {
  const validate = validator(schemaKey, schema);
  if (!validate(value)) for (const e of validate.errors) out.push(describe(e, prefix));
}

function checkPanel(panel, pointer, schemas, out) {
  if (panel === null || typeof panel !== "object" || Array.isArray(panel)) {
    out.push(`${describe({ instancePath: "", message: "must be an object" }, pointer)}`);
    return;
  }
  if (panel.type === "row") {
    check("RowPanel", schemas.RowPanel, panel, pointer, out);
    (Array.isArray(panel.panels) ? panel.panels : []).forEach((p, i) =>
      checkPanel(p, `${pointer}/panels/${i}`, schemas, out),
    );
    return;
  }
  check("Panel", schemas.Panel, panel, pointer, out);
  if (typeof panel.type !== "string") return;
  const plugin = pluginSchemas(panel.type);
  if (!plugin) {
    out.push(`${describe({ instancePath: "/type", message: `"${panel.type}": no panel plugin of that id in ${SCHEMA} (no schema for its options)` }, pointer)}`);
    return;
  }
  if (panel.options !== undefined) {
    check(`${panel.type}.Options`, plugin.Options, panel.options, `${pointer}/options`, out);
  }
  const custom = panel.fieldConfig?.defaults?.custom;
  if (custom !== undefined) {
    if (plugin.FieldConfig) {
      check(`${panel.type}.FieldConfig`, plugin.FieldConfig, custom, `${pointer}/fieldConfig/defaults/custom`, out);
    } else {
      out.push(describe({ instancePath: "", message: `the ${panel.type} plugin declares no custom field options` }, `${pointer}/fieldConfig/defaults/custom`));
    }
  }
}

function checkDashboard(dashboard, schemas) {
  const out = [];
  const whole = validator("Dashboard", schemas.Dashboard);
  const wholeErrors = whole(dashboard) ? [] : whole.errors;
  // The panels are checked one by one below (against Panel or RowPanel, and their plugin):
  // ajv's errors for `panels` items, an anyOf of the two, would say little.
  for (const e of wholeErrors) {
    if (!e.instancePath.startsWith("/panels/")) out.push(describe(e));
  }
  const panelErrors = [];
  (Array.isArray(dashboard?.panels) ? dashboard.panels : []).forEach((p, i) =>
    checkPanel(p, `/panels/${i}`, schemas, panelErrors),
  );
  out.push(...panelErrors);
  // Should Dashboard's own panel schema refuse a panel that Panel and RowPanel accept, say so
  // rather than stay silent.
  if (panelErrors.length === 0) {
    for (const e of wholeErrors) if (e.instancePath.startsWith("/panels/")) out.push(describe(e));
  }
  return out;
}

let files = args;
if (files.length === 0) {
  const dir = join(ROOT, "grafana");
  files = readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => join(dir, f));
  if (files.length === 0) die(`no dashboards in ${dir}`);
}

let schemas;
try {
  schemas = dashboardSchemas();
} catch (e) {
  die(`generating the JSON Schema of ${SCHEMA}'s Dashboard failed: ${e.stack || e.message}`);
}

let bad = 0;
for (const { name, text } of readInputs(files)) {
  const shown = name.startsWith(ROOT) ? relative(ROOT, name) : name;
  let dashboard;
  try {
    dashboard = JSON.parse(text);
  } catch (e) {
    process.stdout.write(`${shown}: not JSON: ${e.message}\n`);
    bad++;
    continue;
  }
  let problems;
  try {
    problems = checkDashboard(dashboard, schemas);
  } catch (e) {
    die(`${shown}: the check failed: ${e.stack || e.message}`);
  }
  if (problems.length === 0) {
    const panels = Array.isArray(dashboard.panels) ? dashboard.panels.length : 0;
    process.stdout.write(`ok ${shown}: Dashboard, ${panels} panels and their options (${SCHEMA} ${kitVersion(SCHEMA)})\n`);
  } else {
    bad++;
    for (const p of problems) process.stdout.write(`${shown}: ${p}\n`);
  }
}
process.stdout.write(`${files.length - bad} of ${files.length} dashboard(s) valid\n`);
process.exit(bad === 0 ? 0 : 1);
