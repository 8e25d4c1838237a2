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
use leptos_router::Lazy;
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
/// (the hydration bootstrap); they connect only to their own origin (`'self'` covers its
/// `ws:`/`wss:` too: the terminal's and live tail's sockets), never to another host.
#[cfg(feature = "ssr")]
fn set_page_csp() {
    if let (Some(nonce), Some(res)) = (
        leptos::nonce::use_nonce(),
        use_context::<leptos_axum::ResponseOptions>(),
    ) {
        let csp = format!(
            "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; object-src 'none'; \
             base-uri 'self'; form-action 'self'"
        );
        if let Ok(v) = http::HeaderValue::from_str(&csp) {
            res.insert_header(http::header::CONTENT_SECURITY_POLICY, v);
        }
    }
}

/// The console's WASM bundle is split by area (`#[lazy]`): the main module holds the router,
/// the layout and the reactive runtime, and the browser loads an area's code (its pages, their
/// server functions' client halves, forms and DTO decoders) when it first shows one of its
/// pages. `x`'s `build_site` splits the bundle at these points (`xtask split-wasm`), and a console
/// page rendered on the server links its area's chunks as preloads. Areas rather than pages: a split
/// point per page made 650 chunks, 30 to 400 of them for a page.
mod pages {
    use leptos::prelude::*;
    use leptos_router::LazyRoute;

    /// An area: an enum of its pages, a module with its lazy function `view` (a split point:
    /// the area's code is loaded when it is first called or preloaded) and a lazy route per
    /// page. The router preloads a lazy route's code before it renders or hydrates it
    /// (`preload`): hydration must find the page's view ready, not a pending load.
    macro_rules! area {
        ($(#[$doc:meta])* $area:ident($Area:ident) { $($page:ident => $component:path,)* }) => {
            #[derive(Clone, Copy)]
            pub enum $Area {
                $($page,)*
            }

            $(#[$doc])*
            mod $area {
                use leptos::prelude::*;

                // Named after the area: the split point's name in the bundle and its manifest.
                #[lazy($area)]
                pub fn view(page: super::$Area) -> AnyView {
                    untrack(|| match page {
                        $(super::$Area::$page => $component().into_any(),)*
                    })
                }
            }

            $(
                pub struct $page;

                impl LazyRoute for $page {
                    fn data() -> Self {
                        $page
                    }

                    async fn view(_this: Self) -> AnyView {
                        $area::view($Area::$page).await
                    }

                    async fn preload() {
                        #[cfg(feature = "hydrate")]
                        $area::__preload_view().await;
                    }
                }
            )*
        };
    }

    area! {
        /// The pages of signing in.
        sign_in(SignIn) {
            LoginPage => crate::auth::LoginPage,
            LoginMfaPage => crate::mfa::LoginMfaPage,
            ChangePasswordPage => crate::auth::ChangePasswordPage,
            SetPasswordPage => crate::auth::SetPasswordPage,
        }
    }

    area! {
        /// The pages of the overview.
        overview(Overview) {
            HomePage => crate::home::HomePage,
        }
    }

    area! {
        /// The pages of clusters and projects.
        clusters(Clusters) {
            ClustersPage => crate::clusters::ClustersPage,
            ImportClusterPage => crate::clusters::ImportClusterPage,
            ClusterPage => crate::clusters::ClusterPage,
            ConnectClusterPage => crate::clusters::ConnectClusterPage,
            ProjectsPage => crate::projects::ProjectsPage,
            ProjectPage => crate::projects::ProjectPage,
        }
    }

    area! {
        /// The pages of the web terminal (with xterm.js' bindings).
        terminal(Terminal) {
            TerminalPage => crate::terminal::TerminalPage,
        }
    }

    area! {
        /// The pages of people, roles and the organization.
        people(People) {
            UsersPage => crate::users::UsersPage,
            CreateUserPage => crate::users::CreateUserPage,
            UserPage => crate::users::UserPage,
            GroupsPage => crate::groups::GroupsPage,
            GroupPage => crate::groups::GroupPage,
            RolesPage => crate::roles::RolesPage,
            NewRolePage => crate::roles::NewRolePage,
            RolePage => crate::roles::RolePage,
            SettingsPage => crate::settings::SettingsPage,
            IdentityProvidersPage => crate::identity_providers::IdentityProvidersPage,
        }
    }

    area! {
        /// The pages of the audit log, recordings and sessions.
        audit(Audit) {
            AuditPage => crate::audit::AuditPage,
            AuditEventPage => crate::audit::AuditEventPage,
            RecordingPage => crate::recordings::RecordingPage,
            SessionsPage => crate::sessions::SessionsPage,
        }
    }

    area! {
        /// A user's own pages: API keys, kubectl tools, two-factor sign-in, access requests.
        me(Me) {
            ApiKeysPage => crate::apikeys::ApiKeysPage,
            MyToolsPage => crate::kubectl::MyToolsPage,
            MyMfaPage => crate::mfa::MyMfaPage,
            AccessRequestsPage => crate::access_requests::AccessRequestsPage,
        }
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Title text="Warden"/>
        <Router>
            <Routes fallback=|| {
                #[cfg(feature = "ssr")]
                crate::ssr::page_status(&crate::error::AppError::NotFound("page".into()));
                view! { <main class="content"><h1>"Not found"</h1><p><a href="/">"Back to the console"</a></p></main> }
            }>
                <Route path=path!("/login") view={Lazy::<pages::LoginPage>::new()}/>
                <Route path=path!("/login/mfa") view={Lazy::<pages::LoginMfaPage>::new()}/>
                <Route path=path!("/change-password") view={Lazy::<pages::ChangePasswordPage>::new()}/>
                <Route path=path!("/set-password") view={Lazy::<pages::SetPasswordPage>::new()}/>
                <ParentRoute path=path!("") view=layout::ConsoleLayout>
                    <Route path=path!("") view={Lazy::<pages::HomePage>::new()}/>
                    <Route path=path!("/projects") view={Lazy::<pages::ProjectsPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/clusters") view={Lazy::<pages::ClustersPage>::new()}/>
                    <Route path=path!("/clusters/new") view={Lazy::<pages::ImportClusterPage>::new()}/>
                    <Route path=path!("/clusters/:name") view={Lazy::<pages::ClusterPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/clusters/:name/connect") view={Lazy::<pages::ConnectClusterPage>::new()}/>
                    <Route path=path!("/clusters/:name/terminal") view={Lazy::<pages::TerminalPage>::new()}/>
                    <Route path=path!("/projects/:name") view={Lazy::<pages::ProjectPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/users") view={Lazy::<pages::UsersPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/users/new") view={Lazy::<pages::CreateUserPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/users/:id") view={Lazy::<pages::UserPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/groups") view={Lazy::<pages::GroupsPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/groups/:id") view={Lazy::<pages::GroupPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/roles") view={Lazy::<pages::RolesPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/roles/new") view={Lazy::<pages::NewRolePage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/roles/:name") view={Lazy::<pages::RolePage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/settings") view={Lazy::<pages::SettingsPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/identity-providers") view={Lazy::<pages::IdentityProvidersPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/audit") view={Lazy::<pages::AuditPage>::new()} ssr=SsrMode::InOrder/>
                    <Route path=path!("/audit/recordings/:id") view={Lazy::<pages::RecordingPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/audit/:id") view={Lazy::<pages::AuditEventPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/access") view={Lazy::<pages::AccessRequestsPage>::new()}/>
                    <Route path=path!("/me/api-keys") view={Lazy::<pages::ApiKeysPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/me/tools") view={Lazy::<pages::MyToolsPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/me/mfa") view={Lazy::<pages::MyMfaPage>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/sessions") view={Lazy::<pages::SessionsPage>::new()} ssr=SsrMode::Async/>
                </ParentRoute>
            </Routes>
        </Router>
    }
}
