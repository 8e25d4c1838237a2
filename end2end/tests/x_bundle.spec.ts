// The console's WASM bundle is split by area (app/src/lib.rs, `pages`): a page downloads the main
// module and its own area's chunks (which the server links as preloads), another area's code
// comes when one of its pages is first shown, and a page of an area already loaded downloads
// nothing more. A chunk of another build is never served.
import { expect, test, type Page } from "@playwright/test";
import { act, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check } from "./fixtures/console";

// A chunk: an area's own module (`split_<area>_…`) or one shared by several (`chunk_<n>`),
// named after its build.
const CHUNK = /\/pkg\/[0-9a-f]{16}\/(chunk_\d+|split_\w+)\.[0-9a-f]{16}\.wasm$/;
const CHUNK_LINK = 'link[rel="preload"][href$=".wasm"]:not([href$="/warden.wasm"])';

/** Every .wasm address the page requests from now on. */
function wasmRequests(page: Page): string[] {
  const seen: string[] = [];
  page.on("request", (r) => {
    if (new URL(r.url()).pathname.endsWith(".wasm")) seen.push(new URL(r.url()).pathname);
  });
  return seen;
}

async function goByNav(page: Page, name: string, heading: string) {
  await page.locator("#main-nav").getByRole("link", { name, exact: true }).click();
  await expect(page.getByRole("heading", { level: 1, name: heading })).toBeVisible();
  await page.waitForLoadState("networkidle");
}

test.describe.serial("the split console bundle", () => {
  test("a page loads its own area's code; another area's when it is first shown", async ({ page }) => {
    const noErrors = check.noConsoleErrors(page);
    await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);

    // A full load of the overview: the main module, and the overview's chunks, linked by the
    // server as preloads and all fetched.
    const seen = wasmRequests(page);
    await act.open(page, "/");
    await page.waitForLoadState("networkidle");
    expect(seen.some((p) => p.endsWith("/warden.wasm")), seen.join("\n")).toBe(true);
    const preloads = await page
      .locator(CHUNK_LINK)
      .evaluateAll((links) => links.map((l) => l.getAttribute("href") ?? ""));
    expect(preloads.length).toBeGreaterThan(0);
    for (const href of preloads) {
      expect(href).toMatch(CHUNK);
      expect(seen, href).toContain(href);
    }
    const overview = new Set(seen.filter((p) => CHUNK.test(p)));
    expect(overview.size).toBeGreaterThan(0);

    // Users: the people area's code, fetched now (client-side navigation, no page load).
    seen.length = 0;
    await goByNav(page, "Users", "Users");
    await expect(page.getByTestId("users")).toBeVisible();
    const people = seen.filter((p) => CHUNK.test(p) && !overview.has(p));
    expect(people.length, seen.join("\n")).toBeGreaterThan(0);
    expect(seen.some((p) => p.endsWith("/warden.wasm"))).toBe(false);

    // Groups and Roles are in the same area: nothing more to download, and they work.
    seen.length = 0;
    await goByNav(page, "Groups", "Groups");
    await goByNav(page, "Roles", "Roles");
    expect(seen, seen.join("\n")).toEqual([]);

    // The audit log is another area: its code comes now.
    await goByNav(page, "Audit log", "Audit log");
    expect(seen.filter((p) => CHUNK.test(p)).length, seen.join("\n")).toBeGreaterThan(0);
    noErrors();
  });

  test("a chunk of another build is not served", async ({ page, request }) => {
    const seen = wasmRequests(page);
    await act.open(page, "/login");
    await page.waitForLoadState("networkidle");
    const js = await page.locator('link[rel="modulepreload"][href$="/warden.js"]').first().getAttribute("href");
    const pkg = js!.replace(/\/warden\.js$/, "");
    const chunk = seen.find((p) => CHUNK.test(p));
    expect(chunk, seen.join("\n")).toBeDefined();
    expect((await request.get(chunk!)).status()).toBe(200);
    // The same chunk under another build's name: a page of that build must not get this one.
    const other = chunk!.replace(/\.[0-9a-f]{16}\.wasm$/, ".0123456789abcdef.wasm");
    expect((await request.get(other)).status()).toBe(404);
    expect((await request.get(`${pkg}/__wasm_split.0123456789abcdef.js`)).status()).toBe(404);
  });
});
