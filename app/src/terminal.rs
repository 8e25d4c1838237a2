//! The web terminal page: `/clusters/:name/terminal?namespace=N&pod=P[&container=C]`.
//!
//! The page is server-rendered like every other (a form picks the pod; deep links carry only
//! cluster, namespace, pod and container, never a command). In the browser, xterm.js
//! (`@xterm/xterm` 6 and `@xterm/addon-fit`, put in `/xterm/` by `./x` from `node_modules`, no
//! CDN) is loaded on this page only and bound with wasm-bindgen extern types; the terminal
//! talks to `GET /api/v1/terminal/ws` (see `server/src/terminal.rs` for the framing), and the
//! status line says where the terminal is, as whom, until when, and why it ended.
//!
//! (The crate `xterm-js-sys` is unmaintained and does not build with today's wasm-bindgen, so
//! the few calls used here are bound directly.)

use leptos::prelude::*;
use leptos_meta::Stylesheet;
use leptos_router::hooks::{use_params_map, use_query_map};

#[component]
pub fn TerminalPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let cluster = move || params.read().get("name").unwrap_or_default();
    let namespace = move || query.read().get("namespace").unwrap_or_default();
    let pod = move || query.read().get("pod").unwrap_or_default();
    let container = move || query.read().get("container").unwrap_or_default();
    let status = RwSignal::new(String::from(
        "Pick a pod: the terminal opens a shell in its container, as you.",
    ));
    let ended = RwSignal::new(false);
    let screen = NodeRef::<leptos::html::Div>::new();
    // The open socket: closed when the page is left (also by in-app navigation) or another pod
    // is picked, so no terminal outlives its page.
    #[cfg(feature = "hydrate")]
    let socket = StoredValue::new_local(None::<web_sys::WebSocket>);
    #[cfg(feature = "hydrate")]
    on_cleanup(move || browser::close(socket));
    // Effects run only in the browser.
    Effect::new(move |_| {
        let (c, n, p, k) = (cluster(), namespace(), pod(), container());
        if p.is_empty() || n.is_empty() {
            return;
        }
        if let Some(_el) = screen.get() {
            status.set(format!("Connecting to {p} in {n} on cluster {c}…"));
            #[cfg(feature = "hydrate")]
            {
                browser::close(socket);
                browser::start(_el, c, n, p, k, status, ended, socket);
            }
            #[cfg(not(feature = "hydrate"))]
            let _ = (c, k);
        }
    });
    view! {
        <Stylesheet id="xterm" href="/xterm/xterm.css"/>
        <main class="content terminal-page">
            <h1>"Terminal on " {cluster}</h1>
            <form method="get" class="terminal-target" data-testid="terminal-form">
                <label>"Namespace " <input name="namespace" prop:value=namespace required data-testid="terminal-namespace"/></label>
                <label>"Pod " <input name="pod" prop:value=pod required data-testid="terminal-pod"/></label>
                <label>"Container " <input name="container" prop:value=container placeholder="the pod's first" data-testid="terminal-container"/></label>
                <button type="submit" data-testid="terminal-open">"Open"</button>
            </form>
            <p class="terminal-status" class:ended=move || ended.get() role="status" data-testid="terminal-status">{move || status.get()}</p>
            <div class="terminal-screen" node_ref=screen data-testid="terminal"></div>
        </main>
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use leptos::prelude::*;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;

    #[wasm_bindgen(inline_js = "
export function create_terminal(el) {
  return Promise.all([import('/xterm/xterm.mjs'), import('/xterm/addon-fit.mjs')]).then(([x, f]) => {
    const term = new x.Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
    const fit = new f.FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    return [term, fit];
  });
}")]
    extern "C" {
        fn create_terminal(el: &web_sys::HtmlElement) -> js_sys::Promise;
    }

    #[wasm_bindgen]
    extern "C" {
        /// xterm.js's `Terminal`.
        pub type Terminal;
        #[wasm_bindgen(method)]
        fn write(this: &Terminal, data: &JsValue);
        #[wasm_bindgen(method, js_name = onData)]
        fn on_data(this: &Terminal, f: &Closure<dyn FnMut(String)>) -> JsValue;
        #[wasm_bindgen(method, js_name = onResize)]
        fn on_resize(this: &Terminal, f: &Closure<dyn FnMut(JsValue)>) -> JsValue;
        #[wasm_bindgen(method, getter)]
        fn cols(this: &Terminal) -> u32;
        #[wasm_bindgen(method, getter)]
        fn rows(this: &Terminal) -> u32;
        #[wasm_bindgen(method)]
        fn focus(this: &Terminal);

        /// `@xterm/addon-fit`'s `FitAddon`.
        pub type FitAddon;
        #[wasm_bindgen(method)]
        fn fit(this: &FitAddon);
    }

    fn enc(s: &str) -> String {
        js_sys::encode_uri_component(s).into()
    }

    fn resize_message(cols: u32, rows: u32) -> String {
        serde_json::json!({"type": "resize", "cols": cols, "rows": rows}).to_string()
    }

    pub type Socket = StoredValue<Option<web_sys::WebSocket>, leptos::prelude::LocalStorage>;

    /// Close the page's terminal socket, if one is open.
    pub fn close(socket: Socket) {
        if let Some(Some(ws)) = socket.try_update_value(|s| s.take()) {
            let _ = ws.close();
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn start(
        el: web_sys::HtmlDivElement,
        cluster: String,
        namespace: String,
        pod: String,
        container: String,
        status: RwSignal<String>,
        ended: RwSignal<bool>,
        socket: Socket,
    ) {
        leptos::task::spawn_local(async move {
            let el: web_sys::HtmlElement = el.unchecked_into();
            let pair = match wasm_bindgen_futures::JsFuture::from(create_terminal(&el)).await {
                Ok(p) => js_sys::Array::from(&p),
                Err(_) => {
                    status.set(
                        "The terminal could not load (xterm.js is missing from /xterm/).".into(),
                    );
                    ended.set(true);
                    return;
                }
            };
            let term: Terminal = pair.get(0).unchecked_into();
            let fit: FitAddon = pair.get(1).unchecked_into();
            let Some(window) = web_sys::window() else {
                return;
            };
            let loc = window.location();
            let scheme = if loc.protocol().as_deref() == Ok("https:") {
                "wss"
            } else {
                "ws"
            };
            let mut url = format!(
                "{scheme}://{}/api/v1/terminal/ws?cluster={}&namespace={}&pod={}",
                loc.host().unwrap_or_default(),
                enc(&cluster),
                enc(&namespace),
                enc(&pod)
            );
            if !container.is_empty() {
                url.push_str(&format!("&container={}", enc(&container)));
            }
            let ws = match web_sys::WebSocket::new_with_str(&url, "warden.terminal.v1") {
                Ok(ws) => ws,
                Err(_) => {
                    status.set("The terminal could not connect to Warden.".into());
                    ended.set(true);
                    return;
                }
            };
            ws.set_binary_type(web_sys::BinaryType::Arraybuffer);
            socket.set_value(Some(ws.clone()));
            let closed_with_reason = RwSignal::new(false);

            let on_message = {
                let term: Terminal = term.clone().unchecked_into();
                let ws = ws.clone();
                let cluster = cluster.clone();
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
                            let until = js_sys::Date::new(&JsValue::from_f64(
                                msg["expires_at"].as_f64().unwrap_or_default(),
                            ));
                            let until: String = until.to_locale_time_string("default").into();
                            status.set(format!(
                                "{} · {}/{} · as {} · ends by {until}",
                                cluster,
                                msg["namespace"].as_str().unwrap_or_default(),
                                msg["pod"].as_str().unwrap_or_default(),
                                msg["identity"].as_str().unwrap_or_default(),
                            ));
                            let _ = ws.send_with_str(&resize_message(term.cols(), term.rows()));
                            term.focus();
                        }
                        Some("exit") => {
                            let code = msg["code"].as_i64().unwrap_or_default();
                            closed_with_reason.set(true);
                            ended.set(true);
                            status.set(format!("Ended: exited (code {code})"));
                            term.write(&JsValue::from_str(&format!(
                                "\r\n\x1b[2m[exited (code {code})]\x1b[0m\r\n"
                            )));
                        }
                        Some("closed") => {
                            let reason = msg["reason"].as_str().unwrap_or("closed").to_owned();
                            closed_with_reason.set(true);
                            ended.set(true);
                            status.set(format!("Closed: {reason}"));
                            term.write(&JsValue::from_str(&format!(
                                "\r\n\x1b[31m[closed: {reason}]\x1b[0m\r\n"
                            )));
                        }
                        _ => {}
                    }
                })
            };
            ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
            on_message.forget();

            let on_close = Closure::<dyn FnMut(web_sys::CloseEvent)>::new(
                move |e: web_sys::CloseEvent| {
                    if !closed_with_reason.get_untracked() {
                        ended.set(true);
                        let reason = e.reason();
                        status.set(if reason.is_empty() {
                        "Closed: the connection to Warden ended (or was refused: check your access).".into()
                    } else {
                        format!("Closed: {reason}")
                    });
                    }
                },
            );
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
            let on_window_resize = Closure::<dyn FnMut()>::new(move || fit.fit());
            let _ = window.add_event_listener_with_callback(
                "resize",
                on_window_resize.as_ref().unchecked_ref(),
            );
            on_window_resize.forget();
        });
    }
}
