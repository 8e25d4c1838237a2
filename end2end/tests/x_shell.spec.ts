// The kubectl shell in the browser: the "Terminal" action of a cluster opens the shell as a
// drawer over the page (with a link to the full page), `kubectl get namespaces` runs as the
// user through Warden's gateway, and its output appears in xterm.js.
//
// NOTE: the shell's backend (`GET /api/v1/terminal/ws?cluster=C` without a pod) is being built
// separately; until it lands the socket is refused and this test fails at the first output
// check. The drawer test below does not depend on it.
//
// Runs after signin.spec.ts (the admin's password) against the same server; it imports and
// connects its own simulated cluster.
import { expect, test } from "@playwright/test";
import { act as consoleAct, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check as consoleCheck } from "./fixtures/console";
import { act, Cluster, find } from "./fixtures/clusters";

const NAME = "e2e-shell";

test.describe.serial("kubectl shell", () => {
  const cluster = new Cluster();

  test.beforeAll(async () => {
    await cluster.start();
  });

  test.afterAll(() => {
    cluster.stop();
  });

  test("a connected cluster to open shells on", async ({ page }) => {
    test.setTimeout(120_000);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await act.importCluster(page, NAME);
    await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
    const command = await find.applyCommand(page).inputValue();
    await page.getByText("Or copy or download the manifest").click();
    const manifest = cluster.writeFile("manifest.yaml", (await find.manifest(page).textContent()) ?? "");
    const applied = await cluster.kubectl("apply", "-f", command.replace("kubectl apply -f ", ""));
    expect(applied.code, applied.stderr).toBe(0);
    await cluster.startAgent(manifest);
    await consoleAct.open(page, "/clusters");
    await expect(find.statusChip(page, NAME)).toHaveText("Connected", { timeout: 30_000 });
  });

  test("the Terminal action opens a drawer over the page, with a link to the full page", async ({ page }) => {
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/clusters");
    await find.terminalLink(page, NAME).click();
    const drawer = find.drawer(page);
    await expect(drawer).toBeVisible();
    await expect(page).toHaveURL(/\/clusters$/);
    await expect(drawer.getByRole("heading")).toContainText(`kubectl on ${NAME}`);
    await drawer.getByTestId("drawer-close").click();
    await expect(drawer).toHaveCount(0);
    await find.terminalLink(page, NAME).click();
    await drawer.getByTestId("drawer-full-page").click();
    await expect(page).toHaveURL(new RegExp(`/clusters/${NAME}/terminal$`));
    await expect(drawer).toHaveCount(0);
    await expect(page.getByTestId("terminal-shell")).toHaveAttribute("aria-current", "page");
  });

  test("kubectl get namespaces in the shell", async ({ page }) => {
    test.setTimeout(90_000);
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/clusters");
    await find.terminalLink(page, NAME).click();
    const drawer = find.drawer(page);
    const status = drawer.getByTestId("terminal-status");
    await expect(status).toContainText(`${NAME} · namespace default · kubectl shell`, { timeout: 30_000 });
    await expect(status).toContainText("as system:serviceaccount:warden-system:u-admin-warden-local");
    await expect(drawer.getByTestId("terminal-time-left")).toHaveText(/^7:59:\d\d left$/);
    await drawer.getByTestId("terminal").click();
    await page.keyboard.type("kubectl get namespaces\n");
    const rows = drawer.locator("[data-testid=terminal] .xterm-rows");
    await expect(rows).toContainText("kube-system", { timeout: 20_000 });
    await expect(rows).toContainText("warden-system");
    // Closing the drawer ends the terminal (no terminal outlives its view).
    await drawer.getByTestId("drawer-close").click();
    await consoleAct.open(page, "/me/tools");
    await expect(page.getByTestId("no-terminals")).toBeVisible({ timeout: 10_000 });
    noErrors();
  });

  test("My tools lists one's open terminals and ends them", async ({ page, context }) => {
    test.setTimeout(90_000);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, `/clusters/${NAME}/terminal`);
    const status = page.getByTestId("terminal-status");
    await expect(status).toContainText("kubectl shell", { timeout: 30_000 });
    const tools = await context.newPage();
    await consoleAct.open(tools, "/me/tools");
    const row = tools.getByTestId("my-terminals").locator("tr", { hasText: NAME });
    await expect(row).toContainText("kubectl shell");
    await row.getByRole("button", { name: "End" }).click();
    await expect(status).toContainText("Closed: ended by admin@warden.local", { timeout: 5_000 });
    await expect(tools.getByTestId("no-terminals")).toBeVisible();
  });
});
