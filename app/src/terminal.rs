//! The web terminal: `/clusters/:name/terminal[?namespace=N]` is the cluster's kubectl shell,
//! `/clusters/:name/terminal?namespace=N&pod=P[&container=C]` a shell in a pod's container.
//! The same terminal also opens as a drawer over any console page (the "Terminal" actions of
//! the cluster list, a cluster's page and My tools), with a link to the full page.
//!
//! Pages are server-rendered like every other (the pod picker and a plain GET form pick the
//! pod; deep links carry only cluster, namespace, pod and container, never a command). In the
//! browser, xterm.js (see [`crate::xterm`]) talks to `GET /api/v1/terminal/ws` (framing:
//! binary = terminal bytes; JSON text control messages `resize` from the browser, `ready`,
//! `exit`, `closed` from Warden), and the status line says where the terminal is, as whom,
//! how long it may still run, and why it ended.

use leptos::prelude::*;
use leptos_meta::Stylesheet;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::ui::encode;

/// What a terminal opens: the cluster's kubectl shell (no pod), or a pod's container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub cluster: String,
    /// Optional for the shell (its default namespace); required for a pod.
    pub namespace: String,
    pub pod: String,
    /// Empty: the pod's first container.
    pub container: String,
}

impl Target {
    pub fn shell(cluster: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            namespace: namespace.into(),
            ..Default::default()
        }
    }

    pub fn is_shell(&self) -> bool {
        self.pod.is_empty()
    }

    /// The query string shared by the full page and the WebSocket (empty values left out).
    pub fn query(&self) -> String {
        let mut q = Vec::new();
        for (k, v) in [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("container", &self.container),
        ] {
            if !v.is_empty() {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        q.join("&")
    }

    /// The full-page route of this terminal.
    pub fn page_href(&self) -> String {
        let q = self.query();
        let base = format!("/clusters/{}/terminal", encode(&self.cluster));
        if q.is_empty() {
            base
        } else {
            format!("{base}?{q}")
        }
    }

    /// The WebSocket's path and query.
    pub fn ws_path(&self) -> String {
        let q = self.query();
        let mut p = format!("/api/v1/terminal/ws?cluster={}", encode(&self.cluster));
        if !q.is_empty() {
            p.push('&');
            p.push_str(&q);
        }
        p
    }

    /// In words, for titles.
    pub fn describe(&self) -> String {
        if self.is_shell() {
            match self.namespace.as_str() {
                "" => format!("kubectl on {}", self.cluster),
                ns => format!("kubectl on {} (namespace {ns})", self.cluster),
            }
        } else {
            format!("{}/{} on {}", self.namespace, self.pod, self.cluster)
        }
    }
}

/// `H:MM:SS` (or `M:SS`) left until `ms`; `0:00` once past.
pub fn time_left(ms: f64) -> String {
    let secs = (ms / 1000.0).max(0.0).floor() as u64;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// What the `ready` message told about an open terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyInfo {
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub identity: String,
    pub shell: bool,
    /// Milliseconds since the epoch.
    pub expires_at: f64,
}

impl ReadyInfo {
    /// Where the terminal is, for the status line.
    pub fn place(&self) -> String {
        if self.shell {
            let ns = if self.namespace.is_empty() {
                "all namespaces".to_owned()
            } else {
                format!("namespace {}", self.namespace)
            };
            format!("{} · {ns} · kubectl shell", self.cluster)
        } else {
            let c = if self.container.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.container)
            };
            format!("{} · {}/{}{c}", self.cluster, self.namespace, self.pod)
        }
    }

    pub fn from_json(v: &serde_json::Value) -> Self {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Self {
            cluster: s("cluster"),
            namespace: s("namespace"),
            pod: s("pod"),
            container: s("container"),
            identity: s("identity"),
            shell: v["mode"] == "shell" || v["pod"].is_null() || v["pod"] == "",
            expires_at: v["expires_at"].as_f64().unwrap_or_default(),
        }
    }
}

/// Where a terminal is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Idle(String),
    Connecting(String),
    Ready(ReadyInfo),
    Ended(String),
}

/// A terminal bound to `target`: (re)connects whenever the target changes, and closes its
/// socket when it is unmounted (the page is left or the drawer closed).
#[component]
pub fn TerminalView(#[prop(into)] target: Signal<Option<Target>>) -> impl IntoView {
    let phase = RwSignal::new(Phase::Idle(
        "Pick a pod to exec into, or open the cluster's kubectl shell.".into(),
    ));
    let now = RwSignal::new(0f64);
    let screen = NodeRef::<leptos::html::Div>::new();
    #[cfg(feature = "hydrate")]
    let session = StoredValue::new_local(browser::Session::default());
    #[cfg(feature = "hydrate")]
    on_cleanup(move || browser::stop(session));
    // Effects run only in the browser.
    Effect::new(move |_| {
        let handle = set_interval_with_handle(
            move || now.set(js_sys_now()),
            std::time::Duration::from_secs(1),
        )
        .ok();
        now.set(js_sys_now());
        on_cleanup(move || {
            if let Some(h) = handle {
                h.clear();
            }
        });
    });
    Effect::new(move |_| {
        let Some(t) = target.get() else { return };
        if !t.is_shell() && t.namespace.is_empty() {
            phase.set(Phase::Idle("A pod needs its namespace.".into()));
            return;
        }
        if let Some(_el) = screen.get() {
            phase.set(Phase::Connecting(format!("Connecting: {}…", t.describe())));
            #[cfg(feature = "hydrate")]
            {
                browser::stop(session);
                browser::start(_el, t, phase, session);
            }
        }
    });
    let status = move || match phase.get() {
        Phase::Idle(m) | Phase::Connecting(m) => m.into_any(),
        Phase::Ready(r) => {
            let left = move || {
                let n = now.get();
                if n <= 0.0 {
                    String::new()
                } else {
                    format!("{} left", time_left(r.expires_at - n))
                }
            };
            view! {
                {format!("{} · as {} · ", r.place(), r.identity)}
                <span class="time-left" data-testid="terminal-time-left" title="until the session's limit">{left}</span>
            }
            .into_any()
        }
        Phase::Ended(m) => m.into_any(),
    };
    view! {
        <Stylesheet id="xterm" href="/xterm/xterm.css"/>
        <p class="terminal-status" class:ended=move || matches!(phase.get(), Phase::Ended(_)) role="status" data-testid="terminal-status">{status}</p>
        <div class="terminal-screen" node_ref=screen data-testid="terminal"></div>
    }
}

#[cfg(feature = "hydrate")]
fn js_sys_now() -> f64 {
    js_sys::Date::now()
}

#[cfg(not(feature = "hydrate"))]
fn js_sys_now() -> f64 {
    0.0
}

/// The terminal drawer's state, provided by the console layout: `Some` while it is open.
#[derive(Debug, Clone, Copy)]
pub struct Drawer(pub RwSignal<Option<Target>>);

pub fn provide_drawer() {
    provide_context(Drawer(RwSignal::new(None)));
}

/// The terminal as a drawer over the current page (mounted by the console layout).
#[component]
pub fn TerminalDrawer() -> impl IntoView {
    let Some(Drawer(open)) = use_context::<Drawer>() else {
        return ().into_any();
    };
    let close = move |_| open.set(None);
    (move || {
        open.get().map(|t| {
            let href = t.page_href();
            let title = t.describe();
            let target = t.clone();
            view! {
                <aside class="drawer" role="dialog" aria-modal="false" aria-labelledby="drawer-title" data-testid="terminal-drawer">
                    <header class="drawer-head">
                        <h2 id="drawer-title">{format!("Terminal: {title}")}</h2>
                        <a class="btn" href=href on:click=close data-testid="drawer-full-page">"Open full page"</a>
                        <button type="button" class="btn btn-ghost" aria-label="Close the terminal" on:click=close data-testid="drawer-close">"✕"</button>
                    </header>
                    <TerminalView target=Signal::derive(move || Some(target.clone()))/>
                </aside>
            }
        })
    })
    .into_any()
}

/// A link to a cluster's kubectl shell: opens the drawer when the page is hydrated (a plain
/// click), the full page otherwise (no JavaScript, or a new tab).
#[component]
pub fn TerminalLink(
    #[prop(into)] cluster: String,
    #[prop(optional, into)] namespace: String,
    #[prop(into)] label: String,
    #[prop(optional, into)] class: String,
    #[prop(optional, into)] testid: String,
) -> impl IntoView {
    let target = Target::shell(cluster, namespace);
    let href = target.page_href();
    let drawer = use_context::<Drawer>();
    let aria = format!("Open a terminal: {}", target.describe());
    let on_click = move |ev: leptos::ev::MouseEvent| {
        if let Some(Drawer(open)) = drawer {
            let plain = ev.button() == 0
                && !(ev.ctrl_key() || ev.meta_key() || ev.shift_key() || ev.alt_key());
            if plain {
                ev.prevent_default();
                open.set(Some(target.clone()));
            }
        }
    };
    view! { <a href=href class=class aria-label=aria data-testid=testid on:click=on_click>{label}</a> }
}

#[component]
pub fn TerminalPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let cluster = move || params.read().get("name").unwrap_or_default();
    let q = move |k: &str| query.read().get(k).unwrap_or_default();
    let target = Signal::derive(move || {
        let c = cluster();
        (!c.is_empty()).then(|| Target {
            cluster: c,
            namespace: q("namespace"),
            pod: q("pod"),
            container: q("container"),
        })
    });
    let shell_href = move || Target::shell(cluster(), q("namespace")).page_href();
    let is_shell = move || q("pod").is_empty();
    view! {
        <div class="terminal-page">
            <p class="crumbs"><a href="/clusters">"Clusters"</a> " / " <a href=move || format!("/clusters/{}", encode(&cluster()))>{cluster}</a></p>
            <div class="page-head">
                <h1>"Terminal on " {cluster}</h1>
                <a class="btn" class:btn-primary=move || !is_shell() href=shell_href data-testid="terminal-shell" aria-current=move || is_shell().then_some("page")>"kubectl shell"</a>
            </div>
            <details class="card terminal-pick" open=is_shell data-testid="terminal-pick">
                <summary>"Exec into a pod"</summary>
                <crate::pods::PodPicker cluster=Signal::derive(cluster) param="browse"/>
                <form method="get" class="terminal-target" data-testid="terminal-form">
                    <label>"Namespace " <input name="namespace" prop:value=move || q("namespace") required data-testid="terminal-namespace"/></label>
                    <label>"Pod " <input name="pod" prop:value=move || q("pod") required data-testid="terminal-pod"/></label>
                    <label>"Container " <input name="container" prop:value=move || q("container") placeholder="the pod's first" data-testid="terminal-container"/></label>
                    <button type="submit" class="btn" data-testid="terminal-open">"Open"</button>
                </form>
            </details>
            <TerminalView target/>
        </div>
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use leptos::prelude::*;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;

    use super::{Phase, ReadyInfo, Target};
    use crate::xterm::{FitAddon, Terminal};

    /// What an open terminal holds in the browser, released by [`stop`].
    #[derive(Default)]
    pub struct Session {
        socket: Option<web_sys::WebSocket>,
        term: Option<Terminal>,
        on_window_resize: Option<Closure<dyn FnMut()>>,
        /// Bumped by every start and stop, so a terminal still loading knows it is stale.
        generation: u64,
    }

    pub type Slot = StoredValue<Session, LocalStorage>;

    fn resize_message(cols: u32, rows: u32) -> String {
        serde_json::json!({"type": "resize", "cols": cols, "rows": rows}).to_string()
    }

    /// Close the socket, dispose of the terminal and stop following the window.
    pub fn stop(slot: Slot) {
        let Some(old) = slot.try_update_value(|s| {
            s.generation += 1;
            (s.socket.take(), s.term.take(), s.on_window_resize.take())
        }) else {
            return;
        };
        let (socket, term, listener) = old;
        if let Some(ws) = socket {
            ws.set_onclose(None);
            ws.set_onmessage(None);
            let _ = ws.close();
        }
        if let (Some(l), Some(w)) = (listener, web_sys::window()) {
            let _ = w.remove_event_listener_with_callback("resize", l.as_ref().unchecked_ref());
        }
        if let Some(t) = term {
            t.dispose();
        }
    }

    pub fn start(el: web_sys::HtmlDivElement, target: Target, phase: RwSignal<Phase>, slot: Slot) {
        let generation = slot.with_value(|s| s.generation);
        leptos::task::spawn_local(async move {
            let el: web_sys::HtmlElement = el.unchecked_into();
            el.set_inner_html("");
            let Ok((term, fit)) = crate::xterm::open(&el, false).await else {
                phase.set(Phase::Ended(
                    "The terminal could not load (xterm.js is missing from /xterm/).".into(),
                ));
                return;
            };
            if slot.try_with_value(|s| s.generation) != Some(generation) {
                term.dispose(); // stopped or restarted while xterm.js loaded
                return;
            }
            let Some(window) = web_sys::window() else {
                return;
            };
            let loc = window.location();
            let scheme = if loc.protocol().as_deref() == Ok("https:") {
                "wss"
            } else {
                "ws"
            };
            let url = format!(
                "{scheme}://{}{}",
                loc.host().unwrap_or_default(),
                target.ws_path()
            );
            let ws = match web_sys::WebSocket::new_with_str(&url, "warden.terminal.v1") {
                Ok(ws) => ws,
                Err(_) => {
                    phase.set(Phase::Ended(
                        "The terminal could not connect to Warden.".into(),
                    ));
                    return;
                }
            };
            ws.set_binary_type(web_sys::BinaryType::Arraybuffer);
            let opened = StoredValue::new(false);
            let told = StoredValue::new(false);

            let on_message = {
                let term = term.clone();
                let ws = ws.clone();
                Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                    let data = e.data();
                    if let Ok(buf) = data.clone().dyn_into::<js_sys::ArrayBuffer>() {
                        term.write(&js_sys::Uint8Array::new(&buf).into());
                        return;
                    }
                    let Some(text) = data.as_string() else { return };
                    let Ok(msg) = serde_json::from_str::<serde_json::Value>(&text) else {
                        return;
                    };
                    match msg["type"].as_str() {
                        Some("ready") => {
                            opened.set_value(true);
                            phase.set(Phase::Ready(ReadyInfo::from_json(&msg)));
                            let _ = ws.send_with_str(&resize_message(term.cols(), term.rows()));
                            term.focus();
                        }
                        Some("exit") => {
                            let code = msg["code"].as_i64().unwrap_or_default();
                            told.set_value(true);
                            phase.set(Phase::Ended(format!("Ended: exited (code {code})")));
                            term.write_str(&format!(
                                "\r\n\x1b[2m[exited (code {code})]\x1b[0m\r\n"
                            ));
                        }
                        Some("closed") => {
                            let reason = msg["reason"].as_str().unwrap_or("closed").to_owned();
                            told.set_value(true);
                            phase.set(Phase::Ended(format!("Closed: {reason}")));
                            term.write_str(&format!("\r\n\x1b[31m[closed: {reason}]\x1b[0m\r\n"));
                        }
                        _ => {}
                    }
                })
            };
            ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
            on_message.forget();

            let on_close = {
                let target = target.clone();
                Closure::<dyn FnMut(web_sys::CloseEvent)>::new(move |e: web_sys::CloseEvent| {
                    if told.get_value() {
                        return;
                    }
                    let reason = e.reason();
                    phase.set(Phase::Ended(if !reason.is_empty() {
                        format!("Closed: {reason}")
                    } else if !opened.get_value() {
                        // A browser does not see why an upgrade was refused; the reason is
                        // in the caller's own activity (the audit log), which they may read.
                        if target.is_shell() {
                            format!("Warden could not open the terminal: you may not use kubectl on cluster {}, or the cluster is not connected. My activity (user menu) says which.", target.cluster)
                        } else {
                            format!("Warden could not open the terminal: pod {} may not exist in namespace {}, you may not exec into pods there, or the cluster is not connected. My activity (user menu) says which.", target.pod, target.namespace)
                        }
                    } else {
                        "Closed: the connection to Warden was lost.".into()
                    }));
                })
            };
            ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
            on_close.forget();

            let on_data = {
                let ws = ws.clone();
                Closure::<dyn FnMut(String)>::new(move |data: String| {
                    if ws.ready_state() == web_sys::WebSocket::OPEN {
                        let _ = ws.send_with_u8_array(data.as_bytes());
                    }
                })
            };
            let _ = term.on_data(&on_data);
            on_data.forget();

            let on_resize = {
                let ws = ws.clone();
                Closure::<dyn FnMut(JsValue)>::new(move |size: JsValue| {
                    let get = |k: &str| {
                        js_sys::Reflect::get(&size, &JsValue::from_str(k))
                            .ok()
                            .and_then(|v| v.as_f64())
                            .unwrap_or_default() as u32
                    };
                    if ws.ready_state() == web_sys::WebSocket::OPEN {
                        let _ = ws.send_with_str(&resize_message(get("cols"), get("rows")));
                    }
                })
            };
            let _ = term.on_resize(&on_resize);
            on_resize.forget();

            // Follow the window's size (the fit addon recomputes cols/rows; onResize sends them).
            let fit: FitAddon = fit;
            let on_window_resize = Closure::<dyn FnMut()>::new(move || fit.fit());
            let _ = window.add_event_listener_with_callback(
                "resize",
                on_window_resize.as_ref().unchecked_ref(),
            );
            slot.update_value(|s| {
                s.socket = Some(ws);
                s.term = Some(term);
                s.on_window_resize = Some(on_window_resize);
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_make_links_and_socket_paths() {
        let shell = Target::shell("demo", "");
        assert!(shell.is_shell());
        assert_eq!(shell.page_href(), "/clusters/demo/terminal");
        assert_eq!(shell.ws_path(), "/api/v1/terminal/ws?cluster=demo");
        let pod = Target {
            cluster: "demo".into(),
            namespace: "apple".into(),
            pod: "box".into(),
            container: "main".into(),
        };
        assert_eq!(
            pod.page_href(),
            "/clusters/demo/terminal?namespace=apple&pod=box&container=main"
        );
        assert_eq!(
            pod.ws_path(),
            "/api/v1/terminal/ws?cluster=demo&namespace=apple&pod=box&container=main"
        );
        assert_eq!(pod.describe(), "apple/box on demo");
    }

    #[test]
    fn time_left_counts_down() {
        assert_eq!(time_left(8.0 * 3600.0 * 1000.0), "8:00:00");
        assert_eq!(time_left(61_500.0), "1:01");
        assert_eq!(time_left(-5.0), "0:00");
    }

    #[test]
    fn ready_messages_say_where() {
        let exec = ReadyInfo::from_json(
            &serde_json::json!({"type":"ready","mode":"exec","cluster":"demo","namespace":"default","pod":"shell","container":null,"identity":"system:serviceaccount:warden-system:u-a","expires_at":1.0}),
        );
        assert_eq!(exec.place(), "demo · default/shell");
        let shell = ReadyInfo::from_json(
            &serde_json::json!({"type":"ready","mode":"shell","cluster":"demo","namespace":null,"identity":"x","expires_at":1.0}),
        );
        assert_eq!(shell.place(), "demo · all namespaces · kubectl shell");
    }
}
