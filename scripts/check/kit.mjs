// What the checks of scripts/check/*.mjs share: the node_modules that scripts/kit-tools
// installs (KIT_NODE_MODULES), a cache for the JSON Schemas they generate, reading YAML or JSON
// documents, and reporting a violation with its JSON path.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export function die(message) {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}

/** The node_modules of scripts/kit-tools. */
export function kitModules() {
  const dir = process.env.KIT_NODE_MODULES;
  if (!dir) {
    die(
      "KIT_NODE_MODULES is not set: run scripts/kit-tools and export the KIT_NODE_MODULES=<path> it prints",
    );
  }
  if (!existsSync(dir)) die(`KIT_NODE_MODULES=${dir} does not exist: run scripts/kit-tools`);
  return dir;
}

/** require() from the kit's node_modules (CommonJS packages). */
export function requireKit(name) {
  const require = createRequire(join(kitModules(), "kit.cjs"));
  try {
    return require(name);
  } catch (e) {
    die(`${name} is not in KIT_NODE_MODULES (${kitModules()}): run scripts/kit-tools (${e.message})`);
  }
}

/** import() of a file inside the kit's node_modules (ES module packages). */
export async function importKit(file) {
  const path = join(kitModules(), file);
  if (!existsSync(path)) die(`${path} is missing: run scripts/kit-tools`);
  return import(pathToFileURL(path).href);
}

/** The version of a package in the kit. */
export function kitVersion(name) {
  return JSON.parse(readFileSync(join(kitModules(), name, "package.json"), "utf8")).version;
}

/** A directory for generated schemas: $SAGAFLOW_CHECK_CACHE, else ~/.cache/sagaflow/check. */
export function cacheDir(...parts) {
  const base =
    process.env.SAGAFLOW_CHECK_CACHE ||
    join(process.env.XDG_CACHE_HOME || (homedir() ? join(homedir(), ".cache") : tmpdir()), "sagaflow", "check");
  const dir = join(base, ...parts);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A short hash of strings (the inputs a cached schema was made from). */
export function digest(...inputs) {
  const h = createHash("sha256");
  for (const i of inputs) h.update(String(i)).update("\0");
  return h.digest("hex").slice(0, 16);
}

/** JSON from `dir/name`, made by `build()` the first time (written atomically: checks may run at once). */
export function cachedJson(dir, name, build) {
  const path = join(dir, name);
  if (existsSync(path)) return JSON.parse(readFileSync(path, "utf8"));
  const value = build();
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(value));
  renameSync(tmp, path);
  return value;
}

/** A JSON Schema of the TypeScript type `type` declared by (or reachable from) `file`, every
 * object closed (additionalProperties: false, as the types are) and every type inlined. */
export function schemaOfType(file, type, tsconfig) {
  const { createGenerator } = requireKit("ts-json-schema-generator");
  const generator = createGenerator({
    path: file,
    type,
    tsconfig,
    skipTypeCheck: true,
    // "export" would name each definition after its type, and @grafana/schema declares two
    // different exported DataSourceRef types: the generator refuses that. Inlined, both are kept.
    expose: "none",
    topRef: false,
    jsDoc: "none",
    additionalProperties: false,
  });
  return generator.createSchema(type);
}

/** A tsconfig for the generator that resolves packages by their `exports` (the
 * @kubernetes-models packages declare their types only there). */
export function bundlerTsconfig() {
  const dir = cacheDir("tsconfig");
  const path = join(dir, "tsconfig.json");
  if (!existsSync(path)) {
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(
      tmp,
      JSON.stringify({ compilerOptions: { module: "esnext", moduleResolution: "bundler", skipLibCheck: true } }),
    );
    renameSync(tmp, path);
  }
  return path;
}

/** `$.a.b[0]` from a JSON pointer (`/a/b/0`), with `more` (a property) appended. */
export function jsonPath(pointer, more) {
  const parts = pointer === "" ? [] : pointer.split("/").slice(1);
  if (more !== undefined) parts.push(more);
  let out = "$";
  for (const raw of parts) {
    const p = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (/^[0-9]+$/.test(p)) out += `[${p}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(p)) out += `.${p}`;
    else out += `[${JSON.stringify(p)}]`;
  }
  return out;
}

/** One line per ajv error: its JSON path, what is wrong, and the offending property or value. */
export function describe(error, prefix = "") {
  const pointer = prefix + error.instancePath;
  const p = error.params || {};
  if (error.keyword === "additionalProperties") {
    return `${jsonPath(pointer, p.additionalProperty)}: not a field of this type`;
  }
  if (error.keyword === "required") {
    return `${jsonPath(pointer, p.missingProperty)}: required, missing`;
  }
  if (error.keyword === "enum") {
    return `${jsonPath(pointer)}: must be one of ${JSON.stringify(p.allowedValues)}`;
  }
  return `${jsonPath(pointer)}: ${error.message}`;
}

/** The text of the files named (or of stdin for none or "-"). */
export function readInputs(files) {
  if (files.length === 0) files = ["-"];
  return files.map((f) => ({
    name: f === "-" ? "<stdin>" : f,
    text: readFileSync(f === "-" ? 0 : f, "utf8"),
  }));
}

/** Every YAML (or JSON) document of a text, empty ones left out. */
export function yamlDocuments(text, name) {
  const yaml = requireKit("js-yaml");
  try {
    return yaml.loadAll(text).filter((d) => d !== null && d !== undefined);
  } catch (e) {
    die(`${name}: not YAML: ${e.message}`);
  }
}
