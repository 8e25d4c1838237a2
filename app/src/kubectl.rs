//! kubectl access in the console: "My tools" (the caller's clusters with their rights, the
//! kubeconfig download, revoking one's own credentials), revoking a user's credentials, and the
//! kubectl settings card shown on the organization, user and cluster pages.
//!
//! The kubeconfig itself is served by `GET /api/v1/kubeconfig` (the server signs the
//! credential); the links here point at it and the session cookie authenticates them.

use leptos::prelude::*;
use warden_domain::dto::ClusterStatus;
use warden_domain::kubeconfig::{
    human_duration, CliBuild, KubeconfigRevoked, KubectlSettings, KubectlSettingsDto, MyKubectl,
};

use crate::error::AppError;
use crate::ui::{
    confirm_href, confirm_open, encode, short_time, success_count, ConfirmPanel, FieldError,
    FormAlert, FormState, LoadError, Loading, Submit,
};

/// The caller's own kubectl access.
#[server(prefix = "/sfn", endpoint = "my_kubectl")]
pub async fn get_my_kubectl() -> Result<MyKubectl, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::kubectl::my_kubectl(&svc, &who).await?)
}

/// Revoke every kubeconfig issued so far: the caller's own (`user` empty), or a user's
/// (needs `kubeconfig.write`; the domain asks the gate).
#[server(prefix = "/sfn", endpoint = "revoke_kubeconfigs")]
pub async fn revoke_kubeconfigs(
    #[server(default)] user: String,
) -> Result<KubeconfigRevoked, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let user = user.trim();
    let target = (!user.is_empty()).then_some(user);
    let r = warden_domain::kubectl::revoke(&svc, &who, target).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[cfg(feature = "ssr")]
fn level(scope: &str, subject: String) -> Result<warden_domain::kubectl::SettingsLevel, AppError> {
    use warden_domain::kubectl::SettingsLevel;
    match scope {
        "organization" => Ok(SettingsLevel::Organization),
        "user" if !subject.trim().is_empty() => Ok(SettingsLevel::User(subject)),
        "cluster" if !subject.trim().is_empty() => Ok(SettingsLevel::Cluster(subject)),
        _ => Err(AppError::NotFound("settings".into())),
    }
}

/// One level's kubectl settings, and whether the caller may change them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KubectlSettingsView {
    pub settings: KubectlSettingsDto,
    pub writable: bool,
}

/// The kubectl settings of one level: `organization`, `user` (subject: email or id) or
/// `cluster` (subject: name). Whether the caller may change them is read from their grants
/// (the update asks the gate again).
#[server(prefix = "/sfn", endpoint = "get_kubectl_settings")]
pub async fn get_kubectl_settings(
    scope: String,
    #[server(default)] subject: String,
) -> Result<KubectlSettingsView, AppError> {
    use crate::ui::{can, can_in};
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let settings =
        warden_domain::kubectl::get_settings(&svc, &who, level(&scope, subject.clone())?).await?;
    let me = svc.policy.me(&who).await?;
    let writable = match scope.as_str() {
        "organization" => can(&me, "settings.write"),
        "user" => can(&me, "kubeconfig.write"),
        _ => {
            let c = warden_domain::clusters::get(&svc, &who, &subject).await?;
            can_in(&me, "cluster.write", &c.cluster.project)
        }
    };
    Ok(KubectlSettingsView { settings, writable })
}

/// Hours as typed (empty: inherit) to seconds.
pub fn parse_hours(
    fields: &mut std::collections::BTreeMap<String, String>,
    name: &str,
    text: &str,
) -> Option<i64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    match t.replace(',', ".").parse::<f64>() {
        Ok(h) if h.is_finite() && (1.0 / 60.0..=366.0 * 24.0).contains(&h) => {
            Some((h * 3600.0).round() as i64)
        }
        _ => {
            fields.insert(
                name.to_owned(),
                "Enter a number of hours between 0.02 (one minute) and 8784 (366 days), or leave it empty to inherit.".into(),
            );
            None
        }
    }
}

/// Seconds as hours for the form ("8", "0.5").
pub fn hours(secs: i64) -> String {
    if secs % 3600 == 0 {
        (secs / 3600).to_string()
    } else {
        let h = format!("{:.2}", secs as f64 / 3600.0);
        h.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A whole number typed in a form field, within `range`; empty inherits. `scale` turns it into
/// the stored unit (60 for minutes as seconds, 1 for a count).
pub fn parse_whole(
    fields: &mut std::collections::BTreeMap<String, String>,
    name: &str,
    text: &str,
    range: std::ops::RangeInclusive<i64>,
    unit: &str,
    scale: i64,
) -> Option<i64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    match t.parse::<i64>() {
        Ok(n) if range.contains(&n) => Some(n * scale),
        _ => {
            fields.insert(
                name.to_owned(),
                format!(
                    "Enter a whole number of {unit} between {} and {}, or leave it empty to inherit.",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }
}

/// A three-way choice as typed: empty inherits, `on`, `off`.
pub fn parse_flag(
    fields: &mut std::collections::BTreeMap<String, String>,
    name: &str,
    text: &str,
) -> Option<bool> {
    match text.trim() {
        "" => None,
        "on" => Some(true),
        "off" => Some(false),
        _ => {
            fields.insert(name.to_owned(), "Choose inherit, on or off.".into());
            None
        }
    }
}

/// Change one level's kubectl settings. Every field of the level is sent: an empty one goes back
/// to inheriting. Fields a level does not have are left untouched.
#[allow(clippy::too_many_arguments)]
#[server(prefix = "/sfn", endpoint = "update_kubectl_settings")]
pub async fn update_kubectl_settings(
    scope: String,
    #[server(default)] subject: String,
    #[server(default)] credential_validity_hours: String,
    #[server(default)] max_credential_validity_hours: String,
    #[server(default)] sa_idle_hours: String,
    #[server(default)] require_recent_sign_in: String,
    #[server(default)] recent_sign_in_hours: String,
    #[server(default)] disable_cli: String,
    #[server(default)] secrets_org_admins_only: String,
    #[server(default)] terminal_idle_minutes: String,
    #[server(default)] terminal_max_hours: String,
    #[server(default)] terminal_max_concurrent: String,
    #[server(default)] terminal_record_input: String,
) -> Result<KubectlSettingsDto, AppError> {
    use std::collections::BTreeMap;
    use warden_domain::kubeconfig::UpdateKubectlSettingsRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let level = level(&scope, subject)?;
    let mut fields = BTreeMap::new();
    let f = &mut fields;
    // The validity is set for the organization or a user; its bound for the organization only.
    let req = UpdateKubectlSettingsRequest {
        credential_validity_secs: (scope != "cluster")
            .then(|| parse_hours(f, "credential_validity_hours", &credential_validity_hours)),
        max_credential_validity_secs: (scope == "organization").then(|| {
            parse_hours(
                f,
                "max_credential_validity_hours",
                &max_credential_validity_hours,
            )
        }),
        sa_idle_secs: Some(parse_hours(f, "sa_idle_hours", &sa_idle_hours)),
        require_recent_sign_in: Some(parse_flag(
            f,
            "require_recent_sign_in",
            &require_recent_sign_in,
        )),
        recent_sign_in_secs: Some(parse_hours(
            f,
            "recent_sign_in_hours",
            &recent_sign_in_hours,
        )),
        disable_cli: Some(parse_flag(f, "disable_cli", &disable_cli)),
        secrets_org_admins_only: Some(parse_flag(
            f,
            "secrets_org_admins_only",
            &secrets_org_admins_only,
        )),
        terminal_idle_secs: Some(parse_whole(
            f,
            "terminal_idle_minutes",
            &terminal_idle_minutes,
            1..=24 * 60,
            "minutes",
            60,
        )),
        terminal_max_secs: Some(parse_hours(f, "terminal_max_hours", &terminal_max_hours)),
        // Counted per person on every cluster: not a cluster's setting.
        terminal_max_concurrent: (scope != "cluster").then(|| {
            parse_whole(
                f,
                "terminal_max_concurrent",
                &terminal_max_concurrent,
                1..=100,
                "terminals",
                1,
            )
        }),
        terminal_record_input: Some(parse_flag(
            f,
            "terminal_record_input",
            &terminal_record_input,
        )),
    };
    let r = if fields.is_empty() {
        warden_domain::kubectl::update_settings(&svc, &who, level, req)
            .await
            .map_err(|e| match AppError::from(e) {
                // The domain names durations in seconds; the form asks for hours.
                AppError::Invalid { fields } => AppError::Invalid {
                    fields: fields
                        .into_iter()
                        .map(|(k, v)| match k.as_str() {
                            "terminal_idle_secs" => ("terminal_idle_minutes".to_owned(), v),
                            "terminal_max_concurrent" => (k, v),
                            _ => (
                                k.replace("_secs", "_hours"),
                                v.replace(" seconds", " seconds (converted from hours)"),
                            ),
                        })
                        .collect(),
                },
                other => other,
            })
    } else {
        Err(AppError::Invalid { fields })
    };
    crate::ssr::finish(r, None)
}

// ---- My tools ----

#[component]
pub fn MyToolsPage() -> impl IntoView {
    let revoke = ServerAction::<RevokeKubeconfigs>::new();
    let revoked = success_count(revoke);
    let mine = Resource::new(move || revoked.get(), |_| get_my_kubectl());
    let state = FormState::new(revoke, "revoke-kubeconfigs");
    crate::ui::close_confirm_on_success(revoke);
    let confirming = confirm_open("revoke-kubeconfigs", None);
    view! {
        <h1>"My tools"</h1>
        <p class="muted">"Download a kubeconfig to use kubectl (or any Kubernetes client) on the clusters you may reach. Every request goes through Warden, which checks your current rights and records it in the audit log; on each cluster it runs as your own service account with only the rights your roles grant."</p>
        <FormAlert state ok="Your kubeconfigs were revoked: kubectl refuses every one of them from its next request. Download a new one to continue."/>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match mine.await {
                    Ok(m) => {
                        let (url, email) = (m.console_url.clone(), m.email.clone());
                        let builds = m.cli_builds.clone();
                        view! {
                            <MyTools mine=m revoke confirming/>
                            <CommandLineCard url email builds/>
                        }.into_any()
                    }
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
        <crate::sessions::MyTerminalsCard/>
    }
}

/// `wardenctl`, the command line: where to get it, and how to sign in with it here.
#[component]
fn CommandLineCard(url: String, email: String, builds: Vec<CliBuild>) -> impl IntoView {
    let command = format!("wardenctl login --url {url} --email {email}");
    let get_it = if builds.is_empty() {
        view! {
            <p class="muted" data-testid="wardenctl-from-source">"This Warden serves no wardenctl builds: install it from Warden's source ("<code>"cargo install --path cli --locked"</code>"), then sign in."</p>
        }.into_any()
    } else {
        view! {
            <p class="muted">"Download it for your computer, make it executable ("<code>"chmod +x wardenctl"</code>") and put it on your PATH, then sign in:"</p>
            <ul class="downloads" data-testid="wardenctl-downloads">
                {builds.into_iter().map(|b| {
                    let label = b.label();
                    let size = format!("{:.1} MB", b.size as f64 / 1_000_000.0);
                    let (sha, title) = (b.sha256.clone(), b.sha256.clone());
                    view! {
                        <li>
                            <a href=b.url download=b.file_name data-testid=format!("wardenctl-download-{}", b.platform)>{label}</a>
                            <span class="muted">" · "{size}" · SHA-256 "</span>
                            <code class="digest" title=title>{sha}</code>
                        </li>
                    }
                }).collect_view()}
            </ul>
        }.into_any()
    };
    view! {
        <section class="card" aria-labelledby="cli-title" data-testid="wardenctl-card">
            <h2 id="cli-title">"Command line"</h2>
            <p class="muted">"wardenctl does from a terminal what this console does, with your rights: projects, users, groups, bindings, clusters, kubeconfigs, access requests, the audit log (also followed live). It keeps an API key of 30 days (listed under API keys); "<code>"wardenctl logout"</code>" revokes it."</p>
            {get_it}
            <crate::ui::CommandBox command testid="wardenctl-login"/>
        </section>
    }
}

#[component]
fn MyTools(
    mine: MyKubectl,
    revoke: ServerAction<RevokeKubeconfigs>,
    confirming: Signal<bool>,
) -> impl IntoView {
    let validity = human_duration(mine.credential_validity_secs);
    let none = mine.clusters.is_empty();
    view! {
        {mine.cli_disabled.then(|| view! {
            <p class="form-error" role="alert" data-testid="cli-disabled">"kubectl access is turned off for you by your organization's settings. Ask an organization administrator if you need it."</p>
        })}
        <section class="card" aria-labelledby="my-clusters-title">
            <div class="page-head">
                <h2 id="my-clusters-title">"Your clusters"</h2>
                {(!none && !mine.cli_disabled).then(|| view! {
                    <a class="btn btn-primary" href="/api/v1/kubeconfig" download="warden.kubeconfig" rel="external" data-testid="download-kubeconfig">"Download kubeconfig"</a>
                })}
            </div>
            {if none {
                view! { <p class="empty" data-testid="no-kube-clusters">"No cluster is open to you through kubectl. A project administrator grants access with a role binding on a project that owns or shares a cluster, or "<a href="/access" data-testid="request-access-link">"request access"</a>" for as long as you need it."</p> }.into_any()
            } else {
                view! {
                    <div class="table-scroll">
                    <table class="table" data-testid="my-clusters">
                        <thead><tr>
                            <th scope="col">"Cluster"</th><th scope="col">"Project"</th><th scope="col">"Status"</th>
                            <th scope="col">"Your rights"</th><th scope="col"><span class="visually-hidden">"Download"</span></th>
                        </tr></thead>
                        <tbody>
                            {mine.clusters.iter().map(|c| view! {
                                <tr data-testid=format!("my-cluster-{}", c.name)>
                                    <td>{c.name.clone()}</td>
                                    <td>{c.project.clone()}</td>
                                    <td><crate::clusters::StatusChip status=c.status/></td>
                                    <td>{c.access.clone()}</td>
                                    <td class="actions">
                                        {(!mine.cli_disabled).then(|| view! {
                                            <a href=format!("/api/v1/kubeconfig?cluster={}", encode(&c.name)) download=format!("warden-{}.kubeconfig", c.name) rel="external">"kubeconfig for this cluster"</a>
                                            " "
                                        })}
                                        {(c.status == ClusterStatus::Connected).then(|| view! {
                                            <crate::terminal::TerminalLink cluster=c.name.clone() label="Terminal" testid=format!("my-terminal-open-{}", c.name)/>
                                        })}
                                    </td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    </div>
                    <p>"Then:"</p>
                    <crate::ui::CommandBox command=format!("export KUBECONFIG=~/Downloads/warden.kubeconfig\nkubectl config get-contexts\nkubectl --context warden-{} get pods -n <namespace>", mine.clusters[0].name)/>
                }.into_any()
            }}
        </section>
        <section class="card" aria-labelledby="my-credentials-title">
            <h2 id="my-credentials-title">"Your credentials"</h2>
            <p data-testid="credential-summary">{format!(
                "Each kubeconfig carries a client certificate valid for {validity}, as your service account {}. You have {} valid kubeconfig credential(s){}.",
                mine.service_account,
                mine.active_credentials,
                mine.latest_expiry.as_deref().map(|e| format!("; the newest expires {}", short_time(e))).unwrap_or_default(),
            )}</p>
            <p><a class="btn btn-danger-outline" href=confirm_href("revoke-kubeconfigs", None) data-testid="revoke-kubeconfigs">"Revoke my kubeconfigs…"</a></p>
            {move || confirming.get().then(|| view! {
                <ConfirmPanel title="Revoke every kubeconfig you downloaded?">
                    <p>"kubectl stops working with all of them at its next request, on every cluster. Use this when a laptop is lost or a kubeconfig was shared by mistake. You can download a new one right after."</p>
                    <ActionForm action=revoke>
                        <button type="submit" class="btn btn-danger" data-testid="confirm-revoke-kubeconfigs">"Revoke them"</button>
                    </ActionForm>
                </ConfirmPanel>
            })}
        </section>
    }
}

// ---- revoking a user's kubeconfigs (user page) ----

/// A button that revokes every kubeconfig of `email` (shown to holders of `kubeconfig.write`).
#[component]
pub fn RevokeUserKubeconfigs(email: String) -> impl IntoView {
    let revoke = ServerAction::<RevokeKubeconfigs>::new();
    let state = FormState::new(revoke, "revoke-user-kubeconfigs");
    crate::ui::close_confirm_on_success(revoke);
    let confirming = confirm_open("revoke-user-kubeconfigs", None);
    let who = StoredValue::new(email.clone());
    view! {
        <section class="card" aria-labelledby="user-kubeconfigs-title">
            <h2 id="user-kubeconfigs-title">"Kubeconfigs"</h2>
            <p class="muted">{format!("Revoking refuses every kubeconfig issued to {email} so far, from its next request. Their access through roles is unchanged: they may download a new one.")}</p>
            <FormAlert state ok="Revoked: every kubeconfig issued so far is refused from its next request."/>
            <p><a class="btn btn-danger-outline" href=confirm_href("revoke-user-kubeconfigs", None) data-testid="revoke-user-kubeconfigs">"Revoke kubeconfigs…"</a></p>
            {move || confirming.get().then(|| view! {
                <ConfirmPanel title=format!("Revoke every kubeconfig of {}?", who.get_value())>
                    <ActionForm action=revoke>
                        <input type="hidden" name="user" value=who.get_value()/>
                        <button type="submit" class="btn btn-danger" data-testid="confirm-revoke-user-kubeconfigs">"Revoke them"</button>
                    </ActionForm>
                </ConfirmPanel>
            })}
        </section>
    }
}

// ---- kubectl settings card ----

/// The kubectl settings of one level. `scope`: `organization`, `user` or `cluster`;
/// `subject`: the user's email or id, or the cluster's name. Render it at a page's top level,
/// not inside a `Suspend`: its resource must be created in the same order on the server and in
/// the browser for hydration.
#[component]
pub fn KubectlSettingsCard(
    scope: &'static str,
    #[prop(optional, into)] subject: Signal<String>,
) -> impl IntoView {
    let action = ServerAction::<UpdateKubectlSettings>::new();
    let saved = success_count(action);
    let settings = Resource::new(
        move || (subject.get(), saved.get()),
        move |(subject, _)| get_kubectl_settings(scope.to_owned(), subject),
    );
    let intro = match scope {
        "organization" => "Defaults for everyone. A user's settings override them; a cluster's settings can only make access stricter.",
        "user" => "Overrides of the organization's settings for this user. Empty fields inherit.",
        _ => "Stricter settings for this cluster: a shorter idle time, a recent sign-in, kubectl or secrets turned off. Empty fields inherit.",
    };
    view! {
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match settings.await {
                    Ok(v) => view! {
                        <section class="card" aria-labelledby="kubectl-settings-title" data-testid="kubectl-settings">
                            <h2 id="kubectl-settings-title">"kubectl access"</h2>
                            <p class="muted">{intro}</p>
                            <KubectlSettingsForm scope subject=subject.get_untracked() settings=v.settings action writable=v.writable/>
                        </section>
                    }.into_any(),
                    // The page itself says so (and shows nothing else).
                    Err(AppError::Forbidden | AppError::NotFound(_)) => ().into_any(),
                    Err(e) => view! { <section class="card"><LoadError err=e/></section> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn HoursField(
    state: FormState,
    name: &'static str,
    label: &'static str,
    value: Option<i64>,
    /// What applies when the field is empty (seconds).
    inherited: i64,
    disabled: Signal<bool>,
) -> impl IntoView {
    let id = state.id(name);
    let hint_id = format!("{id}-hint");
    let described = format!("{hint_id} {}", state.err_id(name));
    view! {
        <label for=id.clone()>{label}</label>
        <input id=id name=name type="number" min="0.02" max="8784" step="any"
            value=value.map(hours).unwrap_or_default()
            placeholder=hours(inherited)
            disabled=move || disabled.get()
            aria-invalid=move || state.field(name).is_some().to_string()
            aria-describedby=described/>
        <p class="hint" id=hint_id>{format!("Hours. Empty: inherit ({}).", human_duration(inherited))}</p>
        <FieldError state field=name/>
    }
}

#[component]
fn WholeField(
    state: FormState,
    name: &'static str,
    label: &'static str,
    value: Option<i64>,
    /// What applies when the field is empty, in the field's unit.
    inherited: i64,
    unit: &'static str,
    max: i64,
    disabled: Signal<bool>,
) -> impl IntoView {
    let id = state.id(name);
    let hint_id = format!("{id}-hint");
    let described = format!("{hint_id} {}", state.err_id(name));
    view! {
        <label for=id.clone()>{label}</label>
        <input id=id name=name type="number" min="1" max=max.to_string() step="1"
            value=value.map(|v| v.to_string()).unwrap_or_default()
            placeholder=inherited.to_string()
            disabled=move || disabled.get()
            aria-invalid=move || state.field(name).is_some().to_string()
            aria-describedby=described/>
        <p class="hint" id=hint_id>{format!("{unit}. Empty: inherit ({inherited}).")}</p>
        <FieldError state field=name/>
    }
}

#[component]
fn FlagField(
    state: FormState,
    name: &'static str,
    label: &'static str,
    value: Option<bool>,
    inherited: bool,
    disabled: Signal<bool>,
) -> impl IntoView {
    let id = state.id(name);
    let current = match value {
        None => "",
        Some(true) => "on",
        Some(false) => "off",
    };
    let onoff = if inherited { "on" } else { "off" };
    view! {
        <label for=id.clone()>{label}</label>
        <select id=id name=name disabled=move || disabled.get() aria-describedby=state.err_id(name)>
            {[("", format!("Inherit ({onoff})")), ("on", "On".to_owned()), ("off", "Off".to_owned())].into_iter().map(|(v, l)| {
                view! { <option value=v selected=v == current>{l}</option> }
            }).collect_view()}
        </select>
        <FieldError state field=name/>
    }
}

#[component]
fn KubectlSettingsForm(
    scope: &'static str,
    subject: String,
    settings: KubectlSettingsDto,
    action: ServerAction<UpdateKubectlSettings>,
    writable: bool,
) -> impl IntoView {
    let state = FormState::new(action, "kubectl");
    let KubectlSettings {
        credential_validity_secs,
        max_credential_validity_secs,
        sa_idle_secs,
        require_recent_sign_in,
        recent_sign_in_secs,
        disable_cli,
        secrets_org_admins_only,
        terminal_idle_secs,
        terminal_max_secs,
        terminal_max_concurrent,
        terminal_record_input,
    } = settings.settings.clone();
    let e = settings.effective.clone();
    // What an empty field falls back to: the level above (the defaults for the organization).
    let above = settings.inherited.clone();
    let ro = Signal::stored(!writable);
    view! {
        {(!writable).then(|| view! { <p class="muted">"You may read these settings but not change them."</p> })}
        <ActionForm action attr:class="form" attr:data-testid=format!("kubectl-settings-{scope}")>
            <input type="hidden" name="scope" value=scope/>
            <input type="hidden" name="subject" value=subject/>
            {(scope != "cluster").then(|| view! {
                <HoursField state name="credential_validity_hours" label="A kubeconfig's credential is valid for"
                    value=credential_validity_secs inherited=above.credential_validity_secs disabled=ro/>
            })}
            {(scope == "organization").then(|| view! {
                <HoursField state name="max_credential_validity_hours" label="Longest validity anyone may be given"
                    value=max_credential_validity_secs inherited=above.max_credential_validity_secs disabled=ro/>
            })}
            <HoursField state name="sa_idle_hours" label="Remove a user's service account after this long unused"
                value=sa_idle_secs inherited=above.sa_idle_secs disabled=ro/>
            <FlagField state name="require_recent_sign_in" label="Require a recent console sign-in for kubectl"
                value=require_recent_sign_in inherited=above.require_recent_sign_in disabled=ro/>
            <HoursField state name="recent_sign_in_hours" label="Recent means within"
                value=recent_sign_in_secs inherited=above.recent_sign_in_secs disabled=ro/>
            <FlagField state name="disable_cli" label="Turn kubectl access off"
                value=disable_cli inherited=above.disable_cli disabled=ro/>
            <FlagField state name="secrets_org_admins_only" label="Only organization admins may read secrets"
                value=secrets_org_admins_only inherited=above.secrets_org_admins_only disabled=ro/>
            <p class="hint" data-testid="secrets-setting-limits">
                "This refuses requests for Secret objects through Warden. It does not stop someone who may create pods or exec into them from reading a secret another way: mounting it into a pod, or printing the environment of a container that has it. Keep pod write and exec for people trusted with the namespace's secrets."
            </p>
            <WholeField state name="terminal_idle_minutes" label="End a web terminal after this long without input"
                value=terminal_idle_secs.map(|s| s / 60) inherited=above.terminal_idle_secs / 60
                unit="Minutes" max=1440 disabled=ro/>
            <HoursField state name="terminal_max_hours" label="End a web terminal this long after it opened"
                value=terminal_max_secs inherited=above.terminal_max_secs disabled=ro/>
            {(scope != "cluster").then(|| view! {
                <WholeField state name="terminal_max_concurrent" label="Web terminals one person may have open at once"
                    value=terminal_max_concurrent inherited=above.terminal_max_concurrent
                    unit="Terminals" max=100 disabled=ro/>
            })}
            <FlagField state name="terminal_record_input" label="Terminal recordings keep the keystrokes (passwords typed included)"
                value=terminal_record_input inherited=above.terminal_record_input disabled=ro/>
            {writable.then(|| view! { <Submit state label="Save kubectl settings" testid="save-kubectl-settings"/> })}
        </ActionForm>
        <FormAlert state
            fields=&["credential_validity_hours", "max_credential_validity_hours", "sa_idle_hours", "require_recent_sign_in", "recent_sign_in_hours", "disable_cli", "secrets_org_admins_only", "terminal_idle_minutes", "terminal_max_hours", "terminal_max_concurrent", "terminal_record_input"]
            ok="kubectl settings saved. They apply from the next request."/>
        <p class="muted" data-testid="kubectl-effective">{format!(
            "In force here: credentials valid for {}, service accounts removed after {} unused, recent sign-in {}, kubectl {}, secrets {}; web terminals end after {} idle or {} open, {} at once per person.",
            human_duration(e.credential_validity_secs),
            human_duration(e.sa_idle_secs),
            if e.require_recent_sign_in { format!("required (within {})", human_duration(e.recent_sign_in_secs)) } else { "not required".into() },
            if e.disable_cli { "off" } else { "on" },
            if e.secrets_org_admins_only { "for organization admins only" } else { "as the roles allow" },
            human_duration(e.terminal_idle_secs),
            human_duration(e.terminal_max_secs),
            e.terminal_max_concurrent,
        )}</p>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_round_trip_and_bounds() {
        let mut f = std::collections::BTreeMap::new();
        assert_eq!(parse_hours(&mut f, "x", "8"), Some(8 * 3600));
        assert_eq!(parse_hours(&mut f, "x", "0,5"), Some(1800));
        assert_eq!(parse_hours(&mut f, "x", " "), None);
        assert!(f.is_empty());
        assert_eq!(parse_hours(&mut f, "x", "0"), None);
        assert_eq!(parse_hours(&mut f, "y", "nine"), None);
        assert_eq!(parse_hours(&mut f, "z", "9000"), None);
        assert_eq!(f.len(), 3);
        assert_eq!(hours(8 * 3600), "8");
        assert_eq!(hours(1800), "0.5");
        assert_eq!(hours(60), "0.02");
    }

    #[test]
    fn flags_are_three_way() {
        let mut f = std::collections::BTreeMap::new();
        assert_eq!(parse_flag(&mut f, "a", ""), None);
        assert_eq!(parse_flag(&mut f, "a", "on"), Some(true));
        assert_eq!(parse_flag(&mut f, "a", "off"), Some(false));
        assert!(f.is_empty());
        assert_eq!(parse_flag(&mut f, "a", "yes"), None);
        assert_eq!(f.len(), 1);
    }
}
