//! The console's landing page: who you are and what you may do.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::layout::MeResource;

#[component]
pub fn HomePage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let q = use_query_map();
    let changed = move || q.with(|q| q.get("password_changed").is_some());
    view! {
        <Show when=changed>
            <p class="notice" role="status">"Your password has been changed."</p>
        </Show>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || me.get().map(|r| match r {
                Ok(Some(m)) => view! {
                    <h1>"Welcome, " {m.user.name.clone()}</h1>
                    <section class="card" aria-labelledby="access-title">
                        <h2 id="access-title">"Your access"</h2>
                        {if m.grants.is_empty() {
                            view! { <p class="empty">"You have no roles yet. Ask an administrator to add you to a project, or "<a href="/access">"request access"</a>"."</p> }.into_any()
                        } else {
                            view! {
                                <table class="table" data-testid="my-grants">
                                    <thead><tr><th>"Role"</th><th>"Scope"</th><th>"Project"</th><th>"Namespaces"</th><th>"Via"</th><th>"Time left"</th></tr></thead>
                                    <tbody>
                                        {m.grants.iter().map(|g| view! {
                                            <tr>
                                                <td>{g.role.clone()}</td>
                                                <td>{g.scope.clone()}</td>
                                                <td>{g.project.clone().unwrap_or_else(|| "all".into())}</td>
                                                <td>{g.namespaces.join(", ")}</td>
                                                <td>{g.via.clone()}</td>
                                                <td data-testid="grant-time-left">{match &g.expires_at {
                                                    Some(at) => view! { <span class="tag tag-warn" title=at.clone()>{crate::bindings::time_left_rfc3339(at)}</span> }.into_any(),
                                                    None => view! { <span class="muted">"permanent"</span> }.into_any(),
                                                }}</td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                                <p><a href="/access" data-testid="request-more-access">"Request more access…"</a></p>
                            }.into_any()
                        }}
                    </section>
                    <section class="card" aria-labelledby="projects-title">
                        <h2 id="projects-title">"Projects"</h2>
                        {if m.projects.is_empty() {
                            view! { <p class="empty">"No projects are visible to you."</p> }.into_any()
                        } else {
                            view! { <ul class="chips" data-testid="my-projects">{m.projects.iter().map(|p| view! { <li class="chip">{p.clone()}</li> }).collect_view()}</ul> }.into_any()
                        }}
                    </section>
                }.into_any(),
                Ok(None) => view! { <p>"Please " <a href="/login">"sign in"</a> "."</p> }.into_any(),
                Err(e) => view! { <p class="form-error">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
    }
}
