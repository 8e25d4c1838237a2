import { expect, test } from "@playwright/test";
import { act, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, ADMIN_PASSWORD, check, find } from "./fixtures/console";

test.describe.serial("sign-in", () => {
  test("a signed-out visitor is sent to the sign-in page", async ({ page }) => {
    await page.goto("/");
    await expect(page).toHaveURL(/\/login$/);
    await expect(find.signIn(page)).toBeVisible();
  });

  test("the sign-in page is interactive after hydration", async ({ page }) => {
    const noErrors = check.noConsoleErrors(page);
    await act.open(page, "/login");
    await expect(find.password(page)).toHaveAttribute("type", "password");
    await find.togglePassword(page).click();
    await expect(find.password(page)).toHaveAttribute("type", "text");
    await expect(find.togglePassword(page)).toHaveText("Hide");
    await find.togglePassword(page).click();
    await expect(find.password(page)).toHaveAttribute("type", "password");
    noErrors();
  });

  test("a wrong password shows the error", async ({ page }) => {
    await act.signIn(page, ADMIN_EMAIL, "not-the-password");
    await expect(find.loginError(page)).toHaveText("Invalid email or password.");
    await expect(page).toHaveURL(/\/login\?error=invalid$/);
  });

  test("the first admin must change the password, then lands on the console", async ({ page }) => {
    await act.signIn(page, ADMIN_EMAIL, ADMIN_PASSWORD);
    await expect(page).toHaveURL(/\/change-password$/);
    await expect(page.getByTestId("forced-change")).toBeVisible();
    // Any console page sends them back until the password is changed.
    await page.goto("/");
    await expect(page).toHaveURL(/\/change-password$/);
    await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);

    // Errors are shown next to their fields.
    await act.changePassword(page, ADMIN_PASSWORD, "short");
    await expect(page.locator("#new_password-error")).toContainText("at least 12");

    await act.changePassword(page, ADMIN_PASSWORD, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);
    await expect(page.getByText("Your password has been changed.")).toBeVisible();
    await expect(page.getByTestId("my-grants")).toContainText("ADMIN");
  });

  test("the user menu opens on click and signs out", async ({ page }) => {
    const noErrors = check.noConsoleErrors(page);
    await act.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await check.onConsole(page);
    await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
    await expect(find.signOut(page)).toBeHidden();
    await find.userMenu(page).click();
    await expect(find.userMenu(page)).toHaveAttribute("aria-expanded", "true");
    await expect(find.signOut(page)).toBeVisible();
    await find.signOut(page).click();
    await expect(page).toHaveURL(/\/login\?signed_out=1$/);
    await page.goto("/");
    await expect(page).toHaveURL(/\/login$/);
    noErrors();
  });
});
