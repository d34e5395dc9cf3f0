#!/usr/bin/env node
// Checks prometheus-operator objects (ServiceMonitor, PrometheusRule, and any other kind of
// monitoring.coreos.com) in YAML or JSON documents, such as what `helm template` renders, with
// @kubernetes-models/prometheus-operator: the package's model of each kind, whose validate()
// runs the validators generated from prometheus-operator's Go types (required fields, types,
// enums, formats and patterns: durations, label names, relabel actions…).
//
//   helm template … | KIT_NODE_MODULES=… node scripts/check/monitoring.mjs \
//       [--expect KIND[=COUNT]]… [file|-]…
//
// Those validators do not refuse a field the type does not have (they are generated without
// additionalProperties), and Kubernetes would drop such a field silently (a misspelt
// `honorLabels` is just gone). So each object is also matched against a JSON Schema made, with
// ts-json-schema-generator, from the same package's TypeScript declaration of the kind, every
// object closed: only its "not a field of this type" findings are reported (the package's
// validators are the authority on everything else).
//
// Exit status 1 on any invalid object, on an --expect not met (none of KIND, or not COUNT of
// them), or on no monitoring object at all; 2 when the check cannot run. Other kinds are
// ignored (kubernetes-validate and the API server check those).

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import {
  ROOT,
  bundlerTsconfig,
  cacheDir,
  cachedJson,
  describe,
  digest,
  die,
  importKit,
  kitModules,
  kitVersion,
  readInputs,
  requireKit,
  schemaOfType,
  yamlDocuments,
} from "./kit.mjs";

const PACKAGE = "@kubernetes-models/prometheus-operator";
const GROUP = "monitoring.coreos.com";

function usage(code) {
  process.stdout.write(
    "usage: KIT_NODE_MODULES=… node scripts/check/monitoring.mjs [--expect KIND[=COUNT]]… [file|-]…\n",
  );
  process.exit(code);
}

const expect = new Map();
const files = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "-h" || a === "--help") usage(0);
  if (a === "--expect" || a.startsWith("--expect=")) {
    const value = a === "--expect" ? argv[++i] : a.slice("--expect=".length);
    const m = /^([A-Z][A-Za-z0-9]*)(?:=([0-9]+))?$/.exec(value || "");
    if (!m) die(`--expect takes KIND or KIND=COUNT, not ${JSON.stringify(value)}`);
    expect.set(m[1], m[2] === undefined ? null : Number(m[2]));
  } else if (a.startsWith("--")) {
    usage(2);
  } else {
    files.push(a);
  }
}

const cache = cacheDir(
  "prometheus-operator",
  `${kitVersion(PACKAGE)}-${kitVersion("ts-json-schema-generator")}-${digest(
    readFileSync(fileURLToPath(import.meta.url)),
    readFileSync(join(ROOT, "scripts", "check", "kit.mjs")),
  )}`,
);

/** The package's model class of a kind (apiVersion monitoring.coreos.com/<version>), or null. */
async function modelOf(version, kind) {
  if (!/^v[0-9a-z]+$/.test(version) || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) return null;
  const file = join(PACKAGE, `${GROUP}`, version, `${kind}.js`);
  if (!existsSync(join(kitModules(), file))) return null;
  const module = await importKit(file);
  return typeof module[kind] === "function" ? module[kind] : null;
}

/** The closed JSON Schema of the kind's TypeScript interface (I<Kind>), cached. */
function closedSchemaOf(version, kind) {
  return cachedJson(cache, `${version}-${kind}.json`, () =>
    schemaOfType(
      join(kitModules(), PACKAGE, GROUP, version, `${kind}.d.ts`),
      `I${kind}`,
      bundlerTsconfig(),
    ),
  );
}

const Ajv = requireKit("ajv").default;
const ajv = new Ajv({ allErrors: true, strict: false });
const closed = new Map();
function unknownFields(version, kind, object) {
  const key = `${version}/${kind}`;
  if (!closed.has(key)) closed.set(key, ajv.compile(closedSchemaOf(version, kind)));
  const validate = closed.get(key);
  if (validate(object)) return [];
  return validate.errors.filter((e) => e.keyword === "additionalProperties").map((e) => describe(e));
}

function name(object) {
  const m = object?.metadata || {};
  return `${object.kind}/${m.name ?? "<no name>"}${m.namespace ? ` (namespace ${m.namespace})` : ""}`;
}

const found = new Map();
let bad = 0;
let checked = 0;
for (const { name: source, text } of readInputs(files)) {
  for (const object of yamlDocuments(text, source)) {
    if (typeof object !== "object" || Array.isArray(object)) continue;
    const apiVersion = typeof object.apiVersion === "string" ? object.apiVersion : "";
    const [group, version] = apiVersion.split("/");
    if (group !== GROUP) continue;
    checked++;
    found.set(object.kind, (found.get(object.kind) || 0) + 1);
    const Model = await modelOf(version, object.kind);
    if (!Model) {
      process.stdout.write(`${source}: ${name(object)}: ${PACKAGE} ${kitVersion(PACKAGE)} has no ${apiVersion} ${object.kind}\n`);
      bad++;
      continue;
    }
    const problems = [];
    try {
      new Model(object).validate();
    } catch (e) {
      if (Array.isArray(e.errors) && e.errors.length > 0) {
        for (const err of e.errors) problems.push(describe(err));
      } else {
        problems.push(e.message);
      }
    }
    problems.push(...unknownFields(version, object.kind, object));
    if (problems.length === 0) {
      process.stdout.write(`ok ${source}: ${name(object)}\n`);
    } else {
      bad++;
      for (const p of problems) process.stdout.write(`${source}: ${name(object)}: ${p}\n`);
    }
  }
}

if (checked === 0) {
  process.stdout.write(`no ${GROUP} object found\n`);
  bad++;
}
for (const [kind, count] of expect) {
  const n = found.get(kind) || 0;
  if (n === 0 || (count !== null && n !== count)) {
    process.stdout.write(`expected ${count === null ? "at least one" : count} ${kind}, found ${n}\n`);
    bad++;
  }
}
process.stdout.write(`${checked} ${GROUP} object(s) checked with ${PACKAGE} ${kitVersion(PACKAGE)}: ${bad === 0 ? "valid" : "INVALID"}\n`);
process.exit(bad === 0 ? 0 : 1);
