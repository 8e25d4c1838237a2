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

  test("a grant made before its namespace exists: warned in the console, refusals in words in the shell, usable once created", async ({ page, browser }) => {
    test.setTimeout(120_000);
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    // The administrator grants sally namespace admin on `cherry`, which no cluster has yet.
    await consoleAct.open(page, "/projects/default");
    await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
    const form = page.getByTestId("add-member");
    await form.getByLabel("Member type").selectOption("user");
    await form.getByLabel("Group name or user email").fill("sally@example.com");
    await form.getByLabel("Role", { exact: true }).selectOption("NAMESPACE_ADMIN");
    await form.getByLabel("Namespaces", { exact: true }).fill("cherry");
    // Said before the binding is made (from the namespaces the clusters report) ...
    await expect(page.getByTestId("add-member-namespace-hint")).toContainText(`namespace cherry does not exist on`);
    await expect(page.getByTestId("add-member-namespace-hint")).toContainText(NAME);
    await form.getByRole("button", { name: "Add binding" }).click();
    // ... and after: a warning, not a refusal.
    await expect(page.getByTestId("add-member-warnings")).toContainText("the grant applies there as soon as it is created");
    await expect(page.getByTestId("members").getByRole("row").filter({ hasText: "sally@example.com" })).toContainText("NAMESPACE_ADMIN");

    // Sally's kubectl shell on the cluster: a refusal names her and her grant, and the missing
    // namespace is said in words.
    const hers = await browser.newContext();
    const sally = await hers.newPage();
    await consoleAct.signIn(sally, "sally@example.com", "sally-chosen-pass-22");
    await consoleCheck.onConsole(sally);
    await consoleAct.open(sally, `/clusters/${NAME}/terminal`);
    await expect(sally.getByTestId("terminal-status")).toContainText("kubectl shell", { timeout: 30_000 });
    const rows = sally.locator("[data-testid=terminal] .xterm-rows");
    await sally.getByTestId("terminal").click();
    await sally.keyboard.type("kubectl get pods -n kube-system\n");
    await expect(rows).toContainText("sally@example.com cannot list pods in namespace kube-system", { timeout: 20_000 });
    await expect(rows).toContainText("Warden grants you");
    await sally.keyboard.type("kubectl create configmap early -n cherry\n");
    await expect(rows).toContainText("namespace cherry does not exist on cluster", { timeout: 20_000 });

    // Someone creates the namespace on the cluster: her next command works.
    const made = await cluster.kubectl("create", "namespace", "cherry");
    expect(made.code, made.stderr).toBe(0);
    await sally.waitForTimeout(1_500);
    await sally.keyboard.type("kubectl create configmap late -n cherry\n");
    await expect(rows).toContainText("configmap/late created", { timeout: 20_000 });
    await hers.close();

    // Leave the default project as it was for the suites after this one.
    await consoleAct.open(page, "/projects/default");
    const origin = new URL(page.url()).origin;
    const list = await (await page.request.get("/api/v1/bindings?project=default")).json();
    for (const b of list.items.filter((b: any) => b.subject.name === "sally@example.com")) {
      const gone = await page.request.delete(`/api/v1/bindings/${b.id}`, { headers: { origin } });
      expect(gone.status()).toBe(204);
    }
    noErrors();
  });
});
