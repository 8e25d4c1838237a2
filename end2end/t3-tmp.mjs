import { chromium } from "@playwright/test";
const b = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--headless", "--no-sandbox", "--disable-gpu"] });
const p = await b.newPage({ viewport: { width: 1400, height: 1000 } });
const base = "http://127.0.0.1:3300";
await p.goto(base + "/login");
await p.waitForSelector("body[data-hydrated='true']");
await p.locator("input[name=email]").fill("admin@warden.local");
await p.locator("input[type=password]").first().fill("vis-new-password-22");
await p.getByRole("button", { name: "Sign in" }).click();
await p.waitForURL(/\/(\?.*)?$/);
for (const q of ["q=payments-batch", "q=payments-batch", "q=LOCKED", "q=LOCKED", "range=30d&status=403&cluster=prod-us-1", "range=30d&status=403&cluster=prod-us-1"]) {
  const t0 = Date.now();
  const nav = p.goto(base + "/audit?" + q, { waitUntil: "commit" });
  await p.waitForSelector("[data-testid=audit-events], .empty", { timeout: 60000 });
  const tList = Date.now() - t0;
  await p.waitForSelector("[data-testid=audit-facets]", { timeout: 60000 });
  const tFacets = Date.now() - t0;
  await nav;
  console.log(`${q}: list on screen ${tList} ms, histogram and facets ${tFacets} ms`);
}
await b.close();
