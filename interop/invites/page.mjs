// Follows an invite link in headless Chromium (playwright-core driving Debian's chromium),
// fills in the registration form and checks the success page.
//
//   node page.mjs URL USERNAME PASSWORD
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, username, password] = process.argv.slice(2);
if (!url || !username || !password) {
  console.error("usage: node page.mjs URL USERNAME PASSWORD");
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), "corvid-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});

function fail(message) {
  throw new Error(message);
}

try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // The page must not load anything from elsewhere.
  page.on("request", (r) => {
    if (!r.url().startsWith(new URL(url).origin)) errors.push(`external request: ${r.url()}`);
  });

  const first = await page.goto(url);
  if (first.status() !== 200) fail(`invite page answered ${first.status()}`);
  const heading = await page.textContent("h1");
  if (!/invited/i.test(heading)) fail(`unexpected heading: ${heading}`);
  const appLink = await page.getAttribute("a.button", "href");
  if (!appLink.startsWith("xmpp:") || !appLink.includes("preauth=")) fail(`no xmpp: link: ${appLink}`);

  await page.fill("#username", username);
  await page.fill("#password", password);
  await page.fill("#password_again", password);
  const [done] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  if (done.status() !== 200) fail(`registration answered ${done.status()}: ${await page.content()}`);
  const text = await page.textContent("main");
  if (!/account is ready/i.test(text)) fail(`no success page: ${text}`);
  const jid = await page.textContent(".jid-done");

  // The link is single-use: following it again says so.
  const again = await page.goto(url);
  if (again.status() !== 410) fail(`a used invite answered ${again.status()}`);
  if (errors.length) fail(errors.join("; "));
  console.log(jid);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
