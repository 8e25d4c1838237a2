// kubectl settings in the console: the organization's card on the Settings page changes what
// "My tools" says, survives a reload, and goes back to the defaults when cleared.
//
// Runs after w_clusters.spec.ts against the same server (files run in name order).
import { expect, test } from "@playwright/test";
import { act, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check } from "./fixtures/console";

test("organization kubectl settings apply to My tools and can be cleared", async ({ page }) => {
  const noErrors = check.noConsoleErrors(page);
  await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
  await check.onConsole(page);

  await act.open(page, "/settings");
  const form = page.getByTestId("kubectl-settings-organization");
  const validity = form.getByLabel("A kubeconfig's credential is valid for");
  await expect(validity).toHaveValue("");
  await expect(page.getByTestId("kubectl-effective")).toContainText("credentials valid for 8 h");
  await validity.fill("2");
  await form.getByLabel("Turn kubectl access off").selectOption("on");
  await form.getByTestId("save-kubectl-settings").click();
  await expect(page.getByTestId("kubectl-effective")).toContainText("credentials valid for 2 h");
  await expect(page.getByTestId("kubectl-effective")).toContainText("kubectl off");

  // Stored, not just shown.
  await act.open(page, "/settings");
  await expect(page.getByTestId("kubectl-settings-organization").getByLabel("A kubeconfig's credential is valid for")).toHaveValue("2");

  // My tools says so, and offers no download while kubectl is off.
  await act.open(page, "/me/tools");
  await expect(page.getByTestId("cli-disabled")).toBeVisible();
  await expect(page.getByTestId("credential-summary")).toContainText("valid for 2 h");
  await expect(page.getByTestId("download-kubeconfig")).toHaveCount(0);

  // Cleared: the defaults again.
  await act.open(page, "/settings");
  const again = page.getByTestId("kubectl-settings-organization");
  await again.getByLabel("A kubeconfig's credential is valid for").fill("");
  await again.getByLabel("Turn kubectl access off").selectOption("");
  await again.getByTestId("save-kubectl-settings").click();
  await expect(page.getByTestId("kubectl-effective")).toContainText("credentials valid for 8 h");
  await expect(page.getByTestId("kubectl-effective")).toContainText("kubectl on");
  await act.open(page, "/me/tools");
  await expect(page.getByTestId("cli-disabled")).toHaveCount(0);
  noErrors();
});

test("a user's page sets their kubectl overrides and revokes their kubeconfigs", async ({ page }) => {
  const noErrors = check.noConsoleErrors(page);
  await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
  await check.onConsole(page);
  await act.open(page, "/users?q=sally");
  await page.getByRole("link", { name: "sally@example.com" }).click();
  await expect(page.getByTestId("user-email")).toHaveText("sally@example.com");
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);

  const form = page.getByTestId("kubectl-settings-user");
  await expect(form.getByLabel("A kubeconfig's credential is valid for")).toHaveValue("");
  await form.getByLabel("A kubeconfig's credential is valid for").fill("1");
  await form.getByTestId("save-kubectl-settings").click();
  await expect(page.getByTestId("kubectl-effective")).toContainText("credentials valid for 1 h");

  await page.getByTestId("revoke-user-kubeconfigs").click();
  await page.getByTestId("confirm-revoke-user-kubeconfigs").click();
  await expect(page.getByRole("status").filter({ hasText: "Revoked: every kubeconfig issued so far" })).toBeVisible();
  noErrors();
});
