// Just-in-time access end to end (issue 17): sally (from the access suite) asks for read-only
// access to namespace kube-system of project production from the pre-filled request form; john
// (production's administrator) sees the request in his inbox, with the badge, and approves it
// for 1 hour instead of the 8 asked; sally sees the grant and its time left.
//
// Runs after v_access.spec.ts against the same server (files run in name order).
import { expect, Page, test } from "@playwright/test";
import { createServer, Server } from "node:http";
import { AddressInfo } from "node:net";
import { act as consoleAct, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check as consoleCheck } from "./fixtures/console";
import { Cluster, find as clusters } from "./fixtures/clusters";

const SALLY = { email: "sally@example.com", password: "sally-chosen-pass-22" };
const JOHN = { email: "john@example.com", password: "john-chosen-pass-22" };

const find = {
  requestForm: (p: Page) => p.getByTestId("request-access"),
  badge: (p: Page) => p.getByTestId("access-badge"),
  approvalRow: (p: Page, who: string) => p.getByTestId("approval-row").filter({ hasText: who }),
  myRequest: (p: Page, role: string) => p.getByTestId("my-request-row").filter({ hasText: role }),
  myGrant: (p: Page, role: string) => p.getByTestId("my-grants").locator("tr").filter({ hasText: role }),
};

test.describe.serial("just-in-time access", () => {
  test("sally requests access, john approves it for an hour from his inbox, and the time left shows", async ({ browser }) => {
    // Sally asks, from a link that pre-fills the form (as a refusal's link does).
    const hers = await browser.newContext();
    const sally = await hers.newPage();
    await consoleAct.signIn(sally, SALLY.email, SALLY.password);
    await consoleCheck.onConsole(sally);
    await consoleAct.open(sally, "/access?project=production&role=NAMESPACE_READ_ONLY&namespaces=kube-system");
    const form = find.requestForm(sally);
    await expect(form.getByLabel("Project", { exact: true })).toHaveValue("production");
    await expect(form.getByLabel("Role", { exact: true })).toHaveValue("NAMESPACE_READ_ONLY");
    await form.getByTestId("request-access-duration").selectOption("28800");
    await form.getByLabel("Reason", { exact: true }).fill("Investigating the DNS incident");
    await form.getByTestId("request-access-submit").click();
    await expect(sally.getByText("Request sent")).toBeVisible();
    await expect(find.myRequest(sally, "NAMESPACE_READ_ONLY")).toContainText("pending");

    // John's inbox: the badge, the request, approve for 1 hour.
    const his = await browser.newContext();
    const john = await his.newPage();
    const noErrors = consoleCheck.noConsoleErrors(john);
    await consoleAct.signIn(john, JOHN.email, JOHN.password);
    await consoleCheck.onConsole(john);
    await expect(find.badge(john)).toHaveText("1");
    await john.getByTestId("nav-access").click();
    await expect(john).toHaveURL(/\/access/);
    await expect(john.locator("body[data-hydrated='true']")).toHaveCount(1);
    const row = find.approvalRow(john, SALLY.email);
    await expect(row).toContainText("NAMESPACE_READ_ONLY");
    await expect(row).toContainText("kube-system in project production");
    await expect(row).toContainText("Investigating the DNS incident");
    await row.getByTestId("approve-duration").selectOption("3600");
    await row.getByTestId("approve").click();
    await expect(john.getByText("Approved.")).toBeVisible();
    await expect(find.approvalRow(john, SALLY.email).getByTestId("request-status")).toContainText("approved");
    noErrors();

    // Sally has it at once, with the time left.
    await consoleAct.open(sally, "/");
    const grant = find.myGrant(sally, "NAMESPACE_READ_ONLY");
    await expect(grant).toContainText("production");
    await expect(grant.getByTestId("grant-time-left")).toHaveText(/^(59m|1h 0m) left$/);
    await consoleAct.open(sally, "/access");
    await expect(find.myRequest(sally, "NAMESPACE_READ_ONLY").getByTestId("request-status")).toContainText(/approved · (59m|1h 0m) left/);
    await expect(find.myRequest(sally, "NAMESPACE_READ_ONLY")).toContainText(JOHN.email);

    // The project's members list shows the grant's expiry too (john administers production).
    await consoleAct.open(john, "/projects/production");
    await expect(john.getByTestId("binding-expiry").filter({ hasText: "left" })).toHaveCount(1);
    // And who approves its requests: john may name an approver group there.
    await expect(john.getByTestId("approver-group")).toContainText("The project's administrators approve requests");
    await john.getByTestId("approver-group").getByLabel("Approver group").selectOption("Operations");
    await john.getByTestId("approver-group-save").click();
    await expect(john.getByTestId("approver-group")).toContainText("and so do the members of group Operations");
    await expect(john.getByTestId("approver-group-select")).toHaveValue("Operations");
    // And clear it again: the administrators alone.
    await john.getByTestId("approver-group-clear").click();
    await expect(john.getByTestId("approver-group")).toContainText("The project's administrators approve requests for access to it. Nobody");
    await expect(john.getByTestId("approver-group-select")).toHaveValue("");
    // Set again for what follows.
    await john.getByTestId("approver-group-select").selectOption("Operations");
    await john.getByTestId("approver-group-save").click();
    await expect(john.getByTestId("approver-group")).toContainText("and so do the members of group Operations");
    await hers.close();
    await his.close();
  });

  test("refused by kubectl, sally follows the refusal's link, john approves, her next kubectl works; the webhook hears both", async ({ browser }) => {
    test.setTimeout(180_000);
    // A webhook receiver, as a chat integration would be.
    const received: any[] = [];
    const hook: Server = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        try {
          received.push(JSON.parse(body));
        } catch {
          received.push({ unparsed: body });
        }
        res.writeHead(200).end("ok");
      });
    });
    await new Promise<void>((r) => hook.listen(0, "127.0.0.1", () => r()));
    const hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`;
    const cluster = new Cluster();
    await cluster.start();
    try {
      // The administrator: a cluster in production with a namespace `payments`, and the webhook.
      const admins = await browser.newContext();
      const admin = await admins.newPage();
      await consoleAct.signIn(admin, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
      await consoleCheck.onConsole(admin);
      const origin = new URL(admin.url()).origin;
      const set = await admin.request.patch("/api/v1/settings/jit", { headers: { origin }, data: { webhook_url: hookUrl } });
      expect(set.status(), await set.text()).toBe(200);
      await consoleAct.open(admin, "/clusters/new");
      await expect(admin.locator("body[data-hydrated='true']")).toHaveCount(1);
      const form = clusters.importForm(admin);
      await form.getByLabel("Name", { exact: true }).fill("e2e-jit");
      await form.getByLabel("Project", { exact: true }).selectOption("production");
      await form.getByRole("button", { name: "Import and continue" }).click();
      await expect(admin).toHaveURL(/\/clusters\/e2e-jit\/connect$/);
      const command = await clusters.applyCommand(admin).inputValue();
      await admin.getByText("Or copy or download the manifest").click();
      const manifest = cluster.writeFile("manifest.yaml", (await clusters.manifest(admin).textContent()) ?? "");
      const applied = await cluster.kubectl("apply", "-f", command.replace("kubectl apply -f ", ""));
      expect(applied.code, applied.stderr).toBe(0);
      const ns = await cluster.kubectl("create", "namespace", "payments");
      expect(ns.code, ns.stderr).toBe(0);
      await cluster.startAgent(manifest);
      await consoleAct.open(admin, "/clusters");
      await expect(clusters.statusChip(admin, "e2e-jit")).toHaveText("Connected", { timeout: 30_000 });
      await admins.close();

      // Sally's kubectl is refused in payments, and the refusal carries a link to ask for it.
      const hers = await browser.newContext();
      const sally = await hers.newPage();
      await consoleAct.signIn(sally, SALLY.email, SALLY.password);
      await consoleCheck.onConsole(sally);
      const kc = await sally.request.get("/api/v1/kubeconfig?cluster=e2e-jit");
      expect(kc.status(), await kc.text()).toBe(200);
      const kubeconfig = cluster.writeFile("sally.kubeconfig", await kc.text());
      const refused = await cluster.kubectlWith(kubeconfig, "get", "pods", "-n", "payments");
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain("sally@example.com cannot list pods in namespace payments of cluster e2e-jit");
      const link = refused.stderr.match(/request it: (\S+?)\)/)?.[1];
      expect(link, refused.stderr).toBeTruthy();
      await sally.goto(link!);
      const ask = find.requestForm(sally);
      await expect(ask.getByLabel("Project", { exact: true })).toHaveValue("production");
      await expect(ask.getByLabel("Role", { exact: true })).toHaveValue("NAMESPACE_READ_ONLY");
      await ask.getByLabel("Reason", { exact: true }).fill("Payments are failing");
      await ask.getByTestId("request-access-submit").click();
      await expect(sally.getByText("Request sent")).toBeVisible();
      await expect.poll(() => received.map((r) => r.event), { timeout: 20_000 }).toContain("access_request.create");

      // John approves from his inbox.
      const his = await browser.newContext();
      const john = await his.newPage();
      await consoleAct.signIn(john, JOHN.email, JOHN.password);
      await consoleCheck.onConsole(john);
      await consoleAct.open(john, "/access");
      await expect(john.locator("body[data-hydrated='true']")).toHaveCount(1);
      const row = find.approvalRow(john, SALLY.email).filter({ hasText: "Payments are failing" });
      await expect(row).toContainText("payments in project production");
      // As asked (the form's default: 1 hour).
      await row.getByTestId("approve").click();
      await expect(john.getByText("Approved.")).toBeVisible();
      await expect.poll(() => received.map((r) => r.event), { timeout: 20_000 }).toContain("access_request.approved");
      const decision = received.find((r) => r.event === "access_request.approved");
      expect(decision.text).toContain("john@example.com approved: sally@example.com asks for NAMESPACE_READ_ONLY on namespaces payments of project production");
      expect(decision.request.status).toBe("approved");

      // Her very next kubectl request works.
      const works = await cluster.kubectlWith(kubeconfig, "get", "pods", "-n", "payments");
      expect(works.code, works.stderr).toBe(0);
      await hers.close();
      await his.close();
    } finally {
      cluster.stop();
      hook.close();
    }
  });
});
