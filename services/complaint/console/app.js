// sagaflow console: the complaint desk and the operator's view. One module, no dependencies,
// served by the complaint service; every figure comes from its HTTP API.

const STATUSES = ["OPEN", "ASSIGNED", "IN_PROGRESS", "RESOLVED", "CLOSED"];
const PRIORITIES = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];
const FIELDS = ["userId", "title", "description", "priority", "category"];
const LIVE_MS = 1000;
const OPERATIONS_MS = 5000;

const main = document.getElementById("main");
const notice = document.getElementById("notice");
let stopLive = () => {};

// ---------- DOM ----------

/** An element with attributes (on* are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function badge(value, label) {
  const cls = String(value).replace(/ /g, "-");
  return h("span", { class: `badge ${cls}` }, label ?? human(value));
}

function human(code) {
  const text = String(code ?? "").replace(/[_-]/g, " ").toLowerCase();
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return h("time", { datetime: iso, title: iso }, d.toLocaleString());
}

function seconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function say(kind, ...lines) {
  notice.replaceChildren(h("div", { class: `alert ${kind}` }, lines.map((l) => h("p", {}, l))));
}

// A message said just before the page changes stays for the next page.
let carry = false;
function sayNext(kind, ...lines) {
  say(kind, ...lines);
  carry = true;
}

function table(caption, columns, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "cards" },
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        rows.map((cells) =>
          h("tr", {}, cells.map((cell, i) => h("td", { "data-label": columns[i] }, cell))),
        ),
      ),
    ),
  );
}

// ---------- HTTP ----------

class ApiFailure extends Error {
  constructor(status, error) {
    super(error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = error?.code ?? `HTTP_${status}`;
    this.field = error?.field;
    this.correlationId = error?.correlationId;
  }
}

async function api(method, path, { body, version, key } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (version !== undefined) headers["If-Match"] = `"${version}"`;
  if (key) headers["Idempotency-Key"] = key;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiFailure(0, {
      code: "UNREACHABLE",
      message: "The complaint service cannot be reached. Check that it runs, then try again.",
    });
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiFailure(response.status, data?.error);
  return data;
}

function failure(e) {
  const lines = [e.message];
  if (e.status === 503) lines.push("A backend is down; the request can be sent again once it is back.");
  if (e.correlationId) lines.push(`Correlation id: ${e.correlationId}`);
  say("error", ...lines);
}

/** A key that makes a repeated submission of one form create one complaint. */
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------- routing ----------

function route() {
  stopLive();
  stopLive = () => {};
  if (carry) carry = false;
  else notice.replaceChildren();
  const hash = location.hash.replace(/^#/, "") || "/complaints";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  let nav = "complaints";
  if (parts[0] === "new") {
    nav = "new";
    renderNew();
  } else if (parts[0] === "operations") {
    nav = "operations";
    renderOperations();
  } else if (parts[0] === "complaints" && parts[1]) {
    renderComplaint(decodeURIComponent(parts[1]));
  } else {
    renderList(params);
  }
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** Calls `tick` every `ms` while this page is shown and the tab visible. */
function live(ms, tick) {
  let stopped = false;
  let timer;
  const loop = async () => {
    if (stopped) return;
    if (document.visibilityState === "visible") {
      try {
        await tick();
      } catch {
        // A failed refresh is shown by the next one that works; keep polling.
      }
    }
    if (!stopped) timer = setTimeout(loop, ms);
  };
  timer = setTimeout(loop, ms);
  stopLive = () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function page(title, ...children) {
  document.title = `${title} · sagaflow`;
  main.replaceChildren(h("h1", {}, title), ...children);
}

// ---------- the desk: list ----------

function select(name, label, values, current) {
  return h(
    "div",
    { class: "field" },
    h("label", { for: `f-${name}` }, label),
    h(
      "select",
      { id: `f-${name}`, name },
      h("option", { value: "" }, "Any"),
      values.map((v) => h("option", { value: v, selected: v === current }, human(v))),
    ),
  );
}

function text(name, label, current) {
  return h(
    "div",
    { class: "field" },
    h("label", { for: `f-${name}` }, label),
    h("input", { id: `f-${name}`, name, value: current ?? "", autocomplete: "off" }),
  );
}

async function renderList(params) {
  const filters = h(
    "form",
    {
      class: "filters panel",
      role: "search",
      "aria-label": "Filter complaints",
      onsubmit: (ev) => {
        ev.preventDefault();
        const q = new URLSearchParams();
        for (const [k, v] of new FormData(ev.target)) if (v.trim()) q.set(k, v.trim());
        go(`#/complaints${q.toString() ? "?" + q : ""}`);
      },
    },
    select("status", "Status", STATUSES, params.get("status")),
    select("priority", "Priority", PRIORITIES, params.get("priority")),
    text("category", "Category", params.get("category")),
    text("assignedTo", "Assigned to", params.get("assignedTo")),
    text("userId", "User", params.get("userId")),
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "submit" }, "Apply"),
      h("button", { type: "button", class: "secondary", onclick: () => go("#/complaints") }, "Reset"),
    ),
  );
  const results = h("section", { class: "panel", "aria-label": "Complaints", "aria-busy": "true" }, "Loading…");
  page("Complaints", filters, results);
  const q = new URLSearchParams(params);
  q.set("limit", "25");
  const rows = [];
  const more = h("button", { type: "button", class: "secondary" }, "Load more");
  const load = async (cursor) => {
    if (cursor) q.set("cursor", cursor);
    let data;
    try {
      data = await api("GET", `/api/complaints?${q}`);
    } catch (e) {
      results.removeAttribute("aria-busy");
      results.replaceChildren(h("p", {}, "The list could not be loaded."));
      return failure(e);
    }
    for (const c of data.items) {
      rows.push([
        h("a", { href: `#/complaints/${encodeURIComponent(c.id)}` }, c.title),
        badge(c.status),
        badge(c.priority),
        c.category,
        c.assignedTo ?? "—",
        badge(c.sagaStatus),
        when(c.createdAt),
      ]);
    }
    results.removeAttribute("aria-busy");
    results.replaceChildren(
      table(
        `${rows.length} complaint${rows.length === 1 ? "" : "s"} shown, newest first`,
        ["Title", "Status", "Priority", "Category", "Assigned to", "Saga", "Created"],
        rows,
        "No complaint matches these filters.",
      ),
    );
    if (data.nextCursor) {
      more.onclick = () => {
        more.disabled = true;
        load(data.nextCursor);
      };
      more.disabled = false;
      results.append(h("div", { class: "buttons" }, more));
    }
  };
  await load(null);
}

// ---------- the desk: create ----------

function formField(name, label, control, hint) {
  const hintId = hint ? `hint-${name}` : null;
  control.id = `c-${name}`;
  control.name = name;
  control.setAttribute("aria-describedby", [hintId, `err-${name}`].filter(Boolean).join(" "));
  return h(
    "div",
    { class: "field" },
    h("label", { for: control.id }, label),
    hint ? h("span", { class: "hint", id: hintId }, hint) : null,
    control,
    h("span", { class: "error-text", id: `err-${name}` }),
  );
}

function showFieldError(form, field, message) {
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  for (const el of form.querySelectorAll(".error-text")) el.textContent = "";
  const control = field && form.querySelector(`[name="${CSS.escape(field)}"]`);
  if (!control) return false;
  control.setAttribute("aria-invalid", "true");
  form.querySelector(`#err-${CSS.escape(field)}`).textContent = message;
  control.focus();
  return true;
}

function renderNew() {
  const key = newKey();
  const submit = h("button", { type: "submit" }, "Create complaint");
  const form = h(
    "form",
    { class: "panel", novalidate: true, "aria-label": "New complaint" },
    formField("userId", "User", h("input", { autocomplete: "off", required: true }), "Who complains: an id, or an e-mail address."),
    formField("title", "Title", h("input", { required: true, maxlength: 200 }), "1 to 200 characters."),
    formField("description", "Description", h("textarea", { required: true, maxlength: 5000 }), "1 to 5000 characters."),
    formField(
      "priority",
      "Priority",
      h("select", { required: true }, PRIORITIES.map((p) => h("option", { value: p, selected: p === "MEDIUM" }, human(p)))),
      "Unassigned complaints are escalated after 15 min (critical), 1 h (high), 4 h (medium) or 24 h (low).",
    ),
    formField("category", "Category", h("input", { required: true, maxlength: 100 }), "1 to 100 characters, e.g. billing."),
    h("div", { class: "buttons" }, submit),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    for (const name of FIELDS) body[name] = form.elements[name].value;
    submit.disabled = true;
    try {
      const created = await api("POST", "/api/complaints", { body, key });
      sayNext("success", `Complaint “${created.title}” created. Its saga is running.`);
      location.hash = `#/complaints/${encodeURIComponent(created.id)}`;
    } catch (e) {
      if (e.status === 400 && showFieldError(form, e.field, e.message)) {
        say("error", "The complaint was not created: fix the field marked below.");
      } else {
        failure(e);
      }
    } finally {
      submit.disabled = false;
    }
  });
  page("New complaint", form);
}

// ---------- the desk: one complaint ----------

/** The commands this complaint's status allows (SPEC section 4). */
function actionsFor(c) {
  if (c.status === "CLOSED") return [];
  const undoable = c.timeline.some((t) => t.eventType === "COMPLAINT_ASSIGNED" || t.eventType === "COMPLAINT_PROCESSED");
  const out = [{ command: "assign", label: "Assign", input: { name: "assignedTo", label: "Assign to", required: true } }];
  if (c.status === "ASSIGNED") out.push({ command: "process", label: "Start work" });
  if (c.status === "ASSIGNED" || c.status === "IN_PROGRESS") {
    out.push({ command: "process", label: "Resolve", input: { name: "resolution", label: "Resolution", required: true, long: true } });
  }
  if (c.status === "RESOLVED") out.push({ command: "close", label: "Close" });
  out.push({
    command: "close",
    label: c.status === "RESOLVED" ? "Close with a reason" : "Close without resolving",
    input: { name: "reason", label: "Reason for closing", required: true },
  });
  if (undoable) {
    out.push({ command: "compensate", label: "Undo last step", danger: true, input: { name: "reason", label: "Why undo it", required: true } });
  }
  return out;
}

function renderComplaint(id) {
  const state = { view: null, key: "" };
  const header = h("div", {});
  const actions = h("section", { class: "panel", "aria-labelledby": "h-actions" });
  const history = h("div", { class: "grid" });
  const trail = h("section", { class: "panel", "aria-labelledby": "h-audit" });
  page("Complaint", header, actions, history, trail);
  main.querySelector("h1").textContent = "Complaint";

  const drawFacts = (c) => {
    document.title = `${c.title} · sagaflow`;
    main.querySelector("h1").textContent = c.title;
    header.replaceChildren(
      h(
        "section",
        { class: "panel", "aria-label": "Facts" },
        h("p", { class: "buttons" }, badge(c.status), badge(c.priority), h("span", {}, "Saga: "), badge(c.sagaStatus)),
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Id"), h("dd", { class: "mono" }, c.id),
          h("dt", {}, "User"), h("dd", {}, c.userId),
          h("dt", {}, "Category"), h("dd", {}, c.category),
          h("dt", {}, "Assigned to"), h("dd", { "data-testid": "assigned-to" }, c.assignedTo ?? "—"),
          c.resolution ? [h("dt", {}, "Resolution"), h("dd", {}, c.resolution)] : null,
          h("dt", {}, "Created"), h("dd", {}, when(c.createdAt)),
          h("dt", {}, "Updated"), h("dd", {}, when(c.updatedAt)),
          c.closedAt ? [h("dt", {}, "Closed"), h("dd", {}, when(c.closedAt))] : null,
          c.escalatedAt ? [h("dt", {}, "Escalated"), h("dd", {}, when(c.escalatedAt))] : null,
          h("dt", {}, "Version"), h("dd", { "data-testid": "version" }, String(c.version)),
        ),
        h("p", { class: "description" }, c.description),
      ),
    );
  };

  const drawActions = (c) => {
    state.actionsVersion = c.version;
    const list = actionsFor(c);
    const body = [h("h2", { id: "h-actions" }, "Actions")];
    if (c.sagaStatus === "COMPENSATING") {
      body.push(h("p", { class: "alert info" }, "A compensation is running: the last step is being undone. Commands wait until it completes."));
    } else if (!list.length) {
      body.push(h("p", { class: "muted" }, "This complaint is closed: nothing more can be done."));
    }
    if (c.sagaStatus !== "COMPENSATING" && list.length) {
      body.push(h("div", { class: "actions-grid" }, list.map((a) => actionForm(c, a))));
    }
    actions.replaceChildren(...body);
  };

  const actionForm = (c, a) => {
    const button = h("button", { type: "submit", class: a.danger ? "danger" : null }, a.label);
    const slug = `${a.command}-${a.label.toLowerCase().replace(/[^a-z]+/g, "-")}`;
    const form = h("form", { class: "action", novalidate: true, "aria-label": a.label, "data-action": slug });
    if (a.input) {
      const control = a.input.long ? h("textarea", { required: true }) : h("input", { required: true, autocomplete: "off" });
      form.append(formField(`${slug}-${a.input.name}`, a.input.label, control));
      control.dataset.field = a.input.name;
    }
    form.append(h("div", { class: "buttons" }, button));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = {};
      const control = form.querySelector("[data-field]");
      if (control) body[control.dataset.field] = control.value;
      button.disabled = true;
      try {
        const next = await api("PUT", `/api/complaints/${encodeURIComponent(c.id)}/${a.command}`, { body, version: c.version });
        say("success", `${a.label}: done. The complaint is now ${human(next.status).toLowerCase()} (version ${next.version}).`);
        show(next, true);
      } catch (e) {
        if (e.status === 412) {
          const fresh = await api("GET", `/api/complaints/${encodeURIComponent(c.id)}`).catch(() => null);
          say(
            "warning",
            "Someone else changed this complaint while you were looking at it, so your command was not applied.",
            fresh
              ? `You had version ${c.version}; it is now at version ${fresh.version} (${human(fresh.status).toLowerCase()}). The page shows the latest state: check it, then send your command again.`
              : "Reload the page to see the latest state.",
          );
          if (fresh) show(fresh, true);
        } else if (e.status === 400 && control) {
          showFieldError(form, control.name, e.message.replace(/^[^:]+: /, `${a.input.label}: `));
        } else if (e.status === 409) {
          say("error", `${a.label} is not possible now: ${e.message}`);
        } else {
          failure(e);
        }
      } finally {
        button.disabled = false;
      }
    });
    return form;
  };

  // An agent typing in a form keeps it when the complaint changes underneath: the form still
  // carries the version it was drawn for, so sending it gives an explained conflict.
  const editing = () => [...actions.querySelectorAll("input, textarea")].some((el) => el.value !== "");

  const warnChanged = (c, held) => {
    let banner = actions.querySelector("[data-testid=changed]");
    if (!banner) {
      banner = h("div", { class: "alert warning", "data-testid": "changed" });
      actions.querySelector("h2").after(banner);
    }
    banner.replaceChildren(
      h("p", {}, `This complaint changed while you were typing: it is now at version ${c.version} (${human(c.status).toLowerCase()}). The actions below still use version ${held}, so the service will refuse them.`),
      h("p", {}, h("button", { type: "button", class: "secondary", onclick: () => drawActions(state.view) }, "Show the actions for the latest version")),
    );
  };

  const drawHistory = (c) => {
    const timeline = h(
      "section",
      { class: "panel", "aria-labelledby": "h-timeline" },
      h("h2", { id: "h-timeline" }, "Timeline"),
      h(
        "ol",
        { class: "timeline", "data-testid": "timeline" },
        c.timeline.map((t) =>
          h(
            "li",
            { "data-event": t.eventType },
            h("span", { class: "what" }, human(t.eventType.replace(/^COMPLAINT_/, ""))),
            " → ", badge(t.status), h("br"),
            h("span", { class: "muted" }, when(t.timestamp), ` · version ${t.version}`, t.userId ? ` · by ${t.userId}` : ""),
          ),
        ),
      ),
    );
    const mails = c.notifications.filter((n) => n.eventType !== "NOTIFICATION_COMPENSATION");
    const corrections = c.notifications.filter((n) => n.eventType === "NOTIFICATION_COMPENSATION");
    const notifications = h(
      "section",
      { class: "panel", "aria-labelledby": "h-notifications" },
      h("h2", { id: "h-notifications" }, "Notifications"),
      table(
        null,
        ["Mail", "To", "Status", "At"],
        mails.map((n) => [human(n.template), n.recipient ?? "—", badge(n.status), when(n.at)]),
        "No mail sent yet.",
      ),
      corrections.length
        ? h("p", { class: "muted" }, `${corrections.length} correction${corrections.length === 1 ? "" : "s"} sent after a compensation.`)
        : null,
    );
    history.replaceChildren(timeline, notifications);
  };

  const drawTrail = async (c) => {
    let entries = null;
    try {
      entries = (await api("GET", `/api/console/audit/${encodeURIComponent(c.id)}`)).entries;
    } catch (e) {
      trail.replaceChildren(h("h2", { id: "h-audit" }, "Audit trail"), h("p", { class: "muted" }, `The audit trail is not available: ${e.message}`));
      return;
    }
    trail.replaceChildren(
      h("h2", { id: "h-audit" }, "Audit trail"),
      table(
        null,
        ["Event", "Version", "Recorded", "Correlation id", "Compensated"],
        entries.map((e) => [
          human(e.eventType),
          e.version ?? "—",
          when(e.recordedAt ?? e.timestamp),
          h("span", { class: "mono" }, e.correlationId ?? "—"),
          e.compensated ? badge("COMPENSATED", "Compensated") : "No",
        ]),
        "Nothing audited yet.",
      ),
    );
  };

  const show = (c, fromCommand) => {
    const key = JSON.stringify([c.version, c.sagaStatus, c.timeline.length, c.notifications.length, c.auditTrail.length]);
    const changed = !state.view || state.view.version !== c.version || state.view.sagaStatus !== c.sagaStatus;
    if (key === state.key && !fromCommand) return;
    state.view = c;
    state.key = key;
    drawFacts(c);
    if (fromCommand || (changed && !editing())) drawActions(c);
    else if (changed) warnChanged(c, state.actionsVersion);
    drawHistory(c);
    drawTrail(c);
  };

  const load = async () => {
    const c = await api("GET", `/api/complaints/${encodeURIComponent(id)}`);
    show(c, false);
  };
  load().catch((e) => {
    if (e.status === 404) {
      page("Complaint not found", h("p", {}, `There is no complaint ${id}. `, h("a", { href: "#/complaints" }, "Back to the list")));
    } else {
      failure(e);
    }
  });
  live(LIVE_MS, load);
}

// ---------- the operator's view ----------

function renderOperations() {
  const services = h("section", { class: "panel", "aria-labelledby": "h-services" }, h("h2", { id: "h-services" }, "Services"), "Loading…");
  const sagas = h("section", { class: "panel", "aria-labelledby": "h-sagas" }, h("h2", { id: "h-sagas" }, "Sagas"), "Loading…");
  const escalations = h("section", { class: "panel", "aria-labelledby": "h-escalations" }, h("h2", { id: "h-escalations" }, "Escalations"));
  const letters = h("section", { "aria-labelledby": "h-dlq" }, h("h2", { id: "h-dlq" }, "Dead letters"));
  const refresh = h("button", { type: "button", class: "secondary", onclick: () => load() }, "Refresh");
  page("Operations", h("p", { class: "buttons" }, refresh, h("span", { class: "muted" }, "Refreshes every 5 seconds.")), services, sagas, escalations, letters);
  const exchanges = new Map();

  const drawServices = (list) => {
    services.replaceChildren(
      h("h2", { id: "h-services" }, "Services"),
      table(
        null,
        ["Service", "State", "Detail", "Dead letters"],
        list.map((s) => [
          h("span", { class: "mono" }, s.service),
          badge(s.state.replace(/ /g, "-"), human(s.state)),
          s.detail === null ? "—" : typeof s.detail === "string" ? s.detail : s.detail.map((f) => `${f.backend}: ${f.error}`).join("; "),
          s.exchange ? (s.deadLetters ?? "?") : "—",
        ]),
        "No service.",
      ),
    );
  };

  const figure = (n, label, testid) => h("div", { class: "figure", "data-testid": testid }, h("span", { class: "n" }, String(n)), h("span", { class: "label" }, label));

  const drawSagas = ({ window, summary: s }) => {
    sagas.replaceChildren(
      h("h2", { id: "h-sagas" }, "Sagas"),
      h("p", { class: "muted" }, `Over the newest ${s.complaints} complaint${s.complaints === 1 ? "" : "s"} (at most ${window}).`),
      h(
        "div",
        { class: "figures" },
        figure(s.sagas.RUNNING, "running", "sagas-running"),
        figure(s.sagas.COMPENSATING, "compensating", "sagas-compensating"),
        figure(s.sagas.COMPLETED, "completed", "sagas-completed"),
        figure(s.compensations.count, "compensations done", "compensations"),
        figure(s.escalatedCount, "escalated", "escalated"),
      ),
      table(
        "Durations",
        ["", "Count", "Median", "95th percentile", "Longest"],
        [
          ["Created → closed", s.completed.count, seconds(s.completed.p50Seconds), seconds(s.completed.p95Seconds), seconds(s.completed.maxSeconds)],
          ["Compensation", s.compensations.count, seconds(s.compensations.p50Seconds), seconds(s.compensations.p95Seconds), seconds(s.compensations.maxSeconds)],
        ],
        "",
      ),
    );
    escalations.replaceChildren(
      h("h2", { id: "h-escalations" }, "Escalations"),
      table(
        null,
        ["Complaint", "Priority", "Status", "Assigned to", "Escalated"],
        s.escalations.map((e) => [
          h("a", { href: `#/complaints/${encodeURIComponent(e.id)}` }, e.title),
          badge(e.priority),
          badge(e.status),
          e.assignedTo ?? "—",
          when(e.escalatedAt),
        ]),
        "No open complaint was escalated.",
      ),
    );
  };

  const section = (exchange) => {
    if (!exchanges.has(exchange)) {
      const el = h("section", { class: "panel", "data-exchange": exchange, "aria-label": `Dead letters of ${exchange}` });
      exchanges.set(exchange, el);
      letters.append(el);
    }
    return exchanges.get(exchange);
  };

  const drawn = new Map();
  const drawLetters = (exchange, data, error) => {
    const el = section(exchange);
    // Redrawn only when it changed, so that open details stay open.
    const key = JSON.stringify(error ? error.message : data);
    if (drawn.get(exchange) === key) return;
    drawn.set(exchange, key);
    const title = h("h3", {}, h("span", { class: "mono" }, `${exchange}.dlq`));
    if (error) {
      el.replaceChildren(title, h("p", { class: "muted" }, `Not available: ${error.message}`));
      return;
    }
    const items = data.items;
    const redrive = h("button", { type: "button", disabled: items.length === 0 }, `Redrive ${items.length} message${items.length === 1 ? "" : "s"}`);
    redrive.addEventListener("click", async () => {
      redrive.disabled = true;
      try {
        const r = await api("POST", `/api/console/dlq/${encodeURIComponent(exchange)}/redrive`);
        say("success", `Redriven ${r.redriven} message${r.redriven === 1 ? "" : "s"} of ${exchange} to their queues.`);
      } catch (e) {
        failure(e);
      }
      await load();
    });
    el.replaceChildren(
      title,
      h("p", { class: "buttons" }, h("span", { "data-testid": "dlq-count" }, `${items.length} message${items.length === 1 ? "" : "s"}`), redrive),
      table(
        null,
        ["Message", "Queue", "Attempts", "Last error", "Dead-lettered", "Details"],
        items.map((m) => [
          h("span", { class: "mono" }, m.messageId),
          h("span", { class: "mono" }, m.queue),
          String(m.attempts),
          m.lastError,
          when(m.deadLetteredAt),
          h(
            "details",
            {},
            h("summary", {}, "Headers and body"),
            h("dl", { class: "facts" }, Object.entries(m.headers ?? {}).map(([k, v]) => [h("dt", { class: "mono" }, k), h("dd", { class: "mono" }, String(v))])),
            h("pre", {}, m.body),
          ),
        ]),
        "Nothing here.",
      ),
    );
  };

  const load = async () => {
    refresh.disabled = true;
    const [svc, sum] = await Promise.allSettled([api("GET", "/api/console/services"), api("GET", "/api/sagas/summary")]);
    if (svc.status === "fulfilled") drawServices(svc.value.services);
    else services.replaceChildren(h("h2", { id: "h-services" }, "Services"), h("p", {}, `Not available: ${svc.reason.message}`));
    if (sum.status === "fulfilled") drawSagas(sum.value);
    else sagas.replaceChildren(h("h2", { id: "h-sagas" }, "Sagas"), h("p", {}, `Not available: ${sum.reason.message}`));
    const owned = svc.status === "fulfilled" ? svc.value.services.filter((s) => s.exchange) : [];
    await Promise.all(
      owned.map(async (s) => {
        try {
          drawLetters(s.exchange, await api("GET", `/api/console/dlq/${encodeURIComponent(s.exchange)}`));
        } catch (e) {
          drawLetters(s.exchange, null, e);
        }
      }),
    );
    refresh.disabled = false;
  };
  load();
  live(OPERATIONS_MS, load);
}

// ---------- start ----------

// The skip link moves focus without touching the route in the address.
document.querySelector(".skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", () => {
  route();
  main.focus();
});
route();
