//! xterm.js in the browser, bound with wasm-bindgen (hydrate only).
//!
//! `@xterm/xterm` 6 and `@xterm/addon-fit` are ES modules that `./x` copies from
//! `node_modules` into `/xterm/` (no CDN, `script-src 'self'`); they are imported when a
//! terminal or the recording player first mounts, never on other pages. (The crate
//! `xterm-js-sys` is unmaintained and does not build with today's wasm-bindgen, so the few
//! calls used here are bound directly.)

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

#[wasm_bindgen(inline_js = "
export function create_terminal(el, readonly) {
  return Promise.all([import('/xterm/xterm.mjs'), import('/xterm/addon-fit.mjs')]).then(([x, f]) => {
    const term = new x.Terminal({ cursorBlink: !readonly, disableStdin: readonly, fontSize: 14, scrollback: 5000, convertEol: false });
    const fit = new f.FitAddon();
    term.loadAddon(fit);
    term.open(el);
    if (!readonly) { fit.fit(); }
    return [term, fit];
  });
}
export function fetch_text(url) {
  return fetch(url, { credentials: 'same-origin', headers: { accept: 'application/x-asciicast, application/json' } })
    .then(r => r.text().then(t => [r.status, t]));
}")]
extern "C" {
    fn create_terminal(el: &web_sys::HtmlElement, readonly: bool) -> js_sys::Promise;
    fn fetch_text(url: &str) -> js_sys::Promise;
}

#[wasm_bindgen]
extern "C" {
    /// xterm.js's `Terminal`.
    #[derive(Clone)]
    pub type Terminal;
    #[wasm_bindgen(method)]
    pub fn write(this: &Terminal, data: &JsValue);
    #[wasm_bindgen(method, js_name = onData)]
    pub fn on_data(this: &Terminal, f: &Closure<dyn FnMut(String)>) -> JsValue;
    #[wasm_bindgen(method, js_name = onResize)]
    pub fn on_resize(this: &Terminal, f: &Closure<dyn FnMut(JsValue)>) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn cols(this: &Terminal) -> u32;
    #[wasm_bindgen(method, getter)]
    pub fn rows(this: &Terminal) -> u32;
    #[wasm_bindgen(method)]
    pub fn focus(this: &Terminal);
    #[wasm_bindgen(method)]
    pub fn reset(this: &Terminal);
    #[wasm_bindgen(method)]
    pub fn resize(this: &Terminal, cols: u32, rows: u32);
    #[wasm_bindgen(method)]
    pub fn dispose(this: &Terminal);

    /// `@xterm/addon-fit`'s `FitAddon`.
    #[derive(Clone)]
    pub type FitAddon;
    #[wasm_bindgen(method)]
    pub fn fit(this: &FitAddon);
}

impl Terminal {
    pub fn write_str(&self, s: &str) {
        self.write(&JsValue::from_str(s));
    }
}

/// Load xterm.js (once per page) and open a terminal in `el`; `readonly` for playback.
pub async fn open(el: &web_sys::HtmlElement, readonly: bool) -> Result<(Terminal, FitAddon), ()> {
    let pair = wasm_bindgen_futures::JsFuture::from(create_terminal(el, readonly))
        .await
        .map_err(|_| ())?;
    let pair = js_sys::Array::from(&pair);
    Ok((pair.get(0).unchecked_into(), pair.get(1).unchecked_into()))
}

/// `GET url` with the session cookie: `(status, body)`; `None` when the request failed.
pub async fn get_text(url: &str) -> Option<(u16, String)> {
    let pair = wasm_bindgen_futures::JsFuture::from(fetch_text(url))
        .await
        .ok()?;
    let pair = js_sys::Array::from(&pair);
    let status = pair.get(0).as_f64()? as u16;
    Some((status, pair.get(1).as_string().unwrap_or_default()))
}
