// Two-factor authentication end to end: a user enrols an authenticator app from the console
// (QR code, first code, recovery codes), then signs in with password and a code computed by the
// test, as the app would.
//
// Runs after signin.spec.ts against the same server (files run in name order).
import { expect, test } from "@playwright/test";
import { act as consoleAct, ADMIN_EMAIL, ADMIN_NEW_PASSWORD, check as consoleCheck, find as consoleFind } from "./fixtures/console";
import { act as adminAct } from "./fixtures/admin";
import { act, nextStep, totp } from "./fixtures/mfa";

const MIA = { email: "mia@example.com", name: "Mia", initial: "mia-initial-pass-1", next: "mia-chosen-pass-22" };

test.describe.serial("two-factor authentication", () => {
  test("a user enrols an authenticator app and signs in with a code", async ({ page }) => {
    // The refused API key (step-up) answers 403, once.
    const noErrors = consoleCheck.noConsoleErrors(page, [/status of 403/]);
    await consoleAct.signIn(page, ADMIN_EMAIL, ADMIN_NEW_PASSWORD);
    await consoleCheck.onConsole(page);
    await adminAct.createUser(page, MIA.email, MIA.name, MIA.initial);
    await page.context().clearCookies();
    await adminAct.firstSignIn(page, MIA.email, MIA.initial, MIA.next);
    await consoleCheck.onConsole(page);

    const secret = await act.enrol(page);
    await consoleAct.open(page, "/me/mfa");
    await expect(page.getByTestId("mfa-enabled")).toContainText("Recovery codes left: 10");

    // This session signed in without a second factor: a new API key (which downloads
    // kubeconfigs and is never asked for one itself) asks for a fresh code first.
    await act.createApiKey(page, "laptop");
    await expect(page.getByTestId("new-key-error")).toContainText("Confirm it is you");
    await expect(page.getByTestId("api-key-secret")).toHaveCount(0);
    await act.stepUp(page, totp(secret, 1));
    await page.getByTestId("new-key").getByRole("button", { name: "Create key" }).click();
    await expect(page.getByTestId("api-key-secret")).toBeVisible();
    await expect(page.getByTestId("api-keys")).toContainText("laptop");

    await page.context().clearCookies();
    await consoleAct.signIn(page, MIA.email, MIA.next);
    // The step-up used the next step's code; a step later, the one after (within the ±1 window)
    // signs in.
    await act.enterCode(page, "000000");
    await expect(consoleFind.loginError(page)).toContainText("Invalid or already used code");
    await nextStep();
    await act.enterCode(page, totp(secret, 1));
    await consoleCheck.onConsole(page);
    noErrors();
  });
});
