// Converse.js (its headless build, from npm) in headless Chromium (playwright-core driving
// Debian's chromium) logs in to corvid over BOSH, sends a message to a slixmpp user and waits
// for the answer, then shares a file through XEP-0363 (slot, PUT from the page) and waits for
// the slixmpp user to say it downloaded the same bytes. The page is served from a local static server on another port than corvid,
// so BOSH requests are cross-origin: CORS and the preflight are exercised too.
//
//   node page.mjs BOSH_URL JID PASSWORD PEER_JID FILE_CONTENT
import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const TIMEOUT_MS = 60_000;
const [boshUrl, jid, password, peer, content] = process.argv.slice(2);
if (!boshUrl || !jid || !password || !peer || !content) {
  console.error("usage: node page.mjs BOSH_URL JID PASSWORD PEER_JID FILE_CONTENT");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "node_modules", "@converse", "headless", "dist");
const files = {
  "/index.html": [join(here, "index.html"), "text/html; charset=utf-8"],
  "/converse-headless.min.js": [join(dist, "converse-headless.min.js"), "text/javascript"],
};
const server = createServer((req, res) => {
  const file = files[new URL(req.url, "http://x").pathname];
  if (!file) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { "Content-Type": file[1] }).end(readFileSync(file[0]));
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

const profile = mkdtempSync(join(tmpdir(), "corvid-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});

let state = null;
const log = [];
let boshPosts = 0;
let status = 0;
try {
  const page = await browser.newPage();
  page.on("console", (m) => log.push(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log.push(`page error: ${e}`));
  page.on("request", (r) => {
    if (r.url() === boshUrl && r.method() === "POST") boshPosts += 1;
  });
  const query = new URLSearchParams({ bosh: boshUrl, jid, password, peer, content });
  await page.goto(`${origin}/index.html?${query}`);
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    state = await page.evaluate(() => window.interop);
    const fetched = state?.received?.some(
      (m) => m.from?.startsWith(peer) && m.body === "downloaded the file",
    );
    if (fetched) break;
    if (state?.errors?.length) throw new Error(state.errors.join("; "));
    if (Date.now() > deadline) {
      throw new Error("no answer, or no word of the download, from the slixmpp user in time");
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  if (!state.bosh) throw new Error("Converse did not connect over BOSH");
  if (boshPosts < 2) throw new Error(`only ${boshPosts} BOSH requests seen`);
  if (state.errors.length) throw new Error(state.errors.join("; "));
  if (!state.uploaded) throw new Error("the upload never finished");
  console.log(
    `converse: logged in as ${state.jid} over BOSH (${boshPosts} requests), got the answer, ` +
      `shared ${state.uploaded}`,
  );
} catch (e) {
  console.error(`converse: ${e.message}`);
  console.error(`state: ${JSON.stringify(state)}`);
  console.error(log.slice(-60).join("\n"));
  status = 1;
} finally {
  await browser.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
