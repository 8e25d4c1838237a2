//! Playback of terminal recordings: `/audit/recordings/:id`, a player on xterm.js (play/pause,
//! speed 1×/2×/4×, a seek slider, a download link). The facts of the recording are rendered on
//! the server for those who may read its audit events; the recording itself
//! (`GET /api/v1/terminal/recordings/{id}`, asciicast v2, which applies the same rule) is
//! fetched by the browser.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use warden_domain::dto::RecordingDto;

use crate::error::AppError;
use crate::ui::{short_time, Loading};

#[server(prefix = "/sfn", endpoint = "get_recording")]
pub async fn get_recording(id: String) -> Result<RecordingDto, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    crate::ssr::answer(
        warden_domain::recordings::get(&svc, &who, &id)
            .await
            .map_err(AppError::from),
    )
}

/// The player's URL for a recording.
pub fn player_href(id: &str) -> String {
    format!("/audit/recordings/{}", crate::ui::encode(id))
}

/// The recording id an audit event points at: the `terminal.open` event's own `recording`
/// detail, or the `terminal.close` event's `recording.id`.
pub fn recording_of(details: &serde_json::Value) -> Option<String> {
    let r = &details["recording"];
    r.as_str().or_else(|| r["id"].as_str()).map(str::to_owned)
}

/// One event of an asciicast v2 recording.
#[derive(Debug, Clone, PartialEq)]
pub enum CastEvent {
    Output(f64, String),
    Resize(f64, u32, u32),
}

impl CastEvent {
    pub fn at(&self) -> f64 {
        match self {
            CastEvent::Output(t, _) | CastEvent::Resize(t, _, _) => *t,
        }
    }
}

/// An asciicast v2 recording: the header's size, then output and resize events in time order
/// (input and marker events are skipped).
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    pub width: u32,
    pub height: u32,
    pub events: Vec<CastEvent>,
}

impl Cast {
    pub fn duration(&self) -> f64 {
        self.events.last().map(CastEvent::at).unwrap_or(0.0)
    }

    /// How many events happened at or before `t` seconds.
    pub fn index_at(&self, t: f64) -> usize {
        self.events.partition_point(|e| e.at() <= t)
    }
}

/// Parse an asciicast v2 file. A last line cut short (a recording still being written) is
/// ignored.
pub fn parse_cast(text: &str) -> Result<Cast, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: serde_json::Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or("the recording has no asciicast header")?;
    if header["version"] != 2 {
        return Err("the recording is not asciicast version 2".into());
    }
    let dim = |k: &str, d: u32| {
        header[k]
            .as_u64()
            .map(|v| v.clamp(1, 1000) as u32)
            .unwrap_or(d)
    };
    let mut events = Vec::new();
    for line in lines {
        let Ok(serde_json::Value::Array(ev)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            continue;
        };
        let (Some(t), Some(kind), Some(data)) = (
            ev.first().and_then(|v| v.as_f64()),
            ev.get(1).and_then(|v| v.as_str()),
            ev.get(2).and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        match kind {
            "o" => events.push(CastEvent::Output(t, data.to_owned())),
            "r" => {
                if let Some((c, r)) = data.split_once('x') {
                    if let (Ok(c), Ok(r)) = (c.parse::<u32>(), r.parse::<u32>()) {
                        events.push(CastEvent::Resize(t, c.clamp(1, 1000), r.clamp(1, 1000)));
                    }
                }
            }
            _ => {}
        }
    }
    events.sort_by(|a, b| a.at().total_cmp(&b.at()));
    Ok(Cast {
        width: dim("width", 80),
        height: dim("height", 24),
        events,
    })
}

/// `M:SS` for the player's clock.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).floor() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

#[component]
pub fn RecordingPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let info = Resource::new(id, get_recording);
    view! {
        <p class="crumbs"><a href="/audit?kind=terminal">"Audit log"</a></p>
        <h1>"Terminal recording"</h1>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match info.await {
                    Ok(r) => view! { <RecordingView rec=r/> }.into_any(),
                    Err(AppError::Forbidden) => view! {
                        <section class="card forbidden" role="alert" data-testid="recording-forbidden">
                            <h2>"Not allowed"</h2>
                            <p>"You may not watch this recording. A recording shows whatever the terminal printed, secrets included, so watching it takes both the right to read the terminal's audit events (audit.read on the organization or on the terminal's project) and the right to read secrets where it ran: in the pod's namespace for a pod's terminal, full access to the cluster for a kubectl shell. Read-only access never allows secrets; the commands typed are in the audit log."</p>
                        </section>
                    }.into_any(),
                    Err(AppError::NotFound(_)) => view! {
                        <section class="card" role="alert" data-testid="recording-not-found">
                            <h2>"No such recording"</h2>
                            <p>"No terminal was opened with this id. Open recordings from the terminal events of the audit log."</p>
                        </section>
                    }.into_any(),
                    Err(e) => view! { <crate::ui::LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn RecordingView(rec: RecordingDto) -> impl IntoView {
    let what = match (&rec.target, &rec.namespace) {
        (Some(t), Some(ns)) => format!("{ns}/{}", t.trim_start_matches("pods/")),
        (None, Some(ns)) => format!("kubectl shell (namespace {ns})"),
        (None, None) => "kubectl shell".to_owned(),
        (Some(t), None) => t.clone(),
    };
    let ended = rec.ended.clone();
    let download = format!("/api/v1/terminal/recordings/{}", crate::ui::encode(&rec.id));
    let row = |label: &'static str, value: String| view! { <dt>{label}</dt><dd>{value}</dd> };
    view! {
        <section class="card" aria-labelledby="recording-facts">
            <h2 id="recording-facts" class="visually-hidden">"About this recording"</h2>
            <dl class="facts" data-testid="recording-facts">
                {row("Who", rec.user.clone())}
                {row("Cluster", rec.cluster.clone().unwrap_or_default())}
                {row("Where", what)}
                {row("Started", short_time(&rec.started_at))}
                {row("Ended", match &ended {
                    Some(e) => format!("{}{}", e.reason.clone().unwrap_or_else(|| "closed".into()),
                        e.duration_ms.map(|d| format!(" after {}", clock(d as f64 / 1000.0))).unwrap_or_default()),
                    None => "still open (or Warden stopped before it closed)".into(),
                })}
                {ended.as_ref().and_then(|e| e.sha256.clone()).map(|h| row("SHA-256", h))}
            </dl>
        </section>
        <Player id=rec.id.clone() download/>
    }
}

#[component]
fn Player(id: String, download: String) -> impl IntoView {
    let screen = NodeRef::<leptos::html::Div>::new();
    let playing = RwSignal::new(false);
    let speed = RwSignal::new(1.0f64);
    let time = RwSignal::new(0.0f64);
    let duration = RwSignal::new(0.0f64);
    let problem = RwSignal::new(None::<String>);
    let loaded = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    let state = StoredValue::new_local(player::State::default());
    #[cfg(feature = "hydrate")]
    on_cleanup(move || player::stop(state));
    let _src = download.clone();
    Effect::new(move |_| {
        if let Some(_el) = screen.get() {
            #[cfg(feature = "hydrate")]
            player::load(
                _el,
                _src.clone(),
                state,
                playing,
                speed,
                time,
                duration,
                problem,
                loaded,
            );
        }
    });
    let _ = id;
    let seek = move |ev: leptos::ev::Event| {
        let t: f64 = event_target_value(&ev).parse().unwrap_or(0.0);
        #[cfg(feature = "hydrate")]
        player::seek(state, t, time);
        #[cfg(not(feature = "hydrate"))]
        time.set(t);
    };
    let toggle = move |_| {
        if time.get_untracked() >= duration.get_untracked() && !playing.get_untracked() {
            #[cfg(feature = "hydrate")]
            player::seek(state, 0.0, time);
        }
        playing.update(|p| *p = !*p);
    };
    view! {
        <Stylesheet id="xterm" href="/xterm/xterm.css"/>
        <section class="card player" aria-label="Player" data-testid="player">
            {move || problem.get().map(|p| view! { <p class="form-error" role="alert" data-testid="player-problem">{p}</p> })}
            <div class="terminal-screen player-screen" node_ref=screen data-testid="player-screen"></div>
            <div class="player-controls">
                <button type="button" class="btn btn-primary" on:click=toggle disabled=move || !loaded.get() data-testid="player-play"
                    aria-label=move || if playing.get() { "Pause" } else { "Play" }>
                    {move || if playing.get() { "❚❚ Pause" } else { "▶ Play" }}
                </button>
                <label class="player-speed">"Speed "
                    <select on:change=move |ev| speed.set(event_target_value(&ev).parse().unwrap_or(1.0)) data-testid="player-speed">
                        <option value="1" selected=true>"1×"</option>
                        <option value="2">"2×"</option>
                        <option value="4">"4×"</option>
                    </select>
                </label>
                <input type="range" class="player-seek" min="0" step="0.1" aria-label="Position"
                    prop:max=move || duration.get().max(0.1).to_string()
                    prop:value=move || time.get().to_string()
                    on:input=seek disabled=move || !loaded.get() data-testid="player-seek"/>
                <span class="player-clock" data-testid="player-clock">{move || format!("{} / {}", clock(time.get()), clock(duration.get()))}</span>
                <a class="btn" href=download download="" rel="external" data-testid="player-download">"Download (.cast)"</a>
            </div>
            <noscript><p>"The player needs JavaScript; the download link works without it."</p></noscript>
        </section>
    }
}

use leptos_meta::Stylesheet;

#[cfg(feature = "hydrate")]
mod player {
    use leptos::prelude::*;

    use super::{parse_cast, Cast, CastEvent};
    use crate::xterm::Terminal;

    /// The player's browser-side state.
    #[derive(Default)]
    pub struct State {
        term: Option<Terminal>,
        cast: Option<Cast>,
        /// Events already written.
        next: usize,
        timer: Option<IntervalHandle>,
    }

    pub type Slot = StoredValue<State, LocalStorage>;

    const TICK_MS: u64 = 50;

    pub fn stop(slot: Slot) {
        if let Some((timer, term)) = slot.try_update_value(|s| (s.timer.take(), s.term.take())) {
            if let Some(t) = timer {
                t.clear();
            }
            if let Some(t) = term {
                t.dispose();
            }
        }
    }

    fn write_until(s: &mut State, t: f64) {
        let (Some(term), Some(cast)) = (&s.term, &s.cast) else {
            return;
        };
        let end = cast.index_at(t);
        let mut out = String::new();
        for e in &cast.events[s.next.min(end)..end] {
            match e {
                CastEvent::Output(_, text) => out.push_str(text),
                CastEvent::Resize(_, c, r) => {
                    if !out.is_empty() {
                        term.write_str(&std::mem::take(&mut out));
                    }
                    term.resize(*c, *r);
                }
            }
        }
        if !out.is_empty() {
            term.write_str(&out);
        }
        s.next = s.next.max(end);
    }

    /// Jump to `t` seconds: the screen is redrawn from the start up to there.
    pub fn seek(slot: Slot, t: f64, time: RwSignal<f64>) {
        slot.update_value(|s| {
            if let (Some(term), Some(cast)) = (&s.term, &s.cast) {
                term.reset();
                term.resize(cast.width, cast.height);
            }
            s.next = 0;
            write_until(s, t);
        });
        time.set(t);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn load(
        el: web_sys::HtmlDivElement,
        url: String,
        slot: Slot,
        playing: RwSignal<bool>,
        speed: RwSignal<f64>,
        time: RwSignal<f64>,
        duration: RwSignal<f64>,
        problem: RwSignal<Option<String>>,
        loaded: RwSignal<bool>,
    ) {
        leptos::task::spawn_local(async move {
            let cast = match crate::xterm::get_text(&url).await {
                Some((200, body)) => match parse_cast(&body) {
                    Ok(c) => c,
                    Err(e) => {
                        problem.set(Some(format!("The recording cannot be played: {e}.")));
                        return;
                    }
                },
                Some((403, _)) => {
                    problem.set(Some("You may not watch this recording: recordings are shown only to those who may read the terminal's audit events.".into()));
                    return;
                }
                Some((404, _)) => {
                    problem.set(Some(
                        "The recording's file is missing (it may have been removed from Warden's data directory).".into(),
                    ));
                    return;
                }
                Some((401, _)) => {
                    problem.set(Some(
                        "Your session has ended: sign in again to watch.".into(),
                    ));
                    return;
                }
                _ => {
                    problem.set(Some("The recording could not be loaded; try again.".into()));
                    return;
                }
            };
            let el: web_sys::HtmlElement = wasm_bindgen::JsCast::unchecked_into(el);
            el.set_inner_html("");
            let Ok((term, _fit)) = crate::xterm::open(&el, true).await else {
                problem.set(Some(
                    "The player could not load (xterm.js is missing from /xterm/).".into(),
                ));
                return;
            };
            term.resize(cast.width, cast.height);
            duration.set(cast.duration());
            let timer = set_interval_with_handle(
                move || {
                    if !playing.get_untracked() {
                        return;
                    }
                    let d = duration.get_untracked();
                    let t = (time.get_untracked()
                        + TICK_MS as f64 / 1000.0 * speed.get_untracked())
                    .min(d);
                    slot.update_value(|s| write_until(s, t));
                    time.set(t);
                    if t >= d {
                        playing.set(false);
                    }
                },
                std::time::Duration::from_millis(TICK_MS),
            )
            .ok();
            slot.update_value(|s| {
                s.term = Some(term);
                s.cast = Some(cast);
                s.next = 0;
                s.timer = timer;
            });
            loaded.set(true);
            playing.set(true);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAST: &str = "{\"version\":2,\"width\":100,\"height\":30,\"timestamp\":1}\n[0.5,\"o\",\"$ \"]\n[0.7,\"r\",\"120x40\"]\n[1.25,\"o\",\"echo hi\\r\\nhi\\r\\n\"]\n[1.3,\"i\",\"x\"]\n[1.4,\"o\",\"cut";

    #[test]
    fn parses_asciicast_v2() {
        let c = parse_cast(CAST).unwrap();
        assert_eq!((c.width, c.height), (100, 30));
        assert_eq!(
            c.events,
            vec![
                CastEvent::Output(0.5, "$ ".into()),
                CastEvent::Resize(0.7, 120, 40),
                CastEvent::Output(1.25, "echo hi\r\nhi\r\n".into()),
            ]
        );
        assert_eq!(c.duration(), 1.25);
        assert_eq!(c.index_at(0.0), 0);
        assert_eq!(c.index_at(0.7), 2);
        assert_eq!(c.index_at(9.0), 3);
        assert!(parse_cast("{\"version\":1}").is_err());
        assert!(parse_cast("").is_err());
    }

    #[test]
    fn finds_the_recording_of_an_event() {
        assert_eq!(
            recording_of(&serde_json::json!({"recording": "abc"})).as_deref(),
            Some("abc")
        );
        assert_eq!(
            recording_of(&serde_json::json!({"recording": {"id": "abc", "sha256": "00"}}))
                .as_deref(),
            Some("abc")
        );
        assert_eq!(recording_of(&serde_json::json!({})), None);
        assert_eq!(clock(75.9), "1:15");
    }
}
