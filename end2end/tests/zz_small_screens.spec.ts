// Phones and small screens: at 390 × 844 every main page fits the viewport's width (tables and
// long commands scroll inside their own boxes), and the navigation folds behind a menu button.
//
// Runs last (files run in name order), against the data the earlier specs built: projects,
// users, groups, clusters, audit events, API keys, sign-in providers, access requests.
import { expect, Page, test } from "@playwright/test";
import { act, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check } from "./fixtures/console";

test.use({ viewport: { width: 390, height: 844 } });

const find = {
  menuButton: (p: Page) => p.getByRole("button", { name: "Menu" }),
  mainNav: (p: Page) => p.getByRole("navigation", { name: "Main" }),
  /** The first link in a list page's table, to reach one item's page. */
  firstLinkIn: (p: Page, table: string) => p.getByTestId(table).locator("tbody a").first(),
};

const checks = {
  /** Nothing on the page is wider than the viewport: no sideways scrolling of the page. */
  async fitsWidth(p: Page, what: string) {
    // Pages fill in after hydration (Suspense); let their data arrive first.
    await p.waitForLoadState("networkidle").catch(() => {});
    await expect(p.locator("main [aria-busy='true']")).toHaveCount(0);
    const { scroll, inner, culprits } = await p.evaluate(() => {
      const inner = window.innerWidth;
      // The outermost elements that stick out on the right, to say what to fix.
      const culprits = [...document.querySelectorAll("body *")]
        .filter((e) => {
          const parent = e.parentElement!;
          return e.getBoundingClientRect().right > inner + 0.5 && parent.getBoundingClientRect().right <= inner + 0.5;
        })
        .slice(0, 5)
        .map((e) => {
          const id = e.id ? `#${e.id}` : "";
          const cls = typeof e.className === "string" && e.className ? `.${e.className.trim().split(/\s+/).join(".")}` : "";
          return `${e.tagName.toLowerCase()}${id}${cls} (${Math.round(e.getBoundingClientRect().width)}px)`;
        });
      return { scroll: document.documentElement.scrollWidth, inner, culprits };
    });
    expect
      .soft(scroll, `${what}: page is ${scroll}px wide in a ${inner}px viewport; too wide: ${culprits.join(", ")}`)
      .toBeLessThanOrEqual(inner);
  },
};

/** Open a page, wait for what shows it has its data, and check its width. */
async function openAndCheck(p: Page, path: string, ready?: string) {
  await act.open(p, path);
  if (ready) await expect(p.getByTestId(ready).first()).toBeVisible();
  await checks.fitsWidth(p, path);
}

test.describe.serial("small screens (390 × 844)", () => {
  test("the menu button opens the navigation, and a link in it works", async ({ page }) => {
    const noErrors = check.noConsoleErrors(page);
    await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);
    await checks.fitsWidth(page, "/");

    const button = find.menuButton(page);
    const users = find.mainNav(page).getByRole("link", { name: "Users", exact: true });
    await expect(button).toBeVisible();
    await expect(button).toHaveAttribute("aria-expanded", "false");
    await expect(button).toHaveAttribute("aria-controls", "main-nav");
    await expect(users).toBeHidden();

    await button.click();
    await expect(button).toHaveAttribute("aria-expanded", "true");
    await expect(users).toBeVisible();
    await checks.fitsWidth(page, "/ with the menu open");
    await users.click();
    await expect(page).toHaveURL(/\/users$/);
    await expect(page.getByTestId("users")).toBeVisible();
    // Following a link folds the menu again.
    await expect(button).toHaveAttribute("aria-expanded", "false");
    await expect(find.mainNav(page).getByRole("link", { name: "Audit log", exact: true })).toBeHidden();
    // Escape folds it too.
    await button.click();
    await expect(users).toBeVisible();
    await users.focus();
    await page.keyboard.press("Escape");
    await expect(users).toBeHidden();
    noErrors();
  });

  test("without JavaScript the navigation's links show instead of the menu button", async ({ page, browser }) => {
    await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);
    const context = await browser.newContext({
      viewport: { width: 390, height: 844 },
      javaScriptEnabled: false,
      storageState: await page.context().storageState(),
    });
    const noScript = await context.newPage();
    // Pages with data are sent whole (their data loaded on the server).
    await noScript.goto("/users");
    await expect(noScript.getByTestId("users")).toBeVisible();
    await expect(find.menuButton(noScript)).toBeHidden();
    const groups = find.mainNav(noScript).getByRole("link", { name: "Groups", exact: true });
    await expect(groups).toBeVisible();
    await checks.fitsWidth(noScript, "/users without JavaScript");
    await groups.click();
    await expect(noScript).toHaveURL(/\/groups$/);
    await expect(noScript.getByTestId("groups")).toBeVisible();
    await context.close();
  });

  test("every main page fits the width of a phone", async ({ page }) => {
    test.setTimeout(180_000);
    const noErrors = check.noConsoleErrors(page);
    await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);

    await openAndCheck(page, "/");
    await openAndCheck(page, "/projects", "projects");
    const project = await find.firstLinkIn(page, "projects").getAttribute("href");
    await openAndCheck(page, project!, "project-name");
    await openAndCheck(page, "/clusters", "clusters");
    const cluster = await find.firstLinkIn(page, "clusters").getAttribute("href");
    await openAndCheck(page, cluster!, "cluster-name");
    // The cleanup command is one long line: it scrolls inside its box, with a copy button.
    const cleanup = page.getByTestId("cleanup-command");
    await expect(cleanup).toBeVisible();
    expect(await cleanup.evaluate((e) => e.scrollWidth > e.clientWidth)).toBe(true);
    await expect(page.locator(".codebox").filter({ has: cleanup }).getByRole("button", { name: "Copy" })).toBeVisible();
    await openAndCheck(page, "/clusters/new", "import-form");
    await openAndCheck(page, "/users", "users");
    const user = await find.firstLinkIn(page, "users").getAttribute("href");
    await openAndCheck(page, user!, "user-email");
    await openAndCheck(page, "/groups", "groups");
    const group = await find.firstLinkIn(page, "groups").getAttribute("href");
    await openAndCheck(page, group!, "group-name");
    await openAndCheck(page, "/roles", "roles");
    await openAndCheck(page, "/settings");
    await openAndCheck(page, "/audit", "audit-events");
    await openAndCheck(page, "/audit?kind=kube_api&discovery=true", "audit-events");
    await openAndCheck(page, "/audit?kind=kube_api&range=24h", "audit-histogram");
    // An event's page (a Kubernetes request: the longest fields).
    const event = (await (await page.request.get("/api/v1/audit/events?kind=kube_api&limit=1")).json()).items[0];
    await openAndCheck(page, `/audit/${event.id}`, "audit-event");
    await openAndCheck(page, "/me/tools", "my-clusters");
    await openAndCheck(page, "/me/api-keys");
    await openAndCheck(page, "/me/mfa");
    await openAndCheck(page, "/identity-providers");
    await openAndCheck(page, "/sessions");
    await openAndCheck(page, "/access");
    await openAndCheck(page, "/change-password");
    await page.context().clearCookies();
    await openAndCheck(page, "/login");
    noErrors();
  });
});
