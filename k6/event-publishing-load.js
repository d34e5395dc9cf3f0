// Event publishing under load: complaints created at a rising arrival rate (an open model:
// a slow answer does not slow the arrivals, as with real users), each answer checked, and for
// each creation the time from its 201 until its COMPLAINT_CREATED event is visible both in the
// event store (GET /api/events/stream/:id) and in the audit trail (GET /api/audit/trail/:id):
// the pipeline's lag (outbox relay → bus and stream → consumers), not only the HTTP answer.
//
//   k6 run k6/event-publishing-load.js                      # full: about 6.5 minutes
//   K6_PROFILE=smoke k6 run k6/event-publishing-load.js     # smoke: 10 s at 10 creates/s
//   BASE_URL=… AUDIT_URL=… EVENT_STORE_URL=… k6 run …       # another system
//
// PEAK_RATE (creates/s, full profile) and LAG_SAMPLE (the share of creations whose lag is
// measured, 0–1) tune it; the thresholds below are for the defaults.

import http from 'k6/http';
import { check, fail } from 'k6';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';

import {
  AUDIT_URL, COMMON_OPTIONS, COMPLAINT_URL, EVENT_STORE_URL, SMOKE, envNumber, requireReady, scaledStages,
} from './lib/config.js';
import { body, complaintBody, etagVersion, guarded, newContext, params, poll } from './lib/http.js';

// 201 → the event archived by the event store.
const archivedLag = new Trend('event_archived_lag', true);
// 201 → the event recorded in the audit trail.
const auditedLag = new Trend('event_audited_lag', true);
// 201 → both (the later of the two): "published → visible", the figure the thresholds judge.
const visibleLag = new Trend('event_visible_lag', true);
// Creations whose event was not visible in both places within VISIBLE_DEADLINE_MS.
const notVisible = new Counter('events_not_visible');
// Idempotent replays answered with the same complaint.
const replays = new Counter('idempotent_replays');

// Far above the thresholds: a creation not visible by then is lost, not late.
const VISIBLE_DEADLINE_MS = envNumber('VISIBLE_DEADLINE_MS', SMOKE ? 20000 : 60000);
const PEAK_RATE = envNumber('PEAK_RATE', 100);
const LAG_SAMPLE = envNumber('LAG_SAMPLE', SMOKE ? 1 : 0.5);

const scenario = SMOKE
  ? {
      // 100 creations in 10 s, every one's lag measured: enough to see each check and the
      // pipeline at work, short enough for the test suite (on a debug build).
      executor: 'constant-arrival-rate',
      rate: 10,
      timeUnit: '1s',
      duration: '10s',
      preAllocatedVUs: 5,
      maxVUs: 20,
    }
  : {
      // Up to PEAK_RATE (default 100 creates/s): docs/performance.md measured the embedded
      // pipeline's lag p99 at 49 ms at 100 creates/s and 582 ms at 200/s on this kind of
      // 2-core machine, its sustained rate between 200 and 300/s. 100/s is the load the
      // pipeline keeps up with, with k6 sharing the cores; PEAK_RATE=250 shows the knee.
      executor: 'ramping-arrival-rate',
      startRate: 5,
      timeUnit: '1s',
      preAllocatedVUs: 20,
      maxVUs: 200,
      stages: scaledStages([
        { seconds: 30, target: Math.round(PEAK_RATE * 0.2) },
        { seconds: 60, target: Math.round(PEAK_RATE * 0.5) },
        { seconds: 120, target: Math.round(PEAK_RATE * 0.5) },
        { seconds: 60, target: PEAK_RATE },
        { seconds: 90, target: PEAK_RATE },
        { seconds: 30, target: 0 },
      ]),
    };

export const options = Object.assign({}, COMMON_OPTIONS, {
  scenarios: { publish: Object.assign({ exec: 'publish' }, scenario) },
  thresholds: SMOKE
    ? {
        // Smoke runs on the test suite's debug build at 10 creates/s: every answer right, no
        // error at all, and latencies about ten times what a debug all-in-one measured here
        // (create p95 17 ms, p99 29 ms; visible lag p95 27 ms, p99 43 ms), so a busy CI
        // machine passes and a pipeline that stalls or a create that blocks does not.
        http_req_failed: [{ threshold: 'rate==0', abortOnFail: true }],
        iteration_errors: ['count==0'],
        checks: ['rate==1'],
        'http_req_duration{op:create}': ['p(95)<200', 'p(99)<400'],
        event_visible_lag: ['p(95)<500', 'p(99)<1000'],
        events_not_visible: ['count==0'],
        idempotent_replays: ['count>0'],
        // Every arrival started: k6 itself kept the rate.
        dropped_iterations: ['count==0'],
      }
    : {
        // A correct system answers every valid request (the bench saw no error): 0.1 % allows
        // a few transient resets in tens of thousands of requests; past 5 % the system is
        // down, so stop early.
        http_req_failed: [
          'rate<0.001',
          { threshold: 'rate<0.05', abortOnFail: true, delayAbortEval: '30s' },
        ],
        // An iteration that threw: a script error throws in every iteration, a transient
        // failure (already in http_req_failed) in a few.
        iteration_errors: ['count<10'],
        checks: ['rate>0.999'],
        // Create: a release all-in-one on two cores shared with k6 and its polling measured
        // p95 96 ms, p99 155 ms over this profile (DURATION_SCALE=0.3, peak 100/s;
        // docs/load-testing.md). About twice that: p95 200 ms, p99 400 ms; a create that
        // slows down further than that has lost its headroom.
        'http_req_duration{op:create}': [
          'p(95)<200',
          'p(99)<400',
          { threshold: 'p(99)<1000', abortOnFail: true, delayAbortEval: '1m' },
        ],
        // Lag until archived and audited: the same release run measured p95 661 ms, p99
        // 1.13 s (the audit the furthest behind; the bench, without k6's polling on the same
        // cores, saw p99 49 ms at 100/s). About twice that: p95 1.5 s, p99 2.5 s. A pipeline
        // that does not keep up grows a backlog of seconds and fails here; past 5 s at p99,
        // stop.
        event_visible_lag: [
          'p(95)<1500',
          'p(99)<2500',
          { threshold: 'p(99)<5000', abortOnFail: true, delayAbortEval: '1m' },
        ],
        // Nothing acknowledged is lost (SPEC section 6): every creation becomes visible.
        events_not_visible: ['count==0'],
        // Arrivals k6 could not start (every VU busy): the run would test a lower rate than
        // it says. About 23,500 arrivals at the defaults; 1 % is 250.
        dropped_iterations: ['count<250'],
      },
});

export function setup() {
  requireReady(http);
}

function created(ctx, res, sent) {
  const view = body(res);
  const id = view && typeof view.id === 'string' ? view.id : null;
  const first = view && Array.isArray(view.timeline) ? view.timeline[0] : null;
  const ok = check(res, {
    'create: 201': (r) => r.status === 201,
    'create: Location names the complaint': (r) => id !== null && r.headers.Location === `/api/complaints/${id}`,
    'create: ETag "1"': (r) => etagVersion(r) === 1,
    'create: correlation id echoed': (r) => r.headers['X-Correlation-Id'] === ctx.correlationId,
    'create: the view as sent, OPEN, version 1, saga RUNNING': () =>
      view !== null &&
      view.userId === sent.userId &&
      view.title === sent.title &&
      view.description === sent.description &&
      view.priority === sent.priority &&
      view.category === sent.category &&
      view.status === 'OPEN' &&
      view.version === 1 &&
      view.sagaStatus === 'RUNNING' &&
      view.assignedTo === null &&
      Array.isArray(view.notifications) &&
      Array.isArray(view.auditTrail),
    'create: timeline starts with COMPLAINT_CREATED in our correlation': () =>
      first !== null &&
      first.eventType === 'COMPLAINT_CREATED' &&
      first.version === 1 &&
      first.correlationId === ctx.correlationId &&
      typeof first.eventId === 'string',
  });
  return ok ? { id, eventId: first.eventId, location: res.headers.Location } : null;
}

/// Polls the event store and the audit trail (both at once while both are missing) until each
/// shows event `eventId` of complaint `id`; records the lags from `ackedAt`.
function measureLag(ctx, id, eventId, ackedAt) {
  let archivedAt = null;
  let auditedAt = null;
  const seen = poll(
    () => {
      const requests = [];
      if (archivedAt === null) {
        requests.push(['GET', `${EVENT_STORE_URL}/api/events/stream/${id}`, null,
          params(ctx, 'lag-archive', '/api/events/stream/{id}')]);
      }
      if (auditedAt === null) {
        requests.push(['GET', `${AUDIT_URL}/api/audit/trail/${id}`, null,
          params(ctx, 'lag-audit', '/api/audit/trail/{id}')]);
      }
      const answers = http.batch(requests);
      const now = Date.now();
      let i = 0;
      if (archivedAt === null) {
        const b = body(answers[i++]);
        if (b && Array.isArray(b.events) && b.events.some((e) => e.eventId === eventId)) archivedAt = now;
      }
      if (auditedAt === null) {
        const b = body(answers[i++]);
        if (b && Array.isArray(b.entries) && b.entries.some((e) => e.eventId === eventId)) auditedAt = now;
      }
      return archivedAt !== null && auditedAt !== null;
    },
    VISIBLE_DEADLINE_MS,
    // 10 ms, doubling to 200 ms: a lag of tens of milliseconds is measured to about 10 ms;
    // a backlog of seconds costs a few polls a second per creation, not fifty (polling
    // faster would load the system it measures exactly when it is behind).
    10,
    200,
  );
  if (archivedAt !== null) archivedLag.add(archivedAt - ackedAt);
  if (auditedAt !== null) auditedLag.add(auditedAt - ackedAt);
  const visible = check(seen, { 'the event is archived and audited within the deadline': (s) => s !== null });
  if (visible) {
    visibleLag.add(Math.max(archivedAt, auditedAt) - ackedAt);
  } else {
    notVisible.add(1);
  }
}

function publishOnce() {
  const ctx = newContext();
  const n = exec.scenario.iterationInTest;
  const vu = exec.vu.idInTest;
  const sent = complaintBody(n, vu);
  // Every fourth creation carries an Idempotency-Key and is sent twice.
  const key = n % 4 === 0 ? `k6-${ctx.correlationId}` : null;
  const extra = key ? { 'Idempotency-Key': key } : {};
  const res = http.post(`${COMPLAINT_URL}/api/complaints`, JSON.stringify(sent),
    params(ctx, 'create', '/api/complaints', { headers: extra }));
  const ackedAt = Date.now();
  const made = created(ctx, res, sent);
  if (made === null) {
    fail(`create answered ${res.status}: ${String(res.body).slice(0, 300)}`);
  }
  // The lag first, so that its first poll follows the 201 at once.
  if (Math.random() < LAG_SAMPLE) {
    measureLag(ctx, made.id, made.eventId, ackedAt);
  }

  if (key) {
    // The same key and body: the same complaint, marked as a replay, nothing new written.
    const again = http.post(`${COMPLAINT_URL}/api/complaints`, JSON.stringify(sent),
      params(ctx, 'create-replay', '/api/complaints', { headers: extra }));
    const v = body(again);
    const same = check(again, {
      'replay: 201 with the same Location': (r) => r.status === 201 && r.headers.Location === made.location,
      'replay: Idempotent-Replayed: true': (r) => r.headers['Idempotent-Replayed'] === 'true',
      'replay: the same complaint, still version 1': () => v !== null && v.id === made.id && v.version === 1,
    });
    if (same) replays.add(1);
    if (n % 20 === 0) {
      // The same key with another body is refused: 422 IDEMPOTENCY_KEY_REUSED.
      const other = Object.assign({}, sent, { title: `${sent.title} (changed)` });
      const reused = http.post(`${COMPLAINT_URL}/api/complaints`, JSON.stringify(other),
        params(ctx, 'create-reused-key', '/api/complaints', { headers: extra, expect: [422] }));
      const e = body(reused);
      check(reused, {
        'reused key: 422 IDEMPOTENCY_KEY_REUSED': (r) =>
          r.status === 422 && e !== null && e.error && e.error.code === 'IDEMPOTENCY_KEY_REUSED',
      });
    }
  }
}

export const publish = guarded(publishOnce);
