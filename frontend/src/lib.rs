//! The WASM entry point: hydrate the server-rendered page.
// The release profile (LTO, one codegen unit) instantiates the whole console's view types in
// this crate; their nesting exceeds the default query depth.
#![recursion_limit = "512"]

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
