//! The WASM entry point: hydrate the server-rendered page.
// The release profile (LTO, one codegen unit) instantiates the whole console's view types in
// this crate; their nesting exceeds the default query depth.
#![recursion_limit = "512"]

use leptos::prelude::document;

/// Hydrates the page (`hydrate_lazy`'s way: the page's area is a lazily loaded chunk, see
/// `app`'s `pages`), then marks `<body data-hydrated="true">` once the whole page, the lazy
/// route's view included, is live (end-to-end tests wait for it before they interact).
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    let Some(body) = document().body() else {
        return;
    };
    wasm_bindgen_futures::spawn_local(async move {
        leptos::mount::hydrate_from_async(body.clone(), app::App)
            .await
            .forget();
        let _ = body.set_attribute("data-hydrated", "true");
    });
}
