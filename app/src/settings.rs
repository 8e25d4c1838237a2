//! Organization settings: name, session lifetimes, lockout policy, audit retention.

use leptos::prelude::*;
use warden_domain::dto::SettingsDto;

use crate::error::AppError;
use crate::layout::MeResource;
use crate::ui::{
    can, me_of, success_count, Field, FormAlert, FormState, LoadError, Loading, Submit,
};

#[server(prefix = "/sfn", endpoint = "get_settings")]
pub async fn get_settings() -> Result<SettingsDto, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::org_settings::get(&svc, &who).await?)
}

#[server(prefix = "/sfn", endpoint = "update_settings")]
pub async fn update_settings(
    organization_name: String,
    session_idle_minutes: i32,
    session_absolute_hours: i32,
    lockout_threshold: i32,
    lockout_window_minutes: i32,
    lockout_minutes: i32,
    mfa_policy: String,
    #[server(default)] local_sign_in: Option<String>,
    #[server(default)] break_glass_users: Option<String>,
    #[server(default)] step_up_max_age_minutes: Option<i32>,
    #[server(default)] audit_retention_days: String,
) -> Result<SettingsDto, AppError> {
    use warden_domain::dto::UpdateSettingsRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    // The form always sends the field: empty keeps events forever; a value that is not a
    // number is refused as out of range (0), with the same message.
    let audit_retention_days = Some(match audit_retention_days.trim() {
        "" => None,
        v => Some(v.parse::<i32>().unwrap_or(0)),
    });
    let req = UpdateSettingsRequest {
        organization_name: Some(organization_name),
        session_idle_minutes: Some(session_idle_minutes),
        session_absolute_hours: Some(session_absolute_hours),
        lockout_threshold: Some(lockout_threshold),
        lockout_window_minutes: Some(lockout_window_minutes),
        lockout_minutes: Some(lockout_minutes),
        mfa_policy: Some(mfa_policy),
        local_sign_in,
        break_glass_users: break_glass_users.map(|v| {
            v.split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect()
        }),
        step_up_max_age_minutes,
        audit_retention_days,
    };
    let r = warden_domain::admin::org_settings::update(&svc, &who, req).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[component]
pub fn SettingsPage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let action = ServerAction::<UpdateSettings>::new();
    let saved = success_count(action);
    let settings = Resource::new(move || saved.get(), |_| get_settings());
    let jit_action = ServerAction::<crate::access_requests::UpdateJitSettings>::new();
    let jit_saved = success_count(jit_action);
    let jit = Resource::new(
        move || jit_saved.get(),
        |_| crate::access_requests::get_jit_settings(),
    );
    // A new webhook URL's signing key: from the hydrated form's answer, or left in the session
    // by a plain form.
    let key_flash = Resource::new_blocking(
        || (),
        |_| crate::ui::take_flash(crate::access_requests::WEBHOOK_KEY_FLASH.into()),
    );
    let fresh_key = move || {
        jit_action.value().with(|v| {
            v.as_ref()
                .and_then(|r| r.as_ref().ok())
                .and_then(|s| s.webhook_signing_secret.clone())
        })
    };
    let key_view = |key: String| {
        view! {
            <crate::ui::OneTimeSecret title="The webhook's signing key" value=key
                note=crate::access_requests::WEBHOOK_KEY_NOTE testid="webhook-signing-key"/>
        }
    };
    view! {
        <h1>"Settings"</h1>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                let writable = me_of(me.await).is_some_and(|m| can(&m, "settings.write"));
                match settings.await {
                    Ok(s) => view! { <SettingsForm settings=s action writable/> }.into_any(),
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move { key_flash.await.ok().flatten().map(key_view) })}
        </Suspense>
        {move || fresh_key().map(key_view)}
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                let writable = me_of(me.await).is_some_and(|m| can(&m, "settings.write"));
                match jit.await {
                    Ok(s) => view! { <crate::access_requests::JitSettingsForm settings=s action=jit_action writable/> }.into_any(),
                    // The settings card above already says why.
                    Err(_) => ().into_any(),
                }
            })}
        </Transition>
        <crate::kubectl::KubectlSettingsCard scope="organization"/>
    }
}

#[component]
fn SettingsForm(
    settings: SettingsDto,
    action: ServerAction<UpdateSettings>,
    writable: bool,
) -> impl IntoView {
    let state = FormState::new(action, "settings");
    let ro = Signal::stored(!writable);
    view! {
        {(!writable).then(|| view! { <p class="muted">"You may read these settings but not change them."</p> })}
        <ActionForm action attr:class="form" attr:data-testid="settings">
            <section class="card">
                <h2>"Organization"</h2>
                <Field state name="organization_name" label="Name" value=settings.organization_name.clone() required=true disabled=ro/>
            </section>
            <section class="card">
                <h2>"Sessions"</h2>
                <Field state name="session_idle_minutes" label="Sign out after this many idle minutes" kind="number" min="1" max="1440"
                    value=settings.session_idle_minutes.to_string() required=true disabled=ro/>
                <Field state name="session_absolute_hours" label="End every session after this many hours" kind="number" min="1" max="720"
                    value=settings.session_absolute_hours.to_string() required=true disabled=ro/>
            </section>
            <section class="card">
                <h2>"Lockout"</h2>
                <p class="muted">"After this many failed sign-ins within the window, the account is locked for the lockout time."</p>
                <Field state name="lockout_threshold" label="Failed sign-ins" kind="number" min="1" max="100"
                    value=settings.lockout_threshold.to_string() required=true disabled=ro/>
                <Field state name="lockout_window_minutes" label="Window (minutes)" kind="number" min="1" max="1440"
                    value=settings.lockout_window_minutes.to_string() required=true disabled=ro/>
                <Field state name="lockout_minutes" label="Lockout (minutes)" kind="number" min="1" max="1440"
                    value=settings.lockout_minutes.to_string() required=true disabled=ro/>
            </section>
            <section class="card">
                <h2>"Two-factor authentication"</h2>
                <label for="settings-mfa_policy">"Who must sign in with a second factor"</label>
                <select id="settings-mfa_policy" name="mfa_policy" disabled=move || ro.get()>
                    {[("nobody", "Nobody (everyone may enrol)"), ("admins", "Administrators (anyone with an organization-wide role)"), ("everyone", "Everyone")]
                        .into_iter()
                        .map(|(v, label)| view! { <option value=v selected=settings.mfa_policy == v>{label}</option> })
                        .collect_view()}
                </select>
                <p class="hint">"Users who must and have not enrolled are sent to enrolment after signing in. A single sign-on counts as a second factor only with a provider trusted for it (Sign-in providers) whose sign-in says one was used."</p>
                <Field state name="step_up_max_age_minutes" label="Ask for a fresh second factor after this many minutes" kind="number" min="1" max="1440"
                    value=settings.step_up_max_age_minutes.to_string() required=true disabled=ro
                    hint="Before a web terminal or a kubeconfig for a role that allows writes (step-up)."/>
            </section>
            <section class="card">
                <h2>"Local passwords"</h2>
                <label for="settings-local_sign_in">"Who may sign in with a Warden password"</label>
                <select id="settings-local_sign_in" name="local_sign_in" data-testid="local-sign-in" disabled=move || ro.get()>
                    {[("everyone", "Everyone"), ("break_glass_only", "Only the break-glass administrators below (everyone else uses single sign-on)")]
                        .into_iter()
                        .map(|(v, label)| view! { <option value=v selected=settings.local_sign_in == v>{label}</option> })
                        .collect_view()}
                </select>
                <Field state name="break_glass_users" label="Break-glass administrators" value=settings.break_glass_users.join(", ") disabled=ro autocomplete="off"
                    placeholder="admin@example.com" hint="Emails of organization administrators who keep their password, comma-separated. Needs an enabled identity provider."/>
            </section>
            <section class="card">
                <h2>"Audit log"</h2>
                <Field state name="audit_retention_days" label="Delete audit events older than this many days" kind="number" min="1" max="36500"
                    value=settings.audit_retention_days.map(|d| d.to_string()).unwrap_or_default() disabled=ro autocomplete="off"
                    hint="Empty keeps them forever. Deletion runs in the background; `warden audit verify` still proves the events kept (from a signed checkpoint)."/>
            </section>
            {writable.then(|| view! { <Submit state label="Save settings"/> })}
        </ActionForm>
        <FormAlert state
            fields=&["organization_name", "session_idle_minutes", "session_absolute_hours", "lockout_threshold", "lockout_window_minutes", "lockout_minutes", "step_up_max_age_minutes", "break_glass_users", "audit_retention_days"]
            ok="Settings saved. New sessions and sign-ins use them at once."/>
    }
}
