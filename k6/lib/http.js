// Requests as the system's clients make them: a correlation id per iteration (a saga keeps
// one from its create to its close), a W3C traceparent whose trace id is that correlation id
// (the services derive the same trace id from a UUID correlation id, so a k6 iteration and the
// saga it started share a trace), JSON bodies, and bounded polling for what the pipeline does
// after a command's answer.

import http from 'k6/http';
import { sleep } from 'k6';
import { randomBytes } from 'k6/crypto';
import { Counter } from 'k6/metrics';

// Iterations that threw (a script error, or `fail()` after a failed check): k6 logs them and
// carries on without failing any threshold, so every script thresholds this at zero.
const iterationErrors = new Counter('iteration_errors');

/// `fn` with every exception counted in iteration_errors (and thrown on, so k6 logs it and
/// ends the iteration as before).
export function guarded(fn) {
  return function guardedIteration(...args) {
    try {
      return fn(...args);
    } catch (e) {
      iterationErrors.add(1);
      throw e;
    }
  };
}

const PRIORITIES = ['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'];
const CATEGORIES = ['appliances', 'billing', 'delivery', 'support', 'website', 'returns', 'warranty'];

function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}

/// A new iteration's context: its correlation id (a UUID) and the trace id derived from it.
export function newContext() {
  const correlationId = crypto.randomUUID();
  return { correlationId, traceId: correlationId.replace(/-/g, '') };
}

/// The headers of one request of iteration `ctx`: a fresh span id per request.
export function headers(ctx, extra) {
  const h = {
    'Content-Type': 'application/json',
    Accept: 'application/json',
    'X-Correlation-ID': ctx.correlationId,
    traceparent: `00-${ctx.traceId}-${hex(randomBytes(8))}-01`,
  };
  return Object.assign(h, extra || {});
}

/// Request parameters: headers, tags (`name` groups URLs that carry ids, `op` names the
/// operation the thresholds select), and the statuses that count as success for
/// http_req_failed (a deliberate 412 is not a failure).
export function params(ctx, op, name, opts) {
  const o = opts || {};
  const p = {
    headers: headers(ctx, o.headers),
    tags: Object.assign({ name, op }, o.tags || {}),
    timeout: o.timeout || '30s',
  };
  if (o.expect) {
    p.responseCallback = http.expectedStatuses(...o.expect);
  }
  return p;
}

/// The body's JSON, or null when it is not JSON.
export function body(res) {
  try {
    return res.json();
  } catch (_) {
    return null;
  }
}

/// The version an answer's ETag names (`"3"` → 3), or null.
export function etagVersion(res) {
  const tag = res.headers.Etag || res.headers.ETag || res.headers.etag;
  if (!tag) return null;
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(tag.trim());
  return m ? Number(m[1]) : null;
}

/// The n-th complaint of this run: every priority and category in turn, valid lengths.
export function complaintBody(n, vu) {
  return {
    userId: `k6-user-${vu}-${n % 50}`,
    title: `k6 complaint ${vu}-${n}`,
    description: 'The kettle leaks when it boils; the base is wet and the switch trips.',
    priority: PRIORITIES[n % PRIORITIES.length],
    category: CATEGORIES[(n * 3 + vu) % CATEGORIES.length],
  };
}

/// Calls `probe` until it returns something other than null/undefined/false, waiting
/// `intervalMs` between calls (doubling up to `maxIntervalMs`), for `timeoutMs` at most.
/// Answers `{ value, elapsedMs, attempts }`, or null when the deadline passed first.
export function poll(probe, timeoutMs, intervalMs, maxIntervalMs) {
  const started = Date.now();
  const deadline = started + timeoutMs;
  let wait = intervalMs;
  let attempts = 0;
  for (;;) {
    attempts += 1;
    const value = probe();
    if (value !== null && value !== undefined && value !== false) {
      return { value, elapsedMs: Date.now() - started, attempts };
    }
    const left = deadline - Date.now();
    if (left <= 0) return null;
    sleep(Math.min(wait, left) / 1000);
    wait = Math.min(wait * 2, maxIntervalMs || intervalMs);
  }
}

export { PRIORITIES, CATEGORIES };
