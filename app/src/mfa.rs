//! Two-factor authentication in the console: the sign-in's second step (`/login/mfa`) and
//! one's own authenticator (`/me/mfa`: enrolment with a QR code, recovery codes shown once).

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use warden_domain::dto::{MfaStatus, RecoveryCodes, TotpEnrolment};

use crate::error::AppError;
use crate::ui::{Field, FormAlert, FormState, LoadError, Loading, Submit};

#[server(prefix = "/sfn", endpoint = "verify_mfa")]
pub async fn verify_mfa(code: String) -> Result<(), AppError> {
    use warden_domain::identity::authn::{complete_mfa_sign_in, SignInError};
    let svc = crate::ssr::services()?;
    let session = crate::ssr::session().await?;
    match complete_mfa_sign_in(&svc, &session, &code, crate::ssr::request_meta()).await {
        Ok(user) => {
            leptos_axum::redirect(if user.must_change_password {
                "/change-password"
            } else {
                "/"
            });
            Ok(())
        }
        Err(SignInError::Locked) => {
            leptos_axum::redirect("/login?error=locked");
            Ok(())
        }
        Err(SignInError::Internal(e)) => Err(e.into()),
        Err(_) => {
            leptos_axum::redirect("/login/mfa?error=invalid");
            Ok(())
        }
    }
}

#[server(prefix = "/sfn", endpoint = "get_my_mfa")]
pub async fn get_my_mfa() -> Result<MfaStatus, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal_enrolling().await?;
    crate::ssr::answer(
        warden_domain::identity::mfa::status(&svc, &who)
            .await
            .map_err(AppError::from),
    )
}

#[server(prefix = "/sfn", endpoint = "begin_totp_enrolment")]
pub async fn begin_totp_enrolment() -> Result<TotpEnrolment, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal_enrolling().await?;
    let r = warden_domain::identity::mfa::begin_enrolment(&svc, &who).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "confirm_totp_enrolment")]
pub async fn confirm_totp_enrolment(code: String) -> Result<RecoveryCodes, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal_enrolling().await?;
    let r = warden_domain::identity::mfa::confirm_enrolment(&svc, &who, &code).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

/// Step-up: a fresh second factor in this session (a terminal or a kubeconfig for a role that
/// allows writes asks for one when the last is older than the organization's step-up age, one hour by default).
#[server(prefix = "/sfn", endpoint = "step_up")]
pub async fn step_up(code: String) -> Result<(), AppError> {
    use warden_domain::identity::authn::SignInError;
    let svc = crate::ssr::services()?;
    let session = crate::ssr::session().await?;
    let who = crate::ssr::principal().await?;
    let r = match warden_domain::identity::authn::step_up(&svc, &session, &who, &code).await {
        Ok(()) => Ok(()),
        Err(SignInError::Internal(e)) => Err(e.into()),
        Err(SignInError::Locked) => Err(AppError::Refused(
            warden_domain::dto::messages::LOCKED.to_owned(),
        )),
        Err(_) => Err(AppError::Invalid {
            fields: [(
                "code".to_owned(),
                warden_domain::dto::messages::MFA_INVALID.to_owned(),
            )]
            .into(),
        }),
    };
    crate::ssr::finish(r, None)
}

/// The second step of a sign-in: the authenticator's code, or a recovery code.
#[component]
pub fn LoginMfaPage() -> impl IntoView {
    let verify = ServerAction::<VerifyMfa>::new();
    let q = use_query_map();
    let error = move || {
        q.with(|q| {
            q.get("error")
                .map(|_| warden_domain::dto::messages::MFA_INVALID)
        })
    };
    view! {
        <main class="auth-page">
            <section class="auth-card" aria-labelledby="mfa-title">
                <h1 id="mfa-title" class="brand">"Warden"</h1>
                <p class="muted">"Enter the 6-digit code of your authenticator app, or one of your recovery codes."</p>
                {move || error().map(|e| view! { <p class="form-error" role="alert" data-testid="login-error">{e}</p> })}
                <ActionForm action=verify attr:class="form">
                    <label for="code">"Code"</label>
                    <input id="code" name="code" autocomplete="one-time-code" inputmode="numeric" required autofocus/>
                    <button type="submit" class="btn btn-primary">"Verify"</button>
                </ActionForm>
                <p><a href="/login" rel="external">"Start again"</a></p>
            </section>
        </main>
    }
}

/// Step-up: a fresh code from the authenticator, for what asks for one (a terminal, a kubeconfig
/// for a role that allows writes, a new API key). Also offered where such a request was refused.
#[component]
pub fn StepUpForm() -> impl IntoView {
    let step_up = ServerAction::<StepUp>::new();
    let step_up_state = FormState::new(step_up, "step-up");
    view! {
        <section class="card" aria-labelledby="step-up-title">
            <h2 id="step-up-title">"Confirm it is you"</h2>
            <p class="muted">"A terminal, a kubeconfig for a role that allows writes, a new API key, giving access away (a role, a place in a group, an approval, a laxer setting) or acting on someone else's account (its password, second factor, status or kubectl settings) asks for a code when your last one is older than the organization allows (an hour by default)."</p>
            <ActionForm action=step_up attr:class="form" attr:data-testid="step-up">
                <Field state=step_up_state name="code" label="Code from the app" required=true autocomplete="one-time-code"/>
                <Submit state=step_up_state label="Confirm"/>
            </ActionForm>
            <FormAlert state=step_up_state fields=&["code"] ok="Confirmed for the next hour."/>
        </section>
    }
}

/// One's own authenticator: enrol with a QR code and a first code; recovery codes shown once.
#[component]
pub fn MyMfaPage() -> impl IntoView {
    let begin = ServerAction::<BeginTotpEnrolment>::new();
    let confirm = ServerAction::<ConfirmTotpEnrolment>::new();
    let confirmed = crate::ui::success_count(confirm);
    let status = Resource::new(move || confirmed.get(), |_| get_my_mfa());
    let begin_state = FormState::new(begin, "begin-mfa");
    let confirm_state = FormState::new(confirm, "confirm-mfa");
    view! {
        <h1>"Two-factor authentication"</h1>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match status.await {
                    Ok(s) if s.enabled => view! {
                        <p class="notice" data-testid="mfa-enabled">
                            {format!("An authenticator app is enrolled. Recovery codes left: {}.", s.recovery_codes_left)}
                        </p>
                        <p class="muted">"Lost the device? Sign in with a recovery code, or ask an administrator to reset your second factor."</p>
                        <StepUpForm/>
                    }.into_any(),
                    Ok(_) => view! {
                        <p class="muted">"Sign in with a code from an authenticator app (any TOTP app) besides your password."</p>
                        // Once set-up has begun (its code below), a second click would start
                        // another with a new key: the button goes.
                        <Show when=move || !begin.value().with(|v| matches!(v, Some(Ok(_))))>
                            <ActionForm action=begin attr:class="form">
                                <Submit state=begin_state label="Set up an authenticator app" testid="begin-mfa"/>
                            </ActionForm>
                        </Show>
                        <FormAlert state=begin_state/>
                    }.into_any(),
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
        {move || begin.value().get().and_then(Result::ok).filter(|_| confirmed.get() == 0).map(|e| view! {
            <section class="card" data-testid="mfa-enrolment">
                <h2>"Scan this code with your authenticator app"</h2>
                <div class="qr" inner_html=e.qr_svg.clone()></div>
                <p>"Or enter this key: " <code data-testid="mfa-secret">{e.secret.clone()}</code></p>
                <ActionForm action=confirm attr:class="form">
                    <Field state=confirm_state name="code" label="First code from the app" required=true autocomplete="one-time-code"/>
                    <Submit state=confirm_state label="Turn on two-factor authentication"/>
                </ActionForm>
                <FormAlert state=confirm_state fields=&["code"]/>
            </section>
        })}
        {move || confirm.value().get().and_then(Result::ok).map(|r| view! {
            <section class="secret" role="status" data-testid="recovery-codes">
                <h2>"Your recovery codes"</h2>
                <p>"Each works once, instead of a code from the app. Keep them somewhere safe: they are shown only now."</p>
                <ul class="mono">{r.recovery_codes.into_iter().map(|c| view! { <li>{c}</li> }).collect_view()}</ul>
                {(r.api_keys_revoked > 0).then(|| view! {
                    <p data-testid="keys-revoked">{format!(
                        "Your {} API key{} made before two-factor authentication {} revoked: make new ones under API keys.",
                        r.api_keys_revoked,
                        if r.api_keys_revoked == 1 { "" } else { "s" },
                        if r.api_keys_revoked == 1 { "was" } else { "were" },
                    )}</p>
                })}
            </section>
        })}
    }
}
