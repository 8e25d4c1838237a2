//! Warden's console: Leptos pages and server functions. Server-only code sits behind the
//! `ssr` feature; the same crate compiles to WASM for hydration.
#![recursion_limit = "512"]

pub mod access_requests;
pub mod apikeys;
pub mod audit;
pub mod auth;
pub mod bindings;
pub mod clusters;
pub mod error;
pub mod groups;
pub mod home;
pub mod identity_providers;
pub mod kubectl;
pub mod layout;
pub mod mfa;
pub mod pods;
pub mod projects;
pub mod recordings;
pub mod roles;
pub mod sessions;
pub mod settings;
#[cfg(feature = "ssr")]
pub mod ssr;
pub mod terminal;
pub mod ui;
pub mod users;
#[cfg(feature = "hydrate")]
pub mod xterm;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Title};
use leptos_router::components::{ParentRoute, Route, Router, Routes};
use leptos_router::{path, SsrMode};

pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    set_page_csp();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href="/favicon.ico"/>
                // The bundle's address carries its version (see the server's `asset_version`).
                <link rel="stylesheet" id="leptos" href=format!("/{}/warden.css", options.site_pkg_dir)/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// Console pages allow only our own scripts, and inline scripts carrying this response's nonce
/// (the hydration bootstrap).
#[cfg(feature = "ssr")]
fn set_page_csp() {
    if let (Some(nonce), Some(res)) = (
        leptos::nonce::use_nonce(),
        use_context::<leptos_axum::ResponseOptions>(),
    ) {
        let csp = format!(
            "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; object-src 'none'; \
             base-uri 'self'; form-action 'self'"
        );
        if let Ok(v) = http::HeaderValue::from_str(&csp) {
            res.insert_header(http::header::CONTENT_SECURITY_POLICY, v);
        }
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Effects run only in the browser: mark the page once the WASM bundle has hydrated it
    // (end-to-end tests wait for this before they interact).
    Effect::new(|_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });
    view! {
        <Title text="Warden"/>
        <Router>
            <Routes fallback=|| {
                #[cfg(feature = "ssr")]
                crate::ssr::page_status(&crate::error::AppError::NotFound("page".into()));
                view! { <main class="content"><h1>"Not found"</h1><p><a href="/">"Back to the console"</a></p></main> }
            }>
                <Route path=path!("/login") view=auth::LoginPage/>
                <Route path=path!("/login/mfa") view=mfa::LoginMfaPage/>
                <Route path=path!("/change-password") view=auth::ChangePasswordPage/>
                <Route path=path!("/set-password") view=auth::SetPasswordPage/>
                <ParentRoute path=path!("") view=layout::ConsoleLayout>
                    <Route path=path!("") view=home::HomePage/>
                    <Route path=path!("/projects") view=projects::ProjectsPage ssr=SsrMode::Async/>
                    <Route path=path!("/clusters") view=clusters::ClustersPage/>
                    <Route path=path!("/clusters/new") view=clusters::ImportClusterPage/>
                    <Route path=path!("/clusters/:name") view=clusters::ClusterPage ssr=SsrMode::Async/>
                    <Route path=path!("/clusters/:name/connect") view=clusters::ConnectClusterPage/>
                    <Route path=path!("/clusters/:name/terminal") view=terminal::TerminalPage/>
                    <Route path=path!("/projects/:name") view=projects::ProjectPage ssr=SsrMode::Async/>
                    <Route path=path!("/users") view=users::UsersPage ssr=SsrMode::Async/>
                    <Route path=path!("/users/new") view=users::CreateUserPage ssr=SsrMode::Async/>
                    <Route path=path!("/users/:id") view=users::UserPage ssr=SsrMode::Async/>
                    <Route path=path!("/groups") view=groups::GroupsPage ssr=SsrMode::Async/>
                    <Route path=path!("/groups/:id") view=groups::GroupPage ssr=SsrMode::Async/>
                    <Route path=path!("/roles") view=roles::RolesPage ssr=SsrMode::Async/>
                    <Route path=path!("/roles/new") view=roles::NewRolePage ssr=SsrMode::Async/>
                    <Route path=path!("/roles/:name") view=roles::RolePage ssr=SsrMode::Async/>
                    <Route path=path!("/settings") view=settings::SettingsPage ssr=SsrMode::Async/>
                    <Route path=path!("/identity-providers") view=identity_providers::IdentityProvidersPage ssr=SsrMode::Async/>
                    <Route path=path!("/audit") view=audit::AuditPage ssr=SsrMode::Async/>
                    <Route path=path!("/audit/recordings/:id") view=recordings::RecordingPage ssr=SsrMode::Async/>
                    <Route path=path!("/audit/:id") view=audit::AuditEventPage ssr=SsrMode::Async/>
                    <Route path=path!("/access") view=access_requests::AccessRequestsPage/>
                    <Route path=path!("/me/api-keys") view=apikeys::ApiKeysPage ssr=SsrMode::Async/>
                    <Route path=path!("/me/tools") view=kubectl::MyToolsPage ssr=SsrMode::Async/>
                    <Route path=path!("/me/mfa") view=mfa::MyMfaPage ssr=SsrMode::Async/>
                    <Route path=path!("/sessions") view=sessions::SessionsPage ssr=SsrMode::Async/>
                </ParentRoute>
            </Routes>
        </Router>
    }
}
