//! The caller's API keys: tools and scripts authenticate with `Authorization: Bearer <key>`
//! and act with the owner's rights. The secret is shown once, at creation.

use leptos::prelude::*;
use warden_domain::dto::{ApiKeyDto, CreatedApiKey};

use crate::error::AppError;
use crate::ui::{
    confirm_href, confirm_target, short_time, success_count, take_flash, ConfirmPanel, Field,
    FormAlert, FormState, LoadError, Loading, OneTimeSecret, Submit,
};

#[server(prefix = "/sfn", endpoint = "list_api_keys")]
pub async fn list_api_keys() -> Result<Vec<ApiKeyDto>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::api_keys::list(&svc, &who)
        .await?
        .items)
}

#[server(prefix = "/sfn", endpoint = "create_api_key")]
pub async fn create_api_key(name: String, expires_in_days: u32) -> Result<CreatedApiKey, AppError> {
    use warden_domain::dto::CreateApiKeyRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let req = CreateApiKeyRequest {
        name,
        expires_in_days: Some(expires_in_days),
    };
    let r = warden_domain::admin::api_keys::create(&svc, &who, req)
        .await
        .map_err(AppError::from);
    if let Ok(k) = &r {
        crate::ssr::flash_for_plain_form("api_key", &k.secret).await?;
    }
    crate::ssr::finish(r, None)
}

#[server(prefix = "/sfn", endpoint = "revoke_api_key")]
pub async fn revoke_api_key(id: String) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::api_keys::revoke(&svc, &who, &id).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[component]
pub fn ApiKeysPage() -> impl IntoView {
    let create = ServerAction::<CreateApiKey>::new();
    let revoke = ServerAction::<RevokeApiKey>::new();
    let (created, revoked) = (success_count(create), success_count(revoke));
    let keys = Resource::new(move || (created.get(), revoked.get()), |_| list_api_keys());
    // A secret left by a plain form (creation before hydration).
    let flash = Resource::new_blocking(|| (), |_| take_flash("api_key".into()));
    let fresh = move || {
        create.value().with(|v| {
            v.as_ref()
                .and_then(|r| r.as_ref().ok())
                .map(|k| k.secret.clone())
        })
    };
    let create_state = FormState::new(create, "new-key");
    let revoke_state = FormState::new(revoke, "revoke-key");
    let form = NodeRef::<leptos::html::Form>::new();
    crate::ui::reset_on_success(create, form);
    crate::ui::close_confirm_on_success(revoke);
    let revoking = confirm_target("revoke-key");
    let note = "Copy it now: it is shown only once and Warden keeps only its hash. Use it as `Authorization: Bearer <key>`.";
    view! {
        <h1>"API keys"</h1>
        <p class="muted">"An API key lets a tool or script call Warden's REST API as you, with exactly your rights. Revoke a key as soon as it is no longer needed."</p>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                flash.await.ok().flatten().map(|secret| view! {
                    <OneTimeSecret title="Your new API key" value=secret note=note testid="api-key-secret"/>
                })
            })}
        </Suspense>
        {move || fresh().map(|secret| view! {
            <OneTimeSecret title="Your new API key" value=secret note=note testid="api-key-secret"/>
        })}
        <div class="columns">
            <section class="card grow" aria-labelledby="keys-title">
                <h2 id="keys-title">"Your keys"</h2>
                <FormAlert state=revoke_state ok="Key revoked."/>
                <Transition fallback=Loading>
                    {move || Suspend::new(async move {
                        match keys.await {
                            Ok(list) if list.is_empty() => view! {
                                <p class="empty">"You have no API keys. Create one when a tool needs to call Warden."</p>
                            }.into_any(),
                            Ok(list) => {
                                let confirm = revoking.get().and_then(|id| list.iter().find(|k| k.id == id && !k.revoked).cloned());
                                view! {
                                    {confirm.map(|k| view! {
                                        <ConfirmPanel title=format!("Revoke {}?", k.name)>
                                            <p>{format!("Every tool using the key {}… stops working at once. This cannot be undone.", k.prefix)}</p>
                                            <ActionForm action=revoke>
                                                <input type="hidden" name="id" value=k.id.clone()/>
                                                <button type="submit" class="btn btn-danger" data-testid="confirm-revoke-key">"Revoke key"</button>
                                            </ActionForm>
                                        </ConfirmPanel>
                                    })}
                                    <div class="table-scroll">
                                    <table class="table" data-testid="api-keys">
                                        <thead><tr>
                                            <th scope="col">"Name"</th><th scope="col">"Key starts with"</th><th scope="col">"Created"</th>
                                            <th scope="col">"Expires"</th><th scope="col">"Last used"</th><th scope="col">"Status"</th>
                                            <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                                        </tr></thead>
                                        <tbody>
                                            {list.into_iter().map(|k| view! {
                                                <tr>
                                                    <td>{k.name.clone()}</td>
                                                    <td><code>{k.prefix.clone()}</code></td>
                                                    <td>{short_time(&k.created_at)}</td>
                                                    <td>{short_time(&k.expires_at)}</td>
                                                    <td>{k.last_used_at.as_deref().map(short_time).unwrap_or_else(|| "never".into())}</td>
                                                    <td>{if k.revoked {
                                                        view! { <span class="chip denied">"revoked"</span> }.into_any()
                                                    } else {
                                                        view! { <span class="chip allowed">"active"</span> }.into_any()
                                                    }}</td>
                                                    <td class="actions">{(!k.revoked).then(|| view! {
                                                        <a href=confirm_href("revoke-key", Some(&k.id)) aria-label=format!("Revoke {}", k.name)>"Revoke…"</a>
                                                    })}</td>
                                                </tr>
                                            }).collect_view()}
                                        </tbody>
                                    </table>
                                    </div>
                                }.into_any()
                            }
                            Err(e) => view! { <LoadError err=e/> }.into_any(),
                        }
                    })}
                </Transition>
            </section>
            <section class="card side" aria-labelledby="new-key-title">
                <h2 id="new-key-title">"New key"</h2>
                <ActionForm action=create node_ref=form attr:class="form" attr:data-testid="new-key">
                    <Field state=create_state name="name" label="Name" required=true autocomplete="off" hint="What uses it, e.g. CI pipeline."/>
                    <Field state=create_state name="expires_in_days" label="Expires in (days)" kind="number" min="1" max="365" value="90" required=true/>
                    <Submit state=create_state label="Create key"/>
                </ActionForm>
                <FormAlert state=create_state fields=&["name", "expires_in_days"]/>
                <Show when=move || create_state.asks_step_up()>
                    <crate::mfa::StepUpForm/>
                    <p class="muted">"Then create the key again."</p>
                </Show>
            </section>
        </div>
    }
}
