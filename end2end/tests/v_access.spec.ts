// The access model end to end, through the console only: the scenario of the seed article.
// The admin creates projects `production` and `dev`, groups `Operations` and `Developers`,
// and the article's two accounts: john (the SRE; Operations holds PROJECT_ADMIN on
// production) and sally (the developer; Developers holds NAMESPACE_ADMIN on namespace
// `apple` of dev). Then each of them sees their own project only, and no admin pages.
//
// Runs after signin.spec.ts against the same server (files run in name order): the admin's
// password is the one that file chose.
import { expect, test } from "@playwright/test";
import { act as consoleAct, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check as consoleCheck } from "./fixtures/console";
import { act, check, find } from "./fixtures/admin";

const JOHN = { email: "john@example.com", name: "John", initial: "john-initial-pass-1", next: "john-chosen-pass-22" };
const SALLY = { email: "sally@example.com", name: "Sally", initial: "sally-initial-pass-1", next: "sally-chosen-pass-22" };

test.describe.serial("access model through the console", () => {
  test("the admin creates the projects, users, groups and bindings", async ({ page }) => {
    const noErrors = consoleCheck.noConsoleErrors(page);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await check.adminLinks(page, ["Users", "Groups", "Roles", "Settings"]);

    await act.createProject(page, "production", "Live systems");
    await act.createProject(page, "dev", "Development");

    await act.createUser(page, JOHN.email, JOHN.name, JOHN.initial);
    await act.createUser(page, SALLY.email, SALLY.name, SALLY.initial);

    await act.createGroup(page, "Operations");
    await act.addMember(page, JOHN.email);
    await act.createGroup(page, "Developers");
    await act.addMember(page, SALLY.email);

    await act.bindGroup(page, "production", "Operations", "PROJECT_ADMIN");
    await act.bindGroup(page, "dev", "Developers", "NAMESPACE_ADMIN", "apple");

    // The user list filters by group.
    await consoleAct.open(page, "/users?group=Operations");
    await expect(page.getByTestId("users")).toContainText(JOHN.email);
    await expect(page.getByTestId("users")).not.toContainText(SALLY.email);

    // The "why" names the binding that lets sally write in apple, and refuses elsewhere.
    await consoleAct.open(page, "/users?q=sally");
    await page.getByRole("link", { name: SALLY.email }).click();
    await expect(page.getByTestId("user-email")).toHaveText(SALLY.email);
    const why = page.getByTestId("why");
    await why.getByLabel("Permission", { exact: true }).selectOption("kubectl.namespace.write");
    await why.getByLabel("Project", { exact: true }).selectOption("dev");
    await why.getByLabel("Namespace (optional)").fill("apple");
    await why.getByRole("button", { name: "Check" }).click();
    await expect(page.getByTestId("why-answer")).toContainText("Allowed");
    await expect(page.getByTestId("why-answer")).toContainText("group Developers");
    await why.getByLabel("Project", { exact: true }).selectOption("production");
    await why.getByRole("button", { name: "Check" }).click();
    await expect(page.getByTestId("why-answer")).toContainText("Denied");
    noErrors();
  });

  test("a refused deletion says why, after a confirmation step", async ({ page }) => {
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await consoleAct.open(page, "/projects/default");
    await page.getByTestId("delete-project").click();
    await expect(find.confirm(page)).toContainText("Delete project default?");
    await page.getByTestId("confirm-delete-project").click();
    await expect(page.getByTestId("delete-project-error")).toContainText("the default project cannot be deleted");
    await expect(page).toHaveURL(/\/projects\/default/);
  });

  test("sally sees dev only and no admin pages", async ({ page }) => {
    await act.firstSignIn(page, SALLY.email, SALLY.initial, SALLY.next);
    await consoleCheck.onConsole(page);
    await check.adminLinks(page, []);
    await check.seesProjects(page, ["dev"]);
    await check.forbidden(page, "/users", [JOHN.email, SALLY.email]);
    await check.forbidden(page, "/groups", ["Operations"]);
    await check.forbidden(page, "/settings", []);
    await consoleAct.open(page, "/projects/production");
    await expect(find.forbidden(page)).toBeVisible();
  });

  test("john sees production only", async ({ page }) => {
    await act.firstSignIn(page, JOHN.email, JOHN.initial, JOHN.next);
    await consoleCheck.onConsole(page);
    await check.adminLinks(page, []);
    await check.seesProjects(page, ["production"]);
    await check.forbidden(page, "/users", [SALLY.email]);
    // As the project's administrator he sees its members, and nothing of dev.
    await consoleAct.open(page, "/projects/production");
    await expect(find.members(page)).toContainText("Operations");
    await consoleAct.open(page, "/projects/dev");
    await expect(find.forbidden(page)).toBeVisible();
    await expect(page.locator("main")).not.toContainText("Developers");
  });
});
