// The console at first sight: a project's clusters and member counts, group membership managed
// from a user's page, and the "why" checker taking a cluster.
//
// Runs after v_access.spec.ts (projects, users and groups) and w_clusters.spec.ts (the cluster
// e2e-renamed, imported into project default) against the same server: files run in name order.
// It leaves the state as it found it (john leaves the group it adds him to).
import { expect, test } from "@playwright/test";
import { act as consoleAct, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check as consoleCheck } from "./fixtures/console";

const CLUSTER = "e2e-renamed";

test.describe.serial("projects, membership and the why checker", () => {
  test("the projects list counts clusters and members; a project lists its clusters", async ({ page }) => {
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/projects");
    const dev = page.getByTestId("projects").getByRole("row").filter({ hasText: "Development" });
    await expect(dev.getByTestId("project-members")).toHaveText("1 group");
    await expect(dev.getByTestId("project-clusters")).toHaveText("none");
    const def = page.getByTestId("projects").getByRole("row").filter({ has: page.getByRole("link", { name: "default", exact: true }) });
    await expect(def.getByTestId("project-clusters")).toContainText("owned");

    await consoleAct.open(page, "/projects/default");
    await expect(page.getByTestId("project-counts")).toContainText("owned");
    const clusters = page.getByTestId("project-clusters-table");
    const row = clusters.getByRole("row").filter({ has: page.getByRole("link", { name: CLUSTER }) });
    await expect(row).toContainText("owned");
    await row.getByRole("link", { name: CLUSTER }).click();
    await expect(page).toHaveURL(new RegExp(`/clusters/${CLUSTER}$`));

    // A project without clusters says what to do next.
    await consoleAct.open(page, "/projects/dev");
    await expect(page.getByText("No clusters in dev that you can see.")).toBeVisible();
    noErrors();
  });

  test("a user's page adds them to a group and takes them out again", async ({ page }) => {
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/users?q=john");
    await page.getByRole("link", { name: "john@example.com" }).click();
    await expect(page.getByTestId("user-email")).toHaveText("john@example.com");
    await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
    const manage = page.getByTestId("user-groups-manage");
    await expect(manage).toContainText("Operations");
    await manage.getByLabel("Add to group").selectOption("Developers");
    await manage.getByRole("button", { name: "Add", exact: true }).click();
    await expect(page.getByTestId("user-groups")).toContainText("Developers");
    // The roles the group brings show on the page at once.
    await expect(page.getByTestId("user-access")).toContainText("NAMESPACE_ADMIN");

    await manage.getByTestId("leave-Developers").click();
    await expect(page.getByTestId("user-groups")).not.toContainText("Developers");
    await expect(page.getByTestId("user-groups")).toContainText("Operations");
    await expect(page.getByTestId("user-access")).not.toContainText("NAMESPACE_ADMIN");
    noErrors();
  });

  test("the why checker takes a cluster and says whether its side is in place", async ({ page }) => {
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/users?q=sally");
    await page.getByRole("link", { name: "sally@example.com" }).click();
    const why = page.getByTestId("why");
    await why.getByLabel("Permission", { exact: true }).selectOption("kubectl.namespace.write");
    await why.getByLabel("Project", { exact: true }).selectOption("dev");
    await why.getByLabel("Namespace (optional)").fill("apple");
    await why.getByLabel("On cluster (optional)").selectOption(CLUSTER);
    await why.getByRole("button", { name: "Check" }).click();
    // The cluster belongs to default, not dev: her grant in dev does not reach it.
    await expect(page.getByTestId("why-answer")).toContainText("Denied");
    await expect(page.getByTestId("why-answer")).toContainText(`cluster ${CLUSTER} is not in project dev`);
    // The question is in the address, so it can be shared.
    await expect(page).toHaveURL(new RegExp(`cluster=${CLUSTER}`));

    // The administrator's own full access on it: allowed, and the cluster side in words.
    await consoleAct.open(page, "/users?q=admin");
    await page.getByRole("link", { name: ADMIN_EMAIL }).click();
    await why.getByLabel("Permission", { exact: true }).selectOption("kubectl.fullaccess");
    await why.getByLabel("On cluster (optional)").selectOption(CLUSTER);
    await why.getByRole("button", { name: "Check" }).click();
    await expect(page.getByTestId("why-answer")).toContainText("Allowed");
    await expect(page.getByTestId("why-cluster")).toContainText(`cluster ${CLUSTER}`);
    noErrors();
  });

  test("the overview puts clusters first, then recent denials and activity", async ({ page }) => {
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/");
    await expect(page.getByTestId("overview-clusters")).toContainText(CLUSTER);
    await expect(page.getByTestId("cluster-counts")).toContainText(/\d+ clusters?:/);
    // Audit readers see the latest refusals (the suites before were refused a few times).
    await expect(page.getByTestId("recent-denials")).toBeVisible();
    await expect(page.getByTestId("recent-activity")).toContainText(/binding|group/);
    await expect(page.getByTestId("my-access-words")).toBeVisible();
    noErrors();
  });

  test("a pending cluster keeps one manifest until a new link is asked for", async ({ page }) => {
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/clusters/new");
    await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
    const form = page.getByTestId("import-form");
    await form.getByLabel("Name", { exact: true }).fill("e2e-pending");
    await form.getByLabel("Project", { exact: true }).selectOption("default");
    await form.getByRole("button", { name: "Import and continue" }).click();
    await expect(page).toHaveURL(/\/clusters\/e2e-pending\/connect$/);
    const first = await page.getByTestId("apply-command").inputValue();
    // Reloading shows the same manifest: no new live token per view.
    await page.reload();
    await expect(page.getByTestId("apply-command")).toHaveValue(first);
    await page.getByTestId("new-manifest-link").click();
    await expect(page.getByTestId("apply-command")).not.toHaveValue(first);
    const second = await page.getByTestId("apply-command").inputValue();
    // The earlier link no longer serves a manifest.
    const old = await page.request.get(first.replace("kubectl apply -f ", ""));
    expect(old.status()).toBeGreaterThanOrEqual(400);
    const fresh = await page.request.get(second.replace("kubectl apply -f ", ""));
    expect(fresh.status()).toBe(200);
    // Leave no pending cluster behind for the suites after this one.
    const origin = new URL(page.url()).origin;
    const gone = await page.request.delete("/api/v1/clusters/e2e-pending", { headers: { origin } });
    expect(gone.status(), await gone.text()).toBe(204);
    noErrors();
  });

  test("the new-role picker offers only what the chosen scope can carry", async ({ page }) => {
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/roles/new");
    await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
    const form = page.getByTestId("new-role");
    const userRead = form.locator("#perm-user-read");
    const auditRead = form.locator("#perm-audit-read");
    const nsRead = form.locator("#perm-kubectl-namespace-read");
    // A project role: an organization permission cannot be ticked, a project one can.
    await expect(userRead).toBeDisabled();
    await expect(auditRead).toBeEnabled();
    await auditRead.check();
    // Narrowed to namespaces: the ticked project permission stays, to be unticked, and says why.
    await form.getByLabel("Scope", { exact: true }).selectOption("namespace");
    await expect(page.getByTestId("scope-problems")).toContainText("audit.read needs a role of project scope");
    await expect(auditRead).toBeEnabled();
    await auditRead.uncheck();
    await expect(auditRead).toBeDisabled();
    await expect(page.getByTestId("scope-problems")).not.toContainText("audit.read");
    await expect(nsRead).toBeEnabled();
    // Widened to the organization, everything can be ticked.
    await form.getByLabel("Scope", { exact: true }).selectOption("organization");
    await expect(userRead).toBeEnabled();
    await expect(auditRead).toBeEnabled();
    noErrors();
  });

  test("names are unique whatever their case, and pages answer 403 and 404 with their message", async ({ page, browser }) => {
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/groups");
    await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
    const form = page.getByTestId("new-group");
    await form.getByLabel("Name", { exact: true }).fill("developers");
    await form.getByRole("button", { name: "Create group" }).click();
    await expect(page.getByText(/a group with this name already exists/).first()).toBeVisible();
    await expect(page).toHaveURL(/\/groups$/);

    const missing = await page.goto("/projects/no-such-project");
    expect(missing?.status()).toBe(404);
    await expect(page.getByTestId("not-found")).toContainText("not found");

    const hers = await browser.newContext();
    const sally = await hers.newPage();
    await consoleAct.signIn(sally, "sally@example.com", "sally-chosen-pass-22");
    await consoleCheck.onConsole(sally);
    const refused = await sally.goto("/users");
    expect(refused?.status()).toBe(403);
    await expect(sally.getByTestId("forbidden")).toContainText("Not allowed");
    await hers.close();
  });
});
