// The console's browser scenarios, run by tests/saga/console.rs:
//   node console.mjs <life|errors|operations>
// Environment: CONSOLE_URL (the complaint service), CHROMIUM (the browser), PLAYWRIGHT_CORE
// (the package's directory), SCREENSHOTS (where the PNGs go).
// Prints one line a step, then "scenario <name>: passed"; exits 1 with what it saw otherwise.

import { createRequire } from "node:module";
import path from "node:path";

const need = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is not set (tests/saga/console.rs sets it)`);
    process.exit(2);
  }
  return v;
};
const BASE = need("CONSOLE_URL");
const SHOTS = need("SCREENSHOTS");
const { chromium } = createRequire(import.meta.url)(need("PLAYWRIGHT_CORE"));
const scenario = process.argv[2];
const TIMEOUT = 15000;

const step = (text) => console.log(`- ${text}`);
const fail = (text) => {
  throw new Error(text);
};

/** Waits until `check()` returns a truthy value, up to the deadline; its last value is shown. */
async function until(what, check, ms = TIMEOUT) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) fail(`timed out waiting for ${what} (last seen: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const rows = (page, section) => page.locator(`section[aria-labelledby="${section}"] tbody tr`);
const notice = (page) => page.locator("#notice");

async function noticeSays(page, text) {
  await notice(page).getByText(text, { exact: false }).first().waitFor();
}

async function event(page, type, count = 1) {
  await until(`${count} ${type} in the timeline`, async () =>
    (await page.locator(`[data-testid=timeline] li[data-event="${type}"]`).count()) >= count,
  );
}

async function statusIs(page, status) {
  await page.locator(`[aria-label=Facts] .badge.${status}`).first().waitFor();
}

async function shot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  step(`screenshot ${file}`);
}

/** Labels, names, language and contrast (WCAG AA: 4.5:1, 3:1 for large text) on the page. */
async function accessible(page, where) {
  const problems = await page.evaluate(() => {
    const out = [];
    if (!document.documentElement.lang) out.push("the page has no lang");
    for (const el of document.querySelectorAll("input, select, textarea")) {
      if (!el.labels?.length && !el.getAttribute("aria-label")) out.push(`unlabelled ${el.outerHTML.slice(0, 80)}`);
    }
    for (const el of document.querySelectorAll("button, a")) {
      if (!el.textContent.trim() && !el.getAttribute("aria-label")) out.push(`no name: ${el.outerHTML.slice(0, 80)}`);
    }
    for (const img of document.querySelectorAll("img")) {
      if (!img.hasAttribute("alt")) out.push(`no alt: ${img.outerHTML.slice(0, 80)}`);
    }
    const rgb = (text) => {
      const m = text.match(/rgba?\(([^)]+)\)/);
      if (!m) return null;
      const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return { r, g, b, a };
    };
    const lum = ({ r, g, b }) => {
      const c = [r, g, b].map((v) => {
        v /= 255;
        return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c && c.a > 0) return c;
      }
      return { r: 255, g: 255, b: 255, a: 1 };
    };
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const seen = new Set();
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!n.textContent.trim() || seen.has(el) || el.closest("[disabled], noscript, .skip")) continue;
      seen.add(el);
      const style = getComputedStyle(el);
      if (style.visibility === "hidden" || style.display === "none" || !el.getClientRects().length) continue;
      const fg = rgb(style.color);
      const bg = background(el);
      const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
      const ratio = (hi + 0.05) / (lo + 0.05);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) out.push(`contrast ${ratio.toFixed(2)} for "${n.textContent.trim().slice(0, 40)}"`);
    }
    return out;
  });
  if (problems.length) fail(`accessibility problems on ${where}:\n  ${problems.join("\n  ")}`);
  step(`${where}: every control labelled, every text at AA contrast`);
}

async function fits(page, where) {
  const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (wide > 1) fail(`${where} is ${wide}px wider than the phone's screen`);
  step(`${where} fits a ${page.viewportSize().width}px screen`);
}

async function create(page, values) {
  await page.getByRole("link", { name: "New complaint" }).click();
  await page.getByRole("heading", { name: "New complaint" }).waitFor();
  for (const [label, value] of Object.entries(values)) {
    const control = page.getByLabel(label, { exact: true });
    if (label === "Priority") await control.selectOption(value);
    else await control.fill(value);
  }
}

/** Posts complaints straight to the API (to have something to page through). */
async function seed(n, prefix) {
  for (let i = 0; i < n; i++) {
    const r = await fetch(`${BASE}/api/complaints`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ userId: `${prefix}-${i}`, title: `${prefix} ${i}`, description: "seeded", priority: "LOW", category: prefix }),
    });
    if (r.status !== 201) fail(`seeding: POST answered ${r.status}`);
  }
}

const scenarios = {
  async life(browser) {
    const page = await open(browser, { width: 1280, height: 860 });
    await page.goto(`${BASE}/`);
    await page.getByRole("heading", { name: "Complaints" }).waitFor();
    step("GET / shows the complaint desk");

    await page.getByRole("link", { name: "New complaint" }).click();
    await page.getByLabel("User", { exact: true }).focus();
    await page.keyboard.type("ada@example.com");
    await page.keyboard.press("Tab");
    await page.keyboard.type("The parcel never came");
    await page.keyboard.press("Tab");
    await page.keyboard.type("Ordered on the 3rd, tracking says delivered, nothing at the door.");
    await page.keyboard.press("Tab");
    await page.keyboard.press("End"); // the last priority: Critical
    await page.keyboard.press("Tab");
    await page.keyboard.type("delivery");
    await page.keyboard.press("Enter");
    await page.waitForURL(/#\/complaints\/[^/]+$/);
    await noticeSays(page, "created");
    const id = decodeURIComponent(page.url().split("/").pop());
    await page.getByRole("heading", { name: "The parcel never came" }).waitFor();
    await statusIs(page, "OPEN");
    await page.locator("[aria-label=Facts] .badge.CRITICAL").waitFor();
    step(`created ${id} with the keyboard through the form`);

    await event(page, "COMPLAINT_CREATED");
    await until("the two acknowledgement mails in the notifications", async () => (await rows(page, "h-notifications").count()) >= 2);
    await until("the audit trail", async () => (await rows(page, "h-audit").count()) >= 1);
    step("the timeline, notifications and audit trail filled in without a reload");

    await page.getByLabel("Assign to").fill("agent-7");
    await page.getByRole("button", { name: "Assign", exact: true }).click();
    await statusIs(page, "ASSIGNED");
    await event(page, "COMPLAINT_ASSIGNED");
    await until("agent-7 assigned", async () => (await page.getByTestId("assigned-to").textContent()) === "agent-7");
    step("assigned to agent-7");

    await page.getByRole("button", { name: "Start work" }).click();
    await statusIs(page, "IN_PROGRESS");
    await event(page, "COMPLAINT_PROCESSED");
    step("work started");

    await page.getByLabel("Resolution").fill("Refunded in full and apologised.");
    await page.getByRole("button", { name: "Resolve" }).click();
    await statusIs(page, "RESOLVED");
    await event(page, "COMPLAINT_PROCESSED", 2);
    step("resolved");

    await page.getByRole("button", { name: "Close", exact: true }).click();
    await statusIs(page, "CLOSED");
    await event(page, "COMPLAINT_CLOSED");
    await page.locator("[aria-label=Facts] .badge.COMPLETED").waitFor();
    await page.getByText("nothing more can be done").waitFor();
    step("closed, and the saga COMPLETED once the closing mail went out");

    // Created: user and admin; assigned: assignee and user; processed twice, closed: the user.
    await until("six mails in the notifications", async () => (await rows(page, "h-notifications").count()) >= 6);
    await until("the five events in the audit trail", async () => (await rows(page, "h-audit").count()) >= 5);
    const versions = await page.locator("[data-testid=timeline] li").count();
    if (versions !== 5) fail(`the timeline has ${versions} entries, not 5`);
    step("six mails, five timeline entries, five audit entries");
    await shot(page, "complaint");

    const phone = await open(browser, { width: 390, height: 844 }, true);
    await phone.goto(`${BASE}/#/complaints/${encodeURIComponent(id)}`);
    await phone.locator("[aria-label=Facts] .badge.COMPLETED").waitFor();
    await fits(phone, "the complaint page");
    await shot(phone, "complaint-phone");

    await seed(27, "paging");
    await page.getByRole("link", { name: "Complaints", exact: true }).click();
    await until("the first page of 25", async () => (await page.locator("tbody tr").count()) === 25);
    await page.getByRole("button", { name: "Load more" }).click();
    await until("all 28 after Load more", async () => (await page.locator("tbody tr").count()) === 28);
    // Newest first: the complaint made through the form, before the 27 others, comes last.
    await page.locator("tbody tr").last().getByRole("link", { name: "The parcel never came" }).waitFor();
    step("25 complaints a page, newest first; Load more brought the other 3");
    await page.getByLabel("Status").selectOption("CLOSED");
    await page.getByRole("button", { name: "Apply" }).click();
    await page.waitForURL(/status=CLOSED/);
    await until("only the closed complaint", async () => (await page.locator("tbody tr").count()) === 1);
    await page.getByRole("link", { name: "The parcel never came" }).waitFor();
    await page.getByLabel("Priority").selectOption("LOW");
    await page.getByRole("button", { name: "Apply" }).click();
    await page.getByText("No complaint matches these filters.").waitFor();
    await page.getByRole("button", { name: "Reset" }).click();
    await page.getByLabel("Category").fill("paging");
    await page.getByRole("button", { name: "Apply" }).click();
    await page.getByRole("button", { name: "Load more" }).click();
    await until("the 27 seeded ones", async () => (await page.locator("tbody tr").count()) === 27);
    step("filters by status, priority and category narrow the list");
    await page.getByRole("button", { name: "Reset" }).click();
    await until("the first page again", async () => (await page.locator("tbody tr").count()) === 25);
    await shot(page, "desk");
  },

  async errors(browser) {
    const a = await open(browser, { width: 1280, height: 860 });
    await a.goto(`${BASE}/#/new`);
    await accessible(a, "the new complaint form");
    await create(a, { User: "grace", Description: "The invoice counts the same item twice.", Priority: "HIGH", Category: "billing" });
    await a.getByRole("button", { name: "Create complaint" }).click();
    const title = a.getByLabel("Title", { exact: true });
    await a.locator("#err-title").getByText("title").waitFor();
    if ((await title.getAttribute("aria-invalid")) !== "true") fail("the title is not marked invalid");
    if (!(await title.evaluate((el) => el === document.activeElement))) fail("the invalid title does not have the focus");
    await noticeSays(a, "fix the field marked below");
    step(`an empty title: "${await a.locator("#err-title").textContent()}" at the field, which has the focus`);
    await shot(a, "new-complaint-error");
    await title.fill("Charged twice");
    await a.getByRole("button", { name: "Create complaint" }).click();
    await a.waitForURL(/#\/complaints\/[^/]+$/);
    const url = a.url();
    await statusIs(a, "OPEN");
    step("the corrected form created the complaint");
    await accessible(a, "the complaint page");

    const b = await open(browser, { width: 1280, height: 860 });
    await b.goto(url);
    await statusIs(b, "OPEN");
    await b.getByLabel("Assign to").fill("agent-b");
    await a.getByLabel("Assign to").fill("agent-a");
    await a.getByRole("button", { name: "Assign", exact: true }).click();
    await statusIs(a, "ASSIGNED");
    await b.getByTestId("changed").waitFor();
    step("the second agent, still typing, is told the complaint changed");
    await b.getByRole("button", { name: "Assign", exact: true }).click();
    await noticeSays(b, "Someone else changed this complaint");
    await noticeSays(b, "You had version 1; it is now at version 2");
    await until("the second agent sees agent-a", async () => (await b.getByTestId("assigned-to").textContent()) === "agent-a");
    step("their command got a 412, explained, and the page shows the latest state");
    await shot(b, "version-conflict");
    await b.getByLabel("Assign to").fill("agent-b");
    await b.getByRole("button", { name: "Assign", exact: true }).click();
    await until("agent-b assigned", async () => (await b.getByTestId("assigned-to").textContent()) === "agent-b");
    step("sent again on the latest version, it applied");

    await b.getByLabel("Why undo it").fill("assigned to the wrong team");
    await b.getByRole("button", { name: "Undo last step" }).click();
    await event(b, "COMPLAINT_COMPENSATION_REQUIRED");
    await event(b, "COMPLAINT_COMPENSATED");
    await until("agent-a restored", async () => (await b.getByTestId("assigned-to").textContent()) === "agent-a");
    await b.locator("[aria-label=Facts] .badge.RUNNING").waitFor();
    await until("the compensation mark in the audit trail", async () => (await b.locator("section[aria-labelledby=h-audit] .badge.COMPENSATED").count()) >= 1);
    step("undo last step: compensated, agent-a restored, the saga running again, the audit entry marked");

    const phone = await open(browser, { width: 390, height: 844 }, true);
    for (const [where, hash] of [["the desk", "#/complaints"], ["the form", "#/new"], ["operations", "#/operations"], ["the complaint page", url.split("#")[1]]]) {
      await phone.goto(`${BASE}/#${hash.replace(/^#/, "")}`);
      await phone.locator("main h1").waitFor();
      await phone.locator("[aria-busy]").waitFor({ state: "detached" });
      await fits(phone, where);
    }
    const keys = await open(browser, { width: 1280, height: 860 });
    await keys.goto(`${BASE}/#/complaints`);
    await keys.locator("main h1").waitFor();
    await keys.keyboard.press("Tab");
    if (!(await keys.evaluate(() => document.activeElement?.classList.contains("skip")))) fail("the first Tab does not reach the skip link");
    await keys.keyboard.press("Enter");
    if (!(await keys.evaluate(() => document.activeElement?.id === "main"))) fail("the skip link does not move the focus to the content");
    if (!keys.url().endsWith("#/complaints")) fail(`the skip link changed the route: ${keys.url()}`);
    step("the first Tab reaches the skip link, which moves the focus to the content");
  },

  async operations(browser) {
    const page = await open(browser, { width: 1280, height: 1000 });
    await page.goto(`${BASE}/#/operations`);
    await until("four services", async () => (await rows(page, "h-services").count()) === 4);
    await until("four ready services", async () => (await page.locator("section[aria-labelledby=h-services] .badge.ready").count()) === 4);
    step("complaint, notification, audit and event store: ready");
    const figure = async (id) => Number(await page.getByTestId(id).locator(".n").textContent());
    await until("a completed saga", async () => (await figure("sagas-completed")) >= 1);
    await until("an escalation", async () => (await figure("escalated")) >= 1);
    await until("the escalated complaint listed", async () => (await rows(page, "h-escalations").count()) >= 1);
    step(`sagas: ${await figure("sagas-running")} running, ${await figure("sagas-completed")} completed, ${await figure("escalated")} escalated`);

    const dlq = page.locator('section[data-exchange="complaints.events"]');
    await dlq.getByTestId("dlq-count").getByText("2 messages").waitFor();
    for (const other of ["notifications.events", "audit.events"]) {
      await page.locator(`section[data-exchange="${other}"]`).getByTestId("dlq-count").getByText("0 messages").waitFor();
    }
    await dlq.locator("summary").first().click();
    await dlq.getByText("not an event").first().waitFor();
    await dlq.getByText("x-correlation-id").first().waitFor();
    await dlq.getByText("poison message").first().waitFor();
    step("the poison message's two dead letters, with their queue, error, headers and body");
    await accessible(page, "the operator's view");
    await shot(page, "operations");

    await dlq.getByRole("button", { name: "Redrive 2 messages" }).click();
    await noticeSays(page, "Redriven 2 messages of complaints.events");
    step("redrive: 2 messages sent back to their queues");
  },
};

const pageErrors = [];
async function open(browser, viewport, mobile = false) {
  const context = await browser.newContext({ viewport, isMobile: mobile, hasTouch: mobile });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // A refused request is logged by Chromium as "Failed to load resource": those are the
    // scenarios' own 400s and 412s. Anything else (a CSP refusal, a script error) is a fault.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(`console: ${m.text()}`);
  });
  return page;
}

if (!scenarios[scenario]) {
  console.error(`no scenario ${scenario}; there are ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
// Chromium has been seen to crash while starting (SIGSEGV before its first page) on a loaded
// machine: starting the browser is tried three times; what the scenario does is never retried.
async function launch() {
  for (let attempt = 1; ; attempt++) {
    try {
      return await chromium.launch({
        executablePath: need("CHROMIUM"),
        headless: true,
        args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      });
    } catch (e) {
      if (attempt >= 3) throw e;
      console.error(`chromium did not start (attempt ${attempt}): ${String(e.message).split("\n")[0]}`);
    }
  }
}
const browser = await launch();
let failed = null;
try {
  await scenarios[scenario](browser);
  if (pageErrors.length) fail(`the pages reported errors:\n  ${pageErrors.join("\n  ")}`);
} catch (e) {
  failed = e;
  for (const context of browser.contexts()) {
    for (const page of context.pages()) {
      const file = path.join(SHOTS, `failure-${scenario}-${Date.now()}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      console.log(`at ${page.url()} (screenshot ${file}):\n${await page.locator("body").innerText().catch(() => "?")}`);
    }
  }
}
await browser.close();
if (failed) {
  console.log(`scenario ${scenario}: FAILED: ${failed.stack ?? failed}`);
  process.exit(1);
}
console.log(`scenario ${scenario}: passed`);
