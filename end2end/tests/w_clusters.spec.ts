// The cluster import wizard end to end: the admin imports a cluster in the console, applies
// the manifest to a simulated cluster with the real `kubectl apply -f <url>` (and again from
// the manifest shown on the page), starts the agent exactly as the Deployment would, and
// watches the checklist and the cluster list turn connected without reloading.
//
// Runs after signin.spec.ts against the same server (files run in name order).
import { expect, test } from "@playwright/test";
import { act as consoleAct, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check as consoleCheck } from "./fixtures/console";
import { chmodSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { act, check, Cluster, find } from "./fixtures/clusters";

const NAME = "e2e-sim";

test.describe.serial("cluster import wizard", () => {
  const cluster = new Cluster();

  test.beforeAll(async () => {
    await cluster.start();
  });

  test.afterAll(() => {
    cluster.stop();
  });

  test("import, apply with kubectl, start the agent, and see it connect live", async ({ page, context }) => {
    test.setTimeout(120_000);
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);

    // Step 1: details.
    await act.importCluster(page, NAME, "env=e2e");

    // Step 2: the one-line command and the manifest; nothing has happened yet.
    await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
    const command = await find.applyCommand(page).inputValue();
    expect(command).toMatch(/^kubectl apply -f http:\/\/.+\/agent\/v1\/manifests\/.+$/);
    await check.checklist(page, { registered: false, connected: false, heartbeat: false });
    await page.getByText("Or copy or download the manifest").click();
    const manifest = await find.manifest(page).textContent();
    expect(manifest).toContain("kind: Deployment");
    expect(manifest).toContain("app.kubernetes.io/managed-by: warden");

    // A second tab on the cluster list: pending for now.
    const list = await context.newPage();
    await consoleAct.open(list, "/clusters");
    await expect(find.statusChip(list, NAME)).toHaveText("Pending");
    await expect(find.clusterRow(list, NAME)).toContainText("env=e2e");

    // The real kubectl applies the URL (no session needed), then the manifest again.
    const url = command.replace("kubectl apply -f ", "");
    const first = await cluster.kubectl("apply", "-f", url);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain("namespace/warden-system created");
    expect(first.stdout).toContain("deployment.apps/warden-agent created");
    const file = cluster.writeFile("manifest.yaml", manifest ?? "");
    const again = await cluster.kubectl("apply", "-f", file);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain("deployment.apps/warden-agent unchanged");
    // (stringData is write-only, so kubectl always patches the Secret: "configured".)
    expect(again.stdout).toMatch(/secret\/warden-agent (unchanged|configured)/);
    // The link worked once.
    const reuse = await cluster.kubectl("apply", "-f", url);
    expect(reuse.code).not.toBe(0);

    // The agent, as the Deployment runs it (its own service account, the manifest's RBAC):
    // the checklist and the list turn without a reload.
    await cluster.startAgent(file);
    await expect(find.check(page, "registered")).toHaveAttribute("data-done", "true", { timeout: 30_000 });
    await check.checklist(page, { registered: true, connected: true, heartbeat: true });
    await expect(find.done(page)).toBeVisible();
    await expect(find.check(page, "heartbeat")).toContainText("Kubernetes v1.32.0, 3 node(s)");
    await expect(find.statusChip(list, NAME)).toHaveText("Connected", { timeout: 15_000 });
    await expect(find.clusterRow(list, NAME)).toContainText("v1.32.0");

    // The cluster's page: facts as reported, history, audit events.
    await page.getByTestId("open-cluster").click();
    await expect(page).toHaveURL(new RegExp(`/clusters/${NAME}$`));
    await expect(page.getByTestId("cluster-status")).toHaveText("Connected");
    await expect(page.getByTestId("cluster-nodes")).toContainText("yes");
    await expect(page.getByRole("list", { name: "Namespaces" })).toContainText("kube-system");
    await expect(page.getByTestId("cluster-history")).toContainText("agent connected");
    // Events read as words: the agent's first connection with its bootstrap token.
    await expect(page.getByTestId("cluster-events")).toContainText(`agent of cluster ${NAME} registers with its bootstrap token`);
    expect(cluster.agentLog).toContain("connected to Warden");
    noErrors();
  });

  test("download a kubeconfig from My tools, use it with kubectl, revoke it", async ({ page }) => {
    test.setTimeout(120_000);
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/me/tools");
    await expect(page.getByTestId(`my-cluster-${NAME}`)).toContainText("full access");
    await expect(page.getByTestId("credential-summary")).toContainText("0 valid kubeconfig credential(s)");
    // The command line's sign-in, for this Warden and this user.
    await expect(page.getByTestId("wardenctl-login")).toContainText(`wardenctl login --url ${new URL(page.url()).origin} --email ${ADMIN_EMAIL}`);
    // This Warden serves the wardenctl built beside it: the browser downloads it, and it runs.
    const [cli] = await Promise.all([page.waitForEvent("download"), page.getByTestId(`wardenctl-download-linux-${process.arch === "arm64" ? "arm64" : "amd64"}`).click()]);
    expect(cli.suggestedFilename()).toBe("wardenctl");
    const cliPath = (await cli.path())!;
    chmodSync(cliPath, 0o755);
    const help = spawnSync(cliPath, ["--help"], { encoding: "utf8" });
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toContain("login");
    const digest = createHash("sha256").update(readFileSync(cliPath)).digest("hex");
    await expect(page.getByTestId("wardenctl-downloads")).toContainText(digest);

    // The browser downloads it (the link is not a console route).
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("download-kubeconfig").click()]);
    expect(download.suggestedFilename()).toBe("warden.kubeconfig");
    const kubeconfig = cluster.writeFile("downloaded.kubeconfig", readFileSync((await download.path())!, "utf8"));

    // The real kubectl, through Warden's gateway and the agent's tunnel.
    const ns = await cluster.kubectlWith(kubeconfig, "get", "namespaces", "-o", "name");
    expect(ns.code, ns.stderr).toBe(0);
    expect(ns.stdout).toContain("namespace/kube-system");
    const who = await cluster.kubectlWith(kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}");
    expect(who.code, who.stderr).toBe(0);
    expect(who.stdout).toMatch(/^system:serviceaccount:warden-system:u-admin-warden-local/);

    await consoleAct.open(page, "/me/tools");
    await expect(page.getByTestId("credential-summary")).toContainText("1 valid kubeconfig credential(s)");
    await page.getByTestId("revoke-kubeconfigs").click();
    await page.getByTestId("confirm-revoke-kubeconfigs").click();
    await expect(page.getByRole("status").filter({ hasText: "Your kubeconfigs were revoked" })).toBeVisible();
    await expect(page.getByTestId("credential-summary")).toContainText("0 valid kubeconfig credential(s)");

    // The very next request is refused, and says why.
    const after = await cluster.kubectlWith(kubeconfig, "get", "namespaces");
    expect(after.code).not.toBe(0);
    expect(after.stderr).toContain("revoked");
    noErrors();
  });

  test("the list filters by status and label", async ({ page }) => {
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/clusters?status=connected&label=env%3De2e");
    await expect(find.clusterRow(page, NAME)).toBeVisible();
    await consoleAct.open(page, "/clusters?status=pending");
    await expect(find.clusterRow(page, NAME)).toHaveCount(0);
  });

  test("a web terminal into a pod: a round trip in xterm.js, then a sign-out elsewhere closes it with the reason", async ({ page, context }) => {
    test.setTimeout(120_000);
    const noErrors = consoleCheck.noConsoleErrors(page);
    const pod = await cluster.kubectl("run", "shell", "-n", "default", "--image=busybox:1.36", "--restart=Never", "--", "sleep", "3600");
    expect(pod.code, pod.stderr).toBe(0);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    // The cluster's page lists the pods as the admin sees them; "Exec" on one opens the
    // terminal page on it.
    await consoleAct.open(page, `/clusters/${NAME}`);
    await expect(find.podRow(page, "shell")).toContainText("Running", { timeout: 15_000 });
    await expect(find.namespaceChip(page, "default")).toHaveAttribute("aria-current", "true");
    await find.exec(page, "shell").click();
    await expect(page).toHaveURL(new RegExp(`/clusters/${NAME}/terminal\\?namespace=default&pod=shell&container=shell$`));
    await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
    const status = page.getByTestId("terminal-status");
    await expect(status).toContainText("as system:serviceaccount:warden-system:u-admin-warden-local", { timeout: 30_000 });
    await expect(status).toContainText(`${NAME} · default/shell`);
    // The time left before the session's limit (8 hours), counting down.
    await expect(page.getByTestId("terminal-time-left")).toHaveText(/^7:59:\d\d left$/);
    // Keystrokes reach the container's shell and its output is drawn by xterm.js.
    await page.getByTestId("terminal").click();
    await page.keyboard.type("echo h''i; echo $((6*7))-ok\n");
    const rows = page.locator("[data-testid=terminal] .xterm-rows");
    await expect(rows).toContainText("42-ok", { timeout: 15_000 });
    await expect(rows.locator("> div").filter({ hasText: /^\s*hi\s*$/ }).first()).toBeVisible();

    // Live sessions (user menu) lists it; ending it there closes it at once, with who did.
    const other = await context.newPage();
    await consoleAct.open(other, "/sessions");
    const row = other.getByTestId("streams").locator("tr", { hasText: "terminal" });
    await expect(row).toContainText("pods/shell");
    await row.getByRole("link", { name: /End/ }).click();
    await other.getByTestId("confirm-end-stream").click();
    await expect(status).toContainText("Closed: ended by admin@warden.local", { timeout: 5_000 });
    await expect(other.getByTestId("no-streams")).toBeVisible();

    // A new terminal; signing out in the other tab ends it (idle) at once, with the reason.
    await page.reload();
    await expect(status).toContainText("as system:serviceaccount:", { timeout: 30_000 });
    const out = await other.request.post("/api/v1/auth/logout", { headers: { origin: new URL(page.url()).origin } });
    expect(out.status()).toBe(204);
    await expect(status).toContainText("Closed: signed out", { timeout: 5_000 });
    await expect(page.locator("[data-testid=terminal] .xterm-rows")).toContainText("[closed: signed out");
    noErrors();
  });

  test("removing a developer's grant in one browser closes her open terminal in another, with the reason", async ({ page, browser }) => {
    test.setTimeout(120_000);
    const made = await cluster.kubectl("create", "namespace", "apple");
    expect(made.code, made.stderr).toBe(0);
    const pod = await cluster.kubectl("run", "box", "-n", "apple", "--image=busybox:1.36", "--restart=Never", "--", "sleep", "3600");
    expect(pod.code, pod.stderr).toBe(0);
    // The administrator grants sally (from the access suite) namespace admin on apple.
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    const origin = new URL(page.url()).origin;
    const info = await (await page.request.get(`/api/v1/clusters/${NAME}`)).json();
    const created = await page.request.post("/api/v1/bindings", {
      headers: { origin },
      data: { subject: { kind: "user", name: "sally@example.com" }, role: "NAMESPACE_ADMIN", project: info.project, namespaces: ["apple"] },
    });
    expect(created.status(), await created.text()).toBe(201);
    const binding = await created.json();

    // Sally, in her own browser, opens a terminal into the pod.
    const hers = await browser.newContext();
    const sally = await hers.newPage();
    await consoleAct.signIn(sally, "sally@example.com", "sally-chosen-pass-22");
    await consoleCheck.onConsole(sally);
    await consoleAct.open(sally, `/clusters/${NAME}/terminal?namespace=apple&pod=box`);
    const status = sally.getByTestId("terminal-status");
    await expect(status).toContainText(/as system:serviceaccount:warden-system:u-sally-example-com-[0-9a-f]{6}/, { timeout: 30_000 });
    await sally.getByTestId("terminal").click();
    await sally.keyboard.type("echo still-$((40+2))\n");
    await expect(sally.locator("[data-testid=terminal] .xterm-rows")).toContainText("still-42", { timeout: 15_000 });

    // The administrator removes the grant: her terminal closes at once and says why.
    const removed = await page.request.delete(`/api/v1/bindings/${binding.id}`, { headers: { origin } });
    expect(removed.status()).toBe(204);
    await expect(status).toContainText("Closed:", { timeout: 5_000 });
    await expect(status).not.toContainText("ended by");
    await expect(status).not.toContainText("signed out");
    await hers.close();
  });

  test("the terminal's recording plays back from the audit log", async ({ page }) => {
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    // The terminal that was ended from Live sessions: its closing event links the recording.
    await consoleAct.open(page, "/audit?kind=terminal&q=ended%20by");
    await page.getByRole("link", { name: "▶ Recording" }).first().click();
    await expect(page).toHaveURL(/\/audit\/recordings\/[0-9a-f-]+$/);
    await expect(page.getByTestId("recording-facts")).toContainText("default/shell");
    await expect(page.getByTestId("recording-facts")).toContainText("ended by admin@warden.local");
    await page.getByTestId("player-speed").selectOption("4");
    const screen = page.locator("[data-testid=player-screen] .xterm-rows");
    await expect(screen).toContainText("42-ok", { timeout: 30_000 });
    // Seek back to the start: the screen is redrawn from there.
    await page.getByTestId("player-seek").evaluate((el: HTMLInputElement) => {
      el.value = "0";
      el.dispatchEvent(new Event("input", { bubbles: true }));
    });
    await expect(page.getByTestId("player-clock")).toContainText(/^0:0\d \//);
    await expect(page.getByTestId("player-download")).toHaveAttribute("href", /\/api\/v1\/terminal\/recordings\//);
    noErrors();
  });

  test("a recording is refused, with a message, to those who may not read its audit events", async ({ page }) => {
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/audit/recordings/00000000-0000-0000-0000-000000000000");
    await expect(page.getByTestId("recording-not-found")).toBeVisible();
  });

  test("rename in the console: the page follows and the agent reconnects under the new name", async ({ page }) => {
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, `/clusters/${NAME}`);
    await page.getByText("Edit name, description and labels").click();
    await page.getByLabel("Name", { exact: true }).fill("e2e-renamed");
    await page.getByRole("button", { name: "Save", exact: true }).click();
    await expect(page).toHaveURL(/\/clusters\/e2e-renamed$/);
    await expect(page.getByTestId("cluster-name")).toHaveText("e2e-renamed");
    await expect(page.getByTestId("cluster-status")).toHaveText("Connected", { timeout: 20_000 });
    await expect(page.getByTestId("cluster-events")).toContainText("change cluster e2e-renamed");
    noErrors();
  });
});
