//! Identity providers (OpenID Connect single sign-on): organization administrators add, edit,
//! test and remove them; the sign-in page shows one button per enabled provider. The client secret
//! is write-only.

use leptos::prelude::*;
use warden_domain::dto::{
    GroupMappingMode, IdentityProviderDto, IdentityProviderTest, SignInProvider,
};

use crate::error::AppError;
use crate::layout::MeResource;
use crate::ui::{
    can, confirm_href, confirm_target, me_of, success_count, Chips, ConfirmPanel, Field, FormAlert,
    FormState, LoadError, Loading, Submit,
};

/// The sign-in page's buttons (no authentication needed).
#[server(prefix = "/sfn", endpoint = "sign_in_providers")]
pub async fn sign_in_providers() -> Result<Vec<SignInProvider>, AppError> {
    let svc = crate::ssr::services()?;
    Ok(warden_domain::identity::sso::sign_in_providers(&svc).await?)
}

#[server(prefix = "/sfn", endpoint = "list_identity_providers")]
pub async fn list_identity_providers() -> Result<Vec<IdentityProviderDto>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::identity_providers::list(&svc, &who).await;
    crate::ssr::answer(r.map(|p| p.items).map_err(AppError::from))
}

/// `provider group = Warden group`, one per line.
#[cfg(feature = "ssr")]
fn parse_mapping(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .collect()
}

/// `group_mapping`: one `provider group = Warden group` per line; empty maps groups by name.
#[allow(clippy::too_many_arguments)]
#[server(prefix = "/sfn", endpoint = "create_identity_provider")]
pub async fn create_identity_provider(
    name: String,
    display_name: String,
    issuer: String,
    client_id: String,
    client_secret: String,
    scopes: String,
    groups_claim: String,
    allowed_domains: String,
    group_mapping: String,
    #[server(default)] auto_provision: Option<String>,
    #[server(default)] link_existing_users: Option<String>,
    #[server(default)] trust_provider_mfa: Option<String>,
) -> Result<IdentityProviderDto, AppError> {
    use warden_domain::dto::CreateIdentityProviderRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let table = parse_mapping(&group_mapping);
    let req = CreateIdentityProviderRequest {
        name,
        display_name: Some(display_name).filter(|d| !d.trim().is_empty()),
        issuer,
        client_id,
        client_secret,
        scopes: Some(scopes.split_whitespace().map(str::to_owned).collect())
            .filter(|s: &Vec<String>| !s.is_empty()),
        email_claim: None,
        name_claim: None,
        groups_claim: Some(groups_claim),
        allowed_domains: Some(vec![allowed_domains]),
        group_mapping_mode: Some(if table.is_empty() {
            GroupMappingMode::ByName
        } else {
            GroupMappingMode::Explicit
        }),
        group_mapping: Some(table),
        auto_provision: Some(auto_provision.is_some()),
        link_existing_users: Some(link_existing_users.is_some()),
        enabled: Some(true),
        trust_provider_mfa: Some(trust_provider_mfa.is_some()),
    };
    let r = warden_domain::admin::identity_providers::create(&svc, &who, req).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

/// Edit a provider; an empty `client_secret` keeps the stored one. Checkboxes absent from the
/// form are off.
#[allow(clippy::too_many_arguments)]
#[server(prefix = "/sfn", endpoint = "update_identity_provider")]
pub async fn update_identity_provider(
    name: String,
    display_name: String,
    issuer: String,
    client_id: String,
    #[server(default)] client_secret: String,
    scopes: String,
    groups_claim: String,
    allowed_domains: String,
    group_mapping: String,
    #[server(default)] auto_provision: Option<String>,
    #[server(default)] link_existing_users: Option<String>,
    #[server(default)] trust_provider_mfa: Option<String>,
    #[server(default)] enabled: Option<String>,
) -> Result<IdentityProviderDto, AppError> {
    use warden_domain::dto::UpdateIdentityProviderRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let table = parse_mapping(&group_mapping);
    let req = UpdateIdentityProviderRequest {
        display_name: Some(display_name),
        issuer: Some(issuer),
        client_id: Some(client_id),
        client_secret: Some(client_secret).filter(|s| !s.is_empty()),
        scopes: Some(scopes.split_whitespace().map(str::to_owned).collect()),
        email_claim: None,
        name_claim: None,
        groups_claim: Some(groups_claim),
        allowed_domains: Some(vec![allowed_domains]),
        group_mapping_mode: Some(if table.is_empty() {
            GroupMappingMode::ByName
        } else {
            GroupMappingMode::Explicit
        }),
        group_mapping: Some(table),
        auto_provision: Some(auto_provision.is_some()),
        link_existing_users: Some(link_existing_users.is_some()),
        enabled: Some(enabled.is_some()),
        trust_provider_mfa: Some(trust_provider_mfa.is_some()),
    };
    let r = warden_domain::admin::identity_providers::update(&svc, &who, &name, req).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "delete_identity_provider")]
pub async fn delete_identity_provider(name: String) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::identity_providers::delete(&svc, &who, &name).await;
    crate::ssr::finish(
        r.map_err(AppError::from),
        Some("/identity-providers".into()),
    )
}

#[server(prefix = "/sfn", endpoint = "test_identity_provider")]
pub async fn test_identity_provider(name: String) -> Result<IdentityProviderTest, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::identity_providers::test(&svc, &who, &name).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

/// One button per provider, above the local form.
#[component]
pub fn SignInButtons() -> impl IntoView {
    let providers = Resource::new_blocking(|| (), |_| sign_in_providers());
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let list = providers.await.unwrap_or_default();
                (!list.is_empty()).then(|| view! {
                    <div class="sso-buttons" data-testid="sso-buttons">
                        {list.into_iter().map(|p| view! {
                            <a class="btn btn-primary sso-button" rel="external" href=p.login_url>
                                {format!("Sign in with {}", p.display_name)}
                            </a>
                        }).collect_view()}
                        <p class="muted or">"or with your Warden password"</p>
                    </div>
                })
            })}
        </Suspense>
    }
}

#[component]
pub fn IdentityProvidersPage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let create = ServerAction::<CreateIdentityProvider>::new();
    let delete = ServerAction::<DeleteIdentityProvider>::new();
    let test = ServerAction::<TestIdentityProvider>::new();
    let update = ServerAction::<UpdateIdentityProvider>::new();
    let (created, deleted, updated) = (
        success_count(create),
        success_count(delete),
        success_count(update),
    );
    let list = Resource::new(
        move || (created.get(), deleted.get(), updated.get()),
        |_| list_identity_providers(),
    );
    let update_state = FormState::new(update, "edit-idp");
    crate::ui::close_confirm_on_success(update);
    let editing = confirm_target("edit-idp");
    let create_state = FormState::new(create, "new-idp");
    let delete_state = FormState::new(delete, "delete-idp");
    let form = NodeRef::<leptos::html::Form>::new();
    crate::ui::reset_on_success(create, form);
    crate::ui::close_confirm_on_success(delete);
    let deleting = confirm_target("delete-idp");
    view! {
        <h1>"Identity providers"</h1>
        <p class="muted">
            "People sign in with their organization's OpenID Connect provider. Their groups are read at every sign-in: membership in the mapped Warden groups is replaced by what the provider says, so it is never older than a console session (see Settings)."
        </p>
        <FormAlert state=delete_state ok="Provider removed."/>
        <FormAlert state=update_state ok="Provider saved."/>
        {move || test.value().get().map(|r| match r {
            Ok(t) => view! {
                <section class=if t.ok { "card notice" } else { "card form-error" } role="status" data-testid="idp-test-result">
                    <p>{t.message.clone()}</p>
                    {t.token_endpoint.clone().map(|u| view! { <p>"Token endpoint: " <code>{u}</code></p> })}
                    {t.jwks_uri.clone().map(|u| view! { <p>"Keys: " <code>{u}</code></p> })}
                    {(!t.scopes_supported.is_empty()).then(|| view! { <Chips items=t.scopes_supported.clone() label="Scopes supported"/> })}
                </section>
            }.into_any(),
            Err(e) => view! { <LoadError err=e/> }.into_any(),
        })}
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                let writable = me_of(me.await).is_some_and(|m| can(&m, "idp.write"));
                match list.await {
                    Ok(items) => {
                        let confirm = deleting.get().and_then(|n| items.iter().find(|p| p.name == n).cloned());
                        let edit = editing.get().filter(|_| writable).and_then(|n| items.iter().find(|p| p.name == n).cloned());
                        view! {
                            {edit.map(|p| view! { <EditProvider p action=update state=update_state/> })}
                            {confirm.map(|p| view! {
                                <ConfirmPanel title=format!("Remove {}?", p.display_name)>
                                    <p>"Its users stay in Warden but can no longer sign in with it."</p>
                                    <ActionForm action=delete>
                                        <input type="hidden" name="name" value=p.name.clone()/>
                                        <button type="submit" class="btn btn-danger" data-testid="confirm-delete-idp">"Remove provider"</button>
                                    </ActionForm>
                                </ConfirmPanel>
                            })}
                            {items.is_empty().then(|| view! { <p class="empty">"No identity provider yet: everyone signs in with a Warden password."</p> })}
                            <div data-testid="identity-providers">
                                {items.into_iter().map(|p| view! { <ProviderCard p writable test/> }).collect_view()}
                            </div>
                            {writable.then(|| view! { <NewProvider action=create state=create_state form/> })}
                        }.into_any()
                    }
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn ProviderCard(
    p: IdentityProviderDto,
    writable: bool,
    test: ServerAction<TestIdentityProvider>,
) -> impl IntoView {
    let mapping = if p.group_mapping_mode == GroupMappingMode::Explicit {
        p.group_mapping
            .iter()
            .map(|(a, b)| format!("{a} → {b}"))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        "by name (a provider group joins the Warden group of the same name)".to_owned()
    };
    let (copied, set_copied) = signal(false);
    let callback = p.callback_url.clone();
    let name = p.name.clone();
    let delete_href = confirm_href("delete-idp", Some(&p.name));
    let edit_href = confirm_href("edit-idp", Some(&p.name));
    let edit_id = format!("edit-idp-{}", p.name);
    let delete_label = format!("Remove {}", p.display_name);
    let test_id = format!("test-idp-{}", p.name);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        {
            let _ = window().navigator().clipboard().write_text(&callback);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = &callback;
        set_copied.set(true);
    };
    view! {
        <section class="card" data-testid=format!("idp-{}", p.name)>
            <h2>{p.display_name.clone()} " " <span class="muted">{format!("({})", p.name)}</span>
                {(!p.enabled).then(|| view! { <span class="chip denied">"off"</span> })}</h2>
            <dl class="facts">
                <dt>"Issuer"</dt><dd><code>{p.issuer.clone()}</code></dd>
                <dt>"Client id"</dt><dd><code>{p.client_id.clone()}</code></dd>
                <dt>"Client secret"</dt><dd>{if p.client_secret_set { "set (never shown)" } else { "not set" }}</dd>
                <dt>"Scopes"</dt><dd>{p.scopes.join(" ")}</dd>
                <dt>"Groups claim"</dt><dd>{if p.groups_claim.is_empty() { "none (groups not synced)".to_owned() } else { p.groups_claim.clone() }}</dd>
                <dt>"Group mapping"</dt><dd>{mapping}</dd>
                <dt>"Allowed email domains"</dt><dd>{if p.allowed_domains.is_empty() { "any".to_owned() } else { p.allowed_domains.join(", ") }}</dd>
                <dt>"New users"</dt><dd>{if p.auto_provision { "created at first sign-in" } else { "must exist in Warden" }}</dd>
                <dt>"Existing accounts"</dt><dd>{if p.link_existing_users { "linked by email at first sign-in" } else { "never linked by email" }}</dd>
                <dt>"Provider's second factor"</dt><dd data-testid=format!("idp-mfa-{}", p.name)>{if p.trust_provider_mfa { "trusted when its sign-in says one was used (amr)" } else { "not trusted: Warden asks its own" }}</dd>
            </dl>
            <label for=format!("callback-{}", p.name)>"Callback URL to register at the provider"</label>
            <div class="secret-row">
                <input id=format!("callback-{}", p.name) class="mono" type="text" readonly value=p.callback_url.clone()/>
                <button type="button" class="btn" on:click=copy>{move || if copied.get() { "Copied" } else { "Copy" }}</button>
            </div>
            {writable.then(move || view! {
                <div class="actions-row">
                    <ActionForm action=test>
                        <input type="hidden" name="name" value=name.clone()/>
                        <button type="submit" class="btn" data-testid=test_id>"Test"</button>
                    </ActionForm>
                    <a class="btn" href=edit_href data-testid=edit_id>"Edit…"</a>
                    <a href=delete_href aria-label=delete_label>"Remove…"</a>
                </div>
            })}
        </section>
    }
}

#[component]
fn NewProvider(
    action: ServerAction<CreateIdentityProvider>,
    state: FormState,
    form: NodeRef<leptos::html::Form>,
) -> impl IntoView {
    view! {
        <section class="card" aria-labelledby="new-idp-title">
            <h2 id="new-idp-title">"Add a provider"</h2>
            <ActionForm action node_ref=form attr:class="form" attr:data-testid="new-idp">
                <Field state name="name" label="Name (in URLs)" required=true autocomplete="off" placeholder="okta" hint="Lowercase letters, digits and dashes; it cannot change later."/>
                <Field state name="display_name" label="Button text" autocomplete="off" placeholder="Okta" hint="Shown as “Sign in with …”."/>
                <Field state name="issuer" label="Issuer URL" kind="url" required=true autocomplete="off" placeholder="https://example.okta.com" hint="Warden reads /.well-known/openid-configuration under it."/>
                <Field state name="client_id" label="Client id" required=true autocomplete="off"/>
                <Field state name="client_secret" label="Client secret" kind="password" required=true autocomplete="new-password" hint="Write-only: stored encrypted, never shown again."/>
                <Field state name="scopes" label="Scopes" value="openid email profile" autocomplete="off" hint="Add groups if your provider needs it for the groups claim."/>
                <Field state name="groups_claim" label="Groups claim" value="groups" autocomplete="off" hint="Empty: groups are not synced."/>
                <Field state name="allowed_domains" label="Allowed email domains" autocomplete="off" placeholder="example.com, example.org" hint="Empty: any domain."/>
                <label for="new-idp-group_mapping">"Group mapping"</label>
                <textarea id="new-idp-group_mapping" name="group_mapping" rows="3" placeholder="platform-team = developers"></textarea>
                <p class="hint">"One “provider group = Warden group” per line. Empty: provider groups join Warden groups of the same name."</p>
                <label class="check"><input type="checkbox" name="auto_provision" checked/>" Create Warden users at their first sign-in"</label>
                <label class="check"><input type="checkbox" name="link_existing_users"/>" Link existing Warden accounts with the same email"</label>
                <label class="check"><input type="checkbox" name="trust_provider_mfa"/>" Trust the provider's second factor (its amr claim)"</label>
                <Submit state label="Add provider"/>
            </ActionForm>
            <FormAlert state fields=&["name", "display_name", "issuer", "client_id", "client_secret", "scopes", "groups_claim", "allowed_domains"] ok="Provider added. Register its callback URL at the provider."/>
        </section>
    }
}

/// Edit a provider in place (its name, in URLs, never changes).
#[component]
fn EditProvider(
    p: IdentityProviderDto,
    action: ServerAction<UpdateIdentityProvider>,
    state: FormState,
) -> impl IntoView {
    let mapping = p
        .group_mapping
        .iter()
        .map(|(a, b)| format!("{a} = {b}"))
        .collect::<Vec<_>>()
        .join("\n");
    view! {
        <ConfirmPanel title=format!("Edit {}", p.display_name)>
            <ActionForm action attr:class="form" attr:data-testid="edit-idp">
                <input type="hidden" name="name" value=p.name.clone()/>
                <Field state name="display_name" label="Button text" value=p.display_name.clone() required=true autocomplete="off"/>
                <Field state name="issuer" label="Issuer URL" kind="url" value=p.issuer.clone() required=true autocomplete="off"/>
                <Field state name="client_id" label="Client id" value=p.client_id.clone() required=true autocomplete="off"/>
                <Field state name="client_secret" label="Client secret" kind="password" autocomplete="new-password" hint="Empty: keep the stored one."/>
                <Field state name="scopes" label="Scopes" value=p.scopes.join(" ") autocomplete="off"/>
                <Field state name="groups_claim" label="Groups claim" value=p.groups_claim.clone() autocomplete="off" hint="Empty: groups are not synced."/>
                <Field state name="allowed_domains" label="Allowed email domains" value=p.allowed_domains.join(", ") autocomplete="off" hint="Empty: any domain."/>
                <label for="edit-idp-group_mapping">"Group mapping"</label>
                <textarea id="edit-idp-group_mapping" name="group_mapping" rows="3">{mapping}</textarea>
                <p class="hint">"One “provider group = Warden group” per line. Empty: provider groups join Warden groups of the same name."</p>
                <label class="check"><input type="checkbox" name="enabled" checked=p.enabled data-testid="edit-idp-enabled"/>" Enabled (a button on the sign-in page)"</label>
                <label class="check"><input type="checkbox" name="auto_provision" checked=p.auto_provision/>" Create Warden users at their first sign-in"</label>
                <label class="check"><input type="checkbox" name="link_existing_users" checked=p.link_existing_users/>" Link existing Warden accounts with the same email"</label>
                <label class="check"><input type="checkbox" name="trust_provider_mfa" checked=p.trust_provider_mfa data-testid="edit-idp-trust-mfa"/>" Trust the provider's second factor (its amr claim)"</label>
                <Submit state label="Save provider" testid="save-idp"/>
            </ActionForm>
            <FormAlert state fields=&["display_name", "issuer", "client_id", "client_secret", "scopes", "groups_claim", "allowed_domains"]/>
        </ConfirmPanel>
    }
}
