//! Live sessions: the streams Warden relays for people right now (web terminals, watches, log
//! follows, exec/attach through the gateway). Everyone sees and can end their own; with
//! `kubeconfig.write` on the organization, everyone's. Ending one closes it at once, with
//! "ended by <who>" on the holder's screen, and is audited.

use leptos::prelude::*;
use warden_domain::dto::LiveStreamDto;

use crate::error::AppError;
use crate::ui::{
    confirm_href, confirm_target, short_time, success_count, ConfirmPanel, FormAlert, FormState,
    LoadError, Loading,
};

/// The streams the caller may see, whether those are everyone's, and the recordings of the
/// terminals among them that the caller may watch (stream id, recording id).
#[server(prefix = "/sfn", endpoint = "list_live_streams")]
pub async fn list_live_streams() -> Result<LiveStreams, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let all = warden_domain::streams::may_manage_all(&svc, &who).await;
    let page = warden_domain::streams::list(&svc, &who, all, None).await?;
    let recordings = warden_domain::recordings::of_streams(&svc, &who, &page.items).await?;
    Ok(LiveStreams {
        items: page.items,
        all,
        recordings,
    })
}

/// The caller's own open web terminals, with their recordings where the caller may watch them.
#[server(prefix = "/sfn", endpoint = "list_my_terminals")]
pub async fn list_my_terminals() -> Result<LiveStreams, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let page = warden_domain::streams::list(
        &svc,
        &who,
        false,
        Some(warden_domain::dto::StreamKind::Terminal),
    )
    .await?;
    let recordings = warden_domain::recordings::of_streams(&svc, &who, &page.items).await?;
    Ok(LiveStreams {
        items: page.items,
        all: false,
        recordings,
    })
}

/// Live streams as the console shows them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveStreams {
    pub items: Vec<LiveStreamDto>,
    /// Everyone's (the caller may manage all), or only the caller's.
    pub all: bool,
    /// (stream id, recording id) of terminals whose recording the caller may watch.
    pub recordings: Vec<(u64, String)>,
}

impl LiveStreams {
    pub fn recording(&self, stream: u64) -> Option<String> {
        self.recordings
            .iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, r)| r.clone())
    }
}

#[server(prefix = "/sfn", endpoint = "end_live_stream")]
pub async fn end_live_stream(id: u64) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::streams::end(&svc, &who, id).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[component]
pub fn SessionsPage() -> impl IntoView {
    let end = ServerAction::<EndLiveStream>::new();
    let ended = success_count(end);
    let streams = Resource::new(move || ended.get(), |_| list_live_streams());
    let end_state = FormState::new(end, "end-stream");
    crate::ui::close_confirm_on_success(end);
    let ending = confirm_target("end-stream");
    view! {
        <h1>"Live sessions"</h1>
        <p class="muted">"Web terminals, watches, log follows and exec sessions open through Warden right now. Each is checked again whenever access changes; ending one closes it at once."</p>
        <section class="card" aria-labelledby="live-title">
            <h2 id="live-title">"Open now"</h2>
            <FormAlert state=end_state ok="Session ended."/>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    match streams.await {
                        Ok(l) if l.items.is_empty() => view! {
                            <p class="empty" data-testid="no-streams">{if l.all { "Nobody has a live session open." } else { "You have no live session open." }}</p>
                        }.into_any(),
                        Ok(l) => {
                            let all = l.all;
                            let confirm = ending.get().and_then(|id| l.items.iter().find(|s| s.id.to_string() == id).cloned());
                            view! {
                                {confirm.map(|s| view! {
                                    <ConfirmPanel title=format!("End {}'s {} on {}?", s.user, s.kind, s.cluster)>
                                        <p>"It closes at once; its holder sees that you ended it."</p>
                                        <ActionForm action=end>
                                            <input type="hidden" name="id" value=s.id.to_string()/>
                                            <button type="submit" class="btn btn-danger" data-testid="confirm-end-stream">"End it"</button>
                                        </ActionForm>
                                    </ConfirmPanel>
                                })}
                                <p class="muted">{if all { "Everyone's sessions." } else { "Your sessions." }}</p>
                                <div class="table-scroll">
                                <table class="table" data-testid="streams">
                                    <thead><tr>
                                        <th scope="col">"What"</th><th scope="col">"Who"</th><th scope="col">"Cluster"</th>
                                        <th scope="col">"Namespace"</th><th scope="col">"Target"</th><th scope="col">"Since"</th>
                                        <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                                    </tr></thead>
                                    <tbody>
                                        {l.items.iter().map(|s| view! {
                                            <tr data-testid=format!("stream-{}", s.id)>
                                                <td>{s.kind.as_str()}</td>
                                                <td>{s.user.clone()}</td>
                                                <td>{s.cluster.clone()}</td>
                                                <td>{s.namespace.clone().unwrap_or_else(|| "—".into())}</td>
                                                <td>{s.target.clone().unwrap_or_else(|| "—".into())}</td>
                                                <td>{short_time(&s.started_at)}</td>
                                                <td class="actions">
                                                    {l.recording(s.id).map(|r| view! {
                                                        <a href=crate::recordings::player_href(&r) data-testid=format!("watch-stream-{}", s.id)>"Watch"</a>
                                                        " "
                                                    })}
                                                    <a href=confirm_href("end-stream", Some(&s.id.to_string())) aria-label=format!("End {}'s {}", s.user, s.kind) data-testid=format!("end-stream-{}", s.id)>"End…"</a>
                                                </td>
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
    }
}

/// The caller's own open web terminals (My tools), each with "End" and, where the caller may
/// watch it, its recording.
#[component]
pub fn MyTerminalsCard() -> impl IntoView {
    let end = ServerAction::<EndLiveStream>::new();
    let ended = success_count(end);
    let terminals = Resource::new(move || ended.get(), |_| list_my_terminals());
    let state = FormState::new(end, "end-terminal");
    view! {
        <section class="card" aria-labelledby="my-terminals-title" data-testid="my-terminals">
            <h2 id="my-terminals-title">"Your open terminals"</h2>
            <FormAlert state ok="Terminal ended."/>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    match terminals.await {
                        Ok(l) if l.items.is_empty() => view! {
                            <p class="empty" data-testid="no-terminals">"You have no web terminal open."</p>
                        }.into_any(),
                        Ok(l) => {
                            let rows = l.items.clone().into_iter().map(|s| view! {
                                        <tr data-testid=format!("my-terminal-{}", s.id)>
                                            <td>{s.cluster.clone()}</td>
                                            <td>{s.namespace.clone().unwrap_or_else(|| "—".into())}</td>
                                            <td>{s.target.clone().unwrap_or_else(|| "kubectl shell".into())}</td>
                                            <td>{short_time(&s.started_at)}</td>
                                            <td class="actions">
                                                {l.recording(s.id).map(|r| view! {
                                                    <a href=crate::recordings::player_href(&r) data-testid=format!("watch-terminal-{}", s.id)>"Watch"</a>
                                                })}
                                                <ActionForm action=end attr:class="inline">
                                                    <input type="hidden" name="id" value=s.id.to_string()/>
                                                    <button type="submit" class="btn btn-small btn-danger-outline" data-testid=format!("end-terminal-{}", s.id)>"End"</button>
                                                </ActionForm>
                                            </td>
                                        </tr>
                                    }).collect_view();
                            view! {
                            <div class="table-scroll">
                            <table class="table">
                                <thead><tr>
                                    <th scope="col">"Cluster"</th><th scope="col">"Namespace"</th><th scope="col">"Target"</th>
                                    <th scope="col">"Since"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th>
                                </tr></thead>
                                <tbody>
                                    {rows}
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
    }
}
