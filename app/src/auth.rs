//! Sign-in, sign-out, password changes: server functions and pages.
//!
//! The forms are plain HTML forms posting to server functions, so they work before the
//! WASM bundle loads; after hydration the same forms submit without a page load. Errors are
//! carried in the query string of the page the server redirects back to, which both paths
//! render the same way.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use warden_domain::dto::Me;

use crate::error::AppError;

#[server(prefix = "/sfn", endpoint = "login")]
pub async fn login(email: String, password: String) -> Result<(), AppError> {
    use warden_domain::identity::authn::{sign_in, SignInError};
    let svc = crate::ssr::services()?;
    let session = crate::ssr::session().await?;
    match sign_in(
        &svc,
        &session,
        &email,
        &password,
        crate::ssr::request_meta(),
    )
    .await
    {
        Ok(user) => {
            leptos_axum::redirect(if user.must_change_password {
                "/change-password"
            } else {
                "/"
            });
            Ok(())
        }
        Err(SignInError::Invalid) => {
            leptos_axum::redirect("/login?error=invalid");
            Ok(())
        }
        Err(SignInError::Locked) => {
            leptos_axum::redirect("/login?error=locked");
            Ok(())
        }
        Err(SignInError::MfaRequired) => {
            leptos_axum::redirect("/login/mfa");
            Ok(())
        }
        Err(SignInError::LocalSignInDisabled) => {
            leptos_axum::redirect("/login?error=local_sign_in_disabled&break_glass=1");
            Ok(())
        }
        Err(SignInError::PasswordNeedsReset) => {
            leptos_axum::redirect("/login?error=password_needs_reset");
            Ok(())
        }
        Err(SignInError::Internal(e)) => Err(e.into()),
    }
}

/// Whether the sign-in page shows the password form to everyone (no authentication needed:
/// the page says as much). `false` when local passwords are limited to break-glass accounts.
#[server(prefix = "/sfn", endpoint = "local_sign_in_open")]
pub async fn local_sign_in_open() -> Result<bool, AppError> {
    let svc = crate::ssr::services()?;
    let org = warden_domain::settings::load(&svc.db).await?;
    Ok(org.local_sign_in != warden_domain::settings::LOCAL_SIGN_IN_BREAK_GLASS_ONLY)
}

#[server(prefix = "/sfn", endpoint = "logout")]
pub async fn logout() -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let session = crate::ssr::session().await?;
    warden_domain::identity::authn::sign_out(&svc, &session, crate::ssr::request_meta()).await?;
    leptos_axum::redirect("/login?signed_out=1");
    Ok(())
}

#[cfg(feature = "ssr")]
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where to send the browser back to with a field error.
#[cfg(feature = "ssr")]
fn back_with_error(page: &str, extra: &str, e: AppError) -> Result<(), AppError> {
    match &e {
        AppError::Invalid { fields } => {
            let q: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("err.{}={}", encode(k), encode(v)))
                .collect();
            leptos_axum::redirect(&format!("{page}?{}{extra}", q.join("&")));
            Ok(())
        }
        _ => Err(e),
    }
}

#[server(prefix = "/sfn", endpoint = "change_password")]
pub async fn change_password(
    current_password: String,
    new_password: String,
    confirm_password: String,
) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let session = crate::ssr::session().await?;
    let who = crate::ssr::principal_allow_password_change().await?;
    if new_password != confirm_password {
        return back_with_error(
            "/change-password",
            "",
            AppError::Invalid {
                fields: [(
                    "confirm_password".to_owned(),
                    "does not match the new password".to_owned(),
                )]
                .into(),
            },
        );
    }
    match warden_domain::identity::authn::change_password(
        &svc,
        &who,
        Some(&session),
        &current_password,
        &new_password,
    )
    .await
    {
        Ok(()) => {
            leptos_axum::redirect("/?password_changed=1");
            Ok(())
        }
        Err(e) => back_with_error("/change-password", "", e.into()),
    }
}

#[server(prefix = "/sfn", endpoint = "set_password")]
pub async fn set_password(
    token: String,
    new_password: String,
    confirm_password: String,
) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let extra = format!("&token={}", encode(&token));
    if new_password != confirm_password {
        return back_with_error(
            "/set-password",
            &extra,
            AppError::Invalid {
                fields: [(
                    "confirm_password".to_owned(),
                    "does not match the new password".to_owned(),
                )]
                .into(),
            },
        );
    }
    match warden_domain::identity::authn::set_password_with_token(
        &svc,
        &token,
        &new_password,
        crate::ssr::request_meta(),
    )
    .await
    {
        Ok(_) => {
            leptos_axum::redirect("/login?password_set=1");
            Ok(())
        }
        Err(e) => back_with_error("/set-password", &extra, e.into()),
    }
}

/// The signed-in user and their effective permissions, or `None` when signed out.
#[server(prefix = "/sfn", endpoint = "me")]
pub async fn get_me() -> Result<Option<Me>, AppError> {
    let svc = crate::ssr::services()?;
    match crate::ssr::principal_allow_password_change().await {
        Ok(p) => Ok(Some(svc.policy.me(&p).await?)),
        Err(AppError::Unauthenticated) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A form field error read from the query string (`err.FIELD=message`).
fn query_error(field: &'static str) -> impl Fn() -> Option<String> + Copy {
    let q = use_query_map();
    move || q.with(|q| q.get(&format!("err.{field}")))
}

#[component]
fn FieldError(#[prop(into)] message: Signal<Option<String>>, id: &'static str) -> impl IntoView {
    view! {
        <Show when=move || message.get().is_some()>
            <p class="field-error" id=id role="alert">{move || message.get().unwrap_or_default()}</p>
        </Show>
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let q = use_query_map();
    let error = move || {
        q.with(|q| match q.get("error").as_deref() {
            Some("invalid") => Some(warden_domain::dto::messages::INVALID_CREDENTIALS),
            Some("locked") => Some(warden_domain::dto::messages::LOCKED),
            Some("local_sign_in_disabled") => Some("Local passwords are turned off for your account: sign in with your organization's identity provider."),
            Some("password_needs_reset") => Some("This password was chosen for you by someone who may no longer act on your account: ask an administrator for a set-password link."),
            _ => q.get("sso_error").map(|c| {
                warden_domain::dto::SsoFailure::parse(&c)
                    .unwrap_or(warden_domain::dto::SsoFailure::ProviderError)
                    .message()
            }),
        })
    };
    let notice = move || {
        q.with(|q| {
            if q.get("signed_out").is_some() {
                Some("You have signed out.")
            } else if q.get("password_set").is_some() {
                Some("Your password is set. Sign in with it.")
            } else {
                None
            }
        })
    };
    let (show, set_show) = signal(false);
    let local_open = Resource::new_blocking(|| (), |_| local_sign_in_open());
    let break_glass = move || q.with(|q| q.get("break_glass").is_some());
    view! {
        <main class="auth-page">
            <section class="auth-card" aria-labelledby="signin-title">
                <h1 id="signin-title" class="brand">"Warden"</h1>
                <p class="muted">"Sign in to the console"</p>
                {move || notice().map(|n| view! { <p class="notice" role="status">{n}</p> })}
                {move || error().map(|e| view! { <p class="form-error" role="alert" data-testid="login-error">{e}</p> })}
                <crate::identity_providers::SignInButtons/>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        // Local passwords limited to break-glass accounts: the form only behind a link.
                        let open = local_open.await.unwrap_or(true);
                        if open || break_glass() {
                            view! { <LocalSignInForm login show set_show/> }.into_any()
                        } else {
                            view! {
                                <p class="muted break-glass">
                                    <a href="/login?break_glass=1" data-testid="break-glass-link">"Break-glass sign-in"</a>
                                </p>
                            }.into_any()
                        }
                    })}
                </Suspense>
            </section>
        </main>
    }
}

/// The email and password form.
#[component]
fn LocalSignInForm(
    login: ServerAction<Login>,
    show: ReadSignal<bool>,
    set_show: WriteSignal<bool>,
) -> impl IntoView {
    view! {
        <ActionForm action=login attr:class="form">
            <label for="email">"Email"</label>
            <input id="email" type="email" name="email" autocomplete="username" required autofocus/>
            <label for="password">"Password"</label>
            <div class="password-row">
                <input
                    id="password"
                    type=move || if show.get() { "text" } else { "password" }
                    name="password"
                    autocomplete="current-password"
                    required
                />
                <button
                    type="button"
                    class="btn btn-ghost"
                    data-testid="toggle-password"
                    aria-pressed=move || show.get().to_string()
                    on:click=move |_| set_show.update(|s| *s = !*s)
                >
                    {move || if show.get() { "Hide" } else { "Show" }}
                </button>
            </div>
            <button type="submit" class="btn btn-primary">"Sign in"</button>
        </ActionForm>
    }
}

#[component]
pub fn ChangePasswordPage() -> impl IntoView {
    let action = ServerAction::<ChangePassword>::new();
    let forced = Resource::new(|| (), |_| get_me());
    view! {
        <main class="auth-page">
            <section class="auth-card" aria-labelledby="cp-title">
                <h1 id="cp-title">"Change your password"</h1>
                <Suspense fallback=|| ()>
                    {move || forced.get().and_then(|r| r.ok()).flatten().filter(|m| m.must_change_password).map(|_| view! {
                        <p class="notice" role="status" data-testid="forced-change">
                            "You must choose a new password before you continue."
                        </p>
                    })}
                </Suspense>
                <ActionForm action=action attr:class="form">
                    <PasswordField name="current_password" label="Current password" autocomplete="current-password"/>
                    <PasswordField name="new_password" label="New password (at least 12 characters)" autocomplete="new-password"/>
                    <PasswordField name="confirm_password" label="Repeat the new password" autocomplete="new-password"/>
                    <button type="submit" class="btn btn-primary">"Change password"</button>
                </ActionForm>
            </section>
        </main>
    }
}

#[component]
fn PasswordField(
    name: &'static str,
    label: &'static str,
    autocomplete: &'static str,
) -> impl IntoView {
    let err = query_error(name);
    let err_id = match name {
        "current_password" => "current_password-error",
        "new_password" => "new_password-error",
        _ => "confirm_password-error",
    };
    view! {
        <label for=name>{label}</label>
        <input id=name type="password" name=name autocomplete=autocomplete required
            aria-invalid=move || err().is_some().to_string() aria-describedby=err_id/>
        <FieldError message=Signal::derive(err) id=err_id/>
    }
}

#[component]
pub fn SetPasswordPage() -> impl IntoView {
    let action = ServerAction::<SetPassword>::new();
    let q = use_query_map();
    let token = move || q.with(|q| q.get("token").unwrap_or_default());
    let token_err = query_error("token");
    view! {
        <main class="auth-page">
            <section class="auth-card" aria-labelledby="sp-title">
                <h1 id="sp-title">"Set your password"</h1>
                {move || token_err().map(|e| view! { <p class="form-error" role="alert">{e}</p> })}
                <ActionForm action=action attr:class="form">
                    <input type="hidden" name="token" prop:value=token/>
                    <PasswordField name="new_password" label="New password (at least 12 characters)" autocomplete="new-password"/>
                    <PasswordField name="confirm_password" label="Repeat the new password" autocomplete="new-password"/>
                    <button type="submit" class="btn btn-primary">"Set password"</button>
                </ActionForm>
            </section>
        </main>
    }
}
