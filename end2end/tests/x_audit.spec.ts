// The audit log page answers "who did what, where" at a glance: Kubernetes requests show their
// verb, resource, cluster and namespace; discovery is folded away unless asked for; the filters
// live in the URL; the export carries exactly the current filter.
//
// Runs after w_clusters.spec.ts (files run in name order): kubectl has been used through the
// gateway by then.
import { expect, test } from "@playwright/test";
import { act, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check } from "./fixtures/console";

test.describe.serial("audit log page", () => {
  test("Kubernetes requests read as verb, resource and place; discovery is folded; export follows the filter", async ({ page }) => {
    const noErrors = check.noConsoleErrors(page);
    await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);

    await act.open(page, "/audit?kind=kube_api&range=24h");
    const table = page.getByTestId("audit-events");
    await expect(table).toBeVisible();
    const what = page.getByTestId("audit-what");
    // `kubectl get namespaces` through the gateway: "list namespaces", with its cluster.
    await expect(what.filter({ hasText: /^list namespaces$/ }).first()).toBeVisible();
    await expect(page.getByTestId("audit-where").filter({ hasText: /e2e-sim/ }).first()).toBeVisible();
    // kubectl's discovery requests (`GET /api`, `/apis`...) are audited...
    const api = await page.request.get("/api/v1/audit/events?kind=kube_api&limit=500");
    expect(api.status()).toBe(200);
    const discovery = (await api.json()).items.find((e: { resource_kind: string | null }) => e.resource_kind === null);
    expect(discovery, "a discovery request in the audit log").toBeTruthy();
    const gatewayPath = String(discovery.path).split("?")[0];
    const shown = `get ${gatewayPath.replace(/^\/clusters\/[^/]+/, "")}`;
    // ...but not listed by default...
    await act.open(page, `/audit?kind=kube_api&q=${encodeURIComponent(gatewayPath)}`);
    await expect(page.getByTestId("audit-discovery")).not.toBeChecked();
    await expect(what.filter({ hasText: shown })).toHaveCount(0);
    // ...and are, when asked for (the choice is in the URL).
    await page.getByTestId("audit-discovery").check();
    await page.getByRole("button", { name: "Search" }).click();
    await expect(page).toHaveURL(/discovery=true/);
    await expect(what.filter({ hasText: shown }).first()).toBeVisible();

    // The verb filter narrows to one verb.
    await act.open(page, "/audit?kind=kube_api&verb=list");
    await expect(what.first()).toBeVisible();
    for (const text of await what.allTextContents()) {
      expect(text).toMatch(/^list /);
    }
    // A verb the list does not offer (a facet's: a stream's start) stays selected, so the next
    // search keeps it.
    await act.open(page, "/audit?kind=kube_api&verb=watch.start");
    await expect(page.locator("#audit-verb")).toHaveValue("watch.start");
    await page.getByRole("button", { name: "Search" }).click();
    await expect(page).toHaveURL(/verb=watch\.start/);

    // Who: the start of an email is enough.
    await act.open(page, "/audit?actor=admin%40");
    const who = page.getByTestId("audit-who");
    await expect(who.first()).toBeVisible();
    for (const text of await who.allTextContents()) {
      expect(text).toMatch(/^admin@/);
    }

    // The export is the current filter, as CSV.
    await act.open(page, "/audit?kind=kube_api&verb=list&range=7d");
    const href = await page.getByTestId("audit-export").getAttribute("href");
    expect(href).toContain("format=csv");
    expect(href).toContain("verb=list");
    expect(href).toContain("discovery=false");
    const csv = await page.request.get(href!);
    expect(csv.status()).toBe(200);
    expect(csv.headers()["content-type"]).toContain("text/csv");
    const lines = (await csv.text()).trim().split("\n");
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.slice(1).every((l) => l.includes("kube.list"))).toBe(true);
    // The same filter as NDJSON: one event a line, the same events.
    const ndjsonHref = await page.getByTestId("audit-export-ndjson").getAttribute("href");
    expect(ndjsonHref).toContain("format=ndjson");
    expect(ndjsonHref).toContain("verb=list");
    const ndjson = await page.request.get(ndjsonHref!);
    expect(ndjson.status()).toBe(200);
    expect(ndjson.headers()["content-type"]).toContain("ndjson");
    const events = (await ndjson.text()).trim().split("\n").map((l) => JSON.parse(l));
    expect(events.length).toBeGreaterThan(0);
    expect(events.every((e: { action: string }) => e.action === "kube.list")).toBe(true);
    noErrors();
  });

  test("facets narrow the filter; the histogram zooms into a bucket", async ({ page }) => {
    const noErrors = check.noConsoleErrors(page);
    await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);
    await act.open(page, "/audit?kind=kube_api&range=24h");
    const facets = page.getByTestId("audit-facets");
    await expect(facets).toBeVisible();
    // The verb facet counts `list` requests; following it narrows the list to them.
    const list = page.getByTestId("facet-verb-list");
    await expect(list).toBeVisible();
    const listed = Number(await list.locator(".facet-count").textContent());
    expect(listed).toBeGreaterThan(0);
    await list.click();
    await expect(page).toHaveURL(/verb=list/);
    await expect(page).toHaveURL(/range=24h/);
    const what = page.getByTestId("audit-what");
    await expect(what.first()).toBeVisible();
    for (const text of await what.allTextContents()) {
      expect(text).toMatch(/^list /);
    }
    await expect(page.getByTestId("facet-verb-list")).toHaveClass(/selected/);
    // Then the cluster facet: both filters hold, the total is at most the verb's count.
    await page.getByTestId("facet-cluster-e2e-sim").click();
    await expect(page).toHaveURL(/cluster=e2e-sim/);
    await expect(page).toHaveURL(/verb=list/);
    await expect(page.getByTestId("facet-cluster-e2e-sim")).toHaveClass(/selected/);
    for (const text of await page.getByTestId("audit-where").allTextContents()) {
      expect(text).toContain("e2e-sim");
    }
    // The same counts as the REST API's facets for that filter.
    const api = await page.request.get("/api/v1/audit/facets?kind=kube_api&range=24h&verb=list&cluster=e2e-sim&discovery=false");
    expect(api.status()).toBe(200);
    const total = (await api.json()).total;
    await expect(facets.locator(".facets-total strong")).toHaveText(String(total));
    expect(total).toBeLessThanOrEqual(listed);

    // The histogram: one bar per bucket; a bar with events zooms the range to its bucket.
    const histogram = page.getByTestId("audit-histogram");
    await expect(histogram).toBeVisible();
    const bar = histogram.locator("a.bar:not([data-count='0'])").last();
    const inBar = Number(await bar.getAttribute("data-count"));
    expect(inBar).toBeGreaterThan(0);
    await bar.click();
    await expect(page).toHaveURL(/since=/);
    await expect(page).toHaveURL(/until=/);
    await expect(page).not.toHaveURL(/range=/);
    await expect(page).toHaveURL(/verb=list/);
    await expect(what.first()).toBeVisible();
    await expect(facets.locator(".facets-total strong")).toHaveText(String(inBar));
    noErrors();
  });

  test("an event opens on its own page, with its fields, raw JSON and a link to its user", async ({ page }) => {
    const noErrors = check.noConsoleErrors(page);
    await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);
    await act.open(page, "/audit?kind=console&actor=admin%40");
    const open = page.getByTestId("audit-open").first();
    await expect(open).toBeVisible();
    // Console actions read as words (the code beside them, for the action filter).
    const words = (await page.getByTestId("audit-what").first().textContent())!.trim();
    expect(words).toMatch(/^[a-z][a-z -]+/);
    expect(words).not.toMatch(/^[a-z_]+\.[a-z_.]+/);
    await open.click();
    await expect(page).toHaveURL(/\/audit\/[0-9a-f-]{36}$/);
    const id = page.url().split("/").pop()!;
    await expect(page.getByTestId("audit-event")).toBeVisible();
    await expect(page.getByTestId("audit-event-what")).toHaveText(words);
    await expect(page.getByTestId("audit-event-json")).toContainText(`"id": "${id}"`);
    // The same event through the REST API.
    const api = await page.request.get(`/api/v1/audit/events/${id}`);
    expect(api.status()).toBe(200);
    expect((await api.json()).event.id).toBe(id);
    // Its user's page.
    const user = page.getByTestId("audit-event-user");
    await expect(user).toHaveText(ADMIN_EMAIL);
    await user.click();
    await expect(page).toHaveURL(/\/users\/[0-9a-f-]{36}$/);
    await expect(page.getByTestId("user-email")).toHaveText(ADMIN_EMAIL);
    // An event that does not exist: not found.
    const missing = await page.request.get("/audit/00000000-0000-0000-0000-000000000000");
    expect(missing.status()).toBe(404);
    noErrors();
  });

  test("My activity in the user menu; the actor filter suggests people", async ({ page }) => {
    const noErrors = check.noConsoleErrors(page);
    await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);
    await page.getByTestId("user-menu").click();
    await page.getByTestId("my-activity").click();
    await expect(page).toHaveURL(/\/audit\?actor=[0-9a-f-]{36}$/);
    const who = page.getByTestId("audit-who");
    await expect(who.first()).toBeVisible();
    for (const text of await who.allTextContents()) {
      expect(text).toBe(ADMIN_EMAIL);
    }
    // The actor filter's suggestions: people whose events the viewer may see.
    const input = page.locator("#audit-actor");
    await expect(input).toHaveAttribute("list", "audit-actors");
    const options = page.locator("#audit-actors option");
    expect(await options.count()).toBeGreaterThan(1);
    await expect(page.locator(`#audit-actors option[value="${ADMIN_EMAIL}"]`)).toHaveCount(1);
    noErrors();
  });

  test("live tail shows an event made in a second browser context", async ({ page, browser }) => {
    const noErrors = check.noConsoleErrors(page);
    await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);
    await act.open(page, "/audit?kind=sign_in");
    await page.getByTestId("audit-live").check();
    await expect(page.getByTestId("audit-live-status")).toHaveText(/^Live/);
    await expect(page.getByTestId("audit-live-events")).toHaveCount(0);
    // Someone signs in elsewhere: the sign-in appears at the top, without reloading.
    const other = await browser.newContext();
    const second = await other.newPage();
    await act.signIn(second, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(second);
    const live = page.getByTestId("audit-live-events");
    await expect(live).toBeVisible({ timeout: 15_000 });
    await expect(live.getByTestId("audit-who").first()).toHaveText(ADMIN_EMAIL);
    await expect(live.getByTestId("audit-what").first()).toHaveText("sign in");
    await other.close();
    // Off: the stream is closed.
    await page.getByTestId("audit-live").uncheck();
    await expect(page.getByTestId("audit-live-status")).toHaveText("");
    noErrors();
  });
});
