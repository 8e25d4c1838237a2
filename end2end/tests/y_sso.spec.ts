// Single sign-on end to end: the admin adds the test OpenID provider in the console, then a
// person who has no Warden account signs in with it, lands in the console and has the access of
// the Warden group the provider's group maps to (by name).
//
// Runs after signin.spec.ts against the same server (files run in name order): the admin's
// password is the one that file chose.
import { expect, test } from "@playwright/test";
import { act as consoleAct, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check as consoleCheck } from "./fixtures/console";
import { act as adminAct, find as adminFind } from "./fixtures/admin";
import { act, find, provider } from "./fixtures/sso";

const PROVIDER = { name: "corp", displayName: "Corp IdP" };

test.describe.serial("single sign-on", () => {
  test("the admin adds the provider, tests it, and maps a group to a project", async ({ page, request, baseURL }) => {
    const noErrors = consoleCheck.noConsoleErrors(page);
    const callback = `${baseURL}/api/v1/auth/oidc/${PROVIDER.name}/callback`;
    const { clientId, secret } = await provider.registerClient(request, callback);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await adminAct.createProject(page, "sso-demo");
    await adminAct.createGroup(page, "platform");
    await adminAct.bindGroup(page, "sso-demo", "platform", "PROJECT_READ_ONLY");

    await act.addProvider(page, { ...PROVIDER, clientId, secret, scopes: "openid email profile groups" });
    const card = find.providerCard(page, PROVIDER.name);
    await expect(card.getByRole("textbox", { name: /Callback URL/ })).toHaveValue(callback);
    await expect(card).toContainText("set (never shown)");
    await expect(card).not.toContainText(secret);
    await card.getByRole("button", { name: "Test" }).click();
    await expect(find.testResult(page)).toContainText("Discovery succeeded");
    noErrors();
  });

  test("a person signs in with the provider and has their group's access", async ({ page, request }) => {
    await provider.setUser(request, "sam", "sam@example.com", ["platform", "not-in-warden"]);
    await consoleAct.open(page, "/login");
    await find.ssoButton(page, PROVIDER.displayName).click();
    await act.signInAtProvider(page, "sam");
    await consoleCheck.onConsole(page);
    await expect(adminFind.myProjects(page)).toContainText("sso-demo");
    await expect(page.getByTestId("user-menu")).toContainText("sam");
  });

  test("a refusal comes back as a clear message on the sign-in page", async ({ page }) => {
    await page.goto(`/api/v1/auth/oidc/${PROVIDER.name}/callback?code=forged&state=forged`);
    await expect(page).toHaveURL(/\/login\?sso_error=state$/);
    await expect(page.getByTestId("login-error")).toContainText("invalid or has expired");
  });
});
