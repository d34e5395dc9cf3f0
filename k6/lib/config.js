// Where the system is, which profile runs, and the options every script shares.
//
// Base URLs come from the environment, so the same scripts drive the all-in-one on loopback
// (the defaults) or a cluster through its ingress or port-forwards:
//   BASE_URL          the complaint service     (default http://localhost:3005)
//   NOTIFICATION_URL  the notification service  (default http://localhost:3006)
//   AUDIT_URL         the audit service         (default http://localhost:3007)
//   EVENT_STORE_URL   the event store           (default http://localhost:3008)
// K6_PROFILE=smoke picks the short profile (a few seconds, a few VUs: what the test suite
// runs); anything else, or nothing, the full one (minutes of ramping load).

function base(name, fallback) {
  const v = __ENV[name];
  return (v && v.trim() !== '' ? v.trim() : fallback).replace(/\/+$/, '');
}

export const COMPLAINT_URL = base('BASE_URL', 'http://localhost:3005');
export const NOTIFICATION_URL = base('NOTIFICATION_URL', 'http://localhost:3006');
export const AUDIT_URL = base('AUDIT_URL', 'http://localhost:3007');
export const EVENT_STORE_URL = base('EVENT_STORE_URL', 'http://localhost:3008');

export const PROFILE = (__ENV.K6_PROFILE || 'full').trim().toLowerCase() === 'smoke' ? 'smoke' : 'full';
export const SMOKE = PROFILE === 'smoke';

/// A number from the environment, or `fallback` when unset or not a number.
export function envNumber(name, fallback) {
  const v = Number(__ENV[name]);
  return __ENV[name] !== undefined && __ENV[name] !== '' && Number.isFinite(v) ? v : fallback;
}

/// `stages` with every duration (given in seconds here) multiplied by DURATION_SCALE (default
/// 1): DURATION_SCALE=0.2 runs the full profile's shape in a fifth of the time.
export function scaledStages(stages) {
  const scale = envNumber('DURATION_SCALE', 1);
  return stages.map(({ seconds, target }) => ({
    duration: `${Math.max(1, Math.round(seconds * scale))}s`,
    target,
  }));
}

/// Options every script starts from: p(99) in the summary (the thresholds use it), and the
/// summary's time unit in milliseconds.
export const COMMON_OPTIONS = {
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
  summaryTimeUnit: 'ms',
};
// k6 1.1 takes no usage-report option from a script: run it with K6_NO_USAGE_REPORT=true (or
// --no-usage-report) so that it sends nothing anywhere but to the system under test.

/// Every service must be ready before the load starts; otherwise the run fails at once with
/// the service's own answer (its 503 names the backend that is down).
export function requireReady(http) {
  const targets = [
    ['complaint', COMPLAINT_URL],
    ['notification', NOTIFICATION_URL],
    ['audit', AUDIT_URL],
    ['event store', EVENT_STORE_URL],
  ];
  for (const [name, url] of targets) {
    const r = http.get(`${url}/health/ready`, { tags: { name: '/health/ready', op: 'ready' }, timeout: '10s' });
    if (r.status !== 200) {
      throw new Error(`the ${name} service at ${url} is not ready: ${r.status} ${r.body || r.error}`);
    }
  }
}
