//! The console shell: top bar with navigation and the user menu.

use leptos::prelude::*;
use leptos_router::components::{Outlet, A};
use warden_domain::dto::Me;

use crate::auth::{get_me, Logout};
use crate::error::AppError;

/// The signed-in user, for pages inside the console shell.
pub type MeResource = Resource<Result<Option<Me>, AppError>>;

/// Without JavaScript the menu button cannot open the navigation: show the links instead.
/// (Not a literal in the view: the macro would write a literal `inner_html` as an attribute.)
const NO_SCRIPT_NAV: &str =
    "<style>.topbar .nav-toggle { display: none } .topbar .mainnav { display: flex; flex-direction: row }</style>";

#[component]
pub fn ConsoleLayout() -> impl IntoView {
    let me: MeResource = Resource::new(|| (), |_| get_me());
    provide_context(me);
    // The access-request inbox's badge (created here, beside `me`, so that server and browser
    // resolve the two in the same order).
    let inbox = Resource::new(|| (), |_| crate::access_requests::get_access_inbox());
    crate::terminal::provide_drawer();
    // On a small screen the navigation folds behind a menu button. Without JavaScript the
    // button cannot work, so the `noscript` rules hide it and show the links, wrapped.
    let (nav_open, set_nav_open) = signal(false);
    view! {
        <a class="skip-link" href="#main">"Skip to content"</a>
        <header class="topbar">
            <a class="brand" href="/">"Warden"</a>
            <button
                type="button"
                class="btn btn-ghost nav-toggle"
                data-testid="nav-toggle"
                aria-expanded=move || nav_open.get().to_string()
                aria-controls="main-nav"
                on:click=move |_| set_nav_open.update(|o| *o = !*o)
            >
                <span aria-hidden="true">"☰ "</span>"Menu"
            </button>
            // As markup, not elements: a browser running scripts keeps a `noscript`'s inner
            // HTML as text, also when the router renders this shell after a navigation.
            <noscript inner_html=NO_SCRIPT_NAV></noscript>
            // A click on a link (or anywhere in the open menu) folds it again; so does Escape.
            <nav
                id="main-nav"
                class="mainnav"
                class:open=move || nav_open.get()
                aria-label="Main"
                on:click=move |_| set_nav_open.set(false)
                on:keydown=move |ev| {
                    if ev.key() == "Escape" {
                        set_nav_open.set(false);
                    }
                }
            >
                <A href="/" exact=true>"Overview"</A>
                <Suspense fallback=|| ()>
                    {move || me.get().and_then(|r| r.ok()).flatten().map(|m| view! { <NavLinks me=m/> })}
                </Suspense>
                <Suspense fallback=|| ()>
                    {move || inbox.get().and_then(|r| r.ok()).map(|i| view! { <crate::access_requests::AccessNavLink inbox=i/> })}
                </Suspense>
            </nav>
            <Suspense fallback=|| ()>
                {move || me.get().and_then(|r| r.ok()).flatten().map(|m| view! { <UserMenu me=m/> })}
            </Suspense>
        </header>
        <main id="main" class="content">
            <Outlet/>
        </main>
        <crate::terminal::TerminalDrawer/>
    }
}

/// Links to the pages the user may use. Hiding a link is a courtesy: every page's server
/// functions ask the gate.
#[component]
fn NavLinks(me: Me) -> impl IntoView {
    let projects = !me.projects.is_empty() || me.has_org("project.create");
    let audit = me.has_org("audit.read")
        || me.grants.iter().any(|g| {
            g.scope == warden_domain::dto::Scope::Project
                && g.permissions.iter().any(|p| p == "audit.read")
        });
    view! {
        {projects.then(|| view! { <A href="/projects">"Projects"</A> })}
        {projects.then(|| view! { <A href="/clusters">"Clusters"</A> })}
        {me.has_org("user.read").then(|| view! { <A href="/users">"Users"</A> })}
        {me.has_org("group.read").then(|| view! { <A href="/groups">"Groups"</A> })}
        {me.has_org("role.read").then(|| view! { <A href="/roles">"Roles"</A> })}
        {me.has_org("settings.read").then(|| view! { <A href="/settings">"Settings"</A> })}
        {me.has_org("idp.read").then(|| view! { <A href="/identity-providers">"Sign-in providers"</A> })}
        {audit.then(|| view! { <A href="/audit">"Audit log"</A> })}
    }
}

#[component]
fn UserMenu(me: Me) -> impl IntoView {
    let (open, set_open) = signal(false);
    let logout = ServerAction::<Logout>::new();
    view! {
        <div class="usermenu">
            <button
                type="button"
                class="btn btn-ghost"
                data-testid="user-menu"
                aria-haspopup="true"
                aria-expanded=move || open.get().to_string()
                aria-controls="user-menu-items"
                on:click=move |_| set_open.update(|o| *o = !*o)
            >
                {me.user.name.clone()} " ▾"
            </button>
            <div id="user-menu-items" class="menu" class:open=move || open.get() role="menu">
                <p class="menu-id">{me.user.email.clone()}</p>
                <a role="menuitem" href=format!("/audit?actor={}", crate::ui::encode(&me.user.id)) data-testid="my-activity">"My activity"</a>
                <a role="menuitem" href="/me/tools">"My tools (kubeconfig)"</a>
                <a role="menuitem" href="/me/mfa">"Two-factor authentication"</a>
                <a role="menuitem" href="/sessions">"Live sessions"</a>
                <a role="menuitem" href="/me/api-keys">"API keys"</a>
                <a role="menuitem" href="/change-password">"Change password"</a>
                <ActionForm action=logout>
                    <button type="submit" role="menuitem" class="linklike" data-testid="sign-out">"Sign out"</button>
                </ActionForm>
            </div>
            // Without JavaScript the menu cannot open: keep sign-out reachable.
            <noscript>
                <form method="post" action="/sfn/logout"><button type="submit" class="linklike">"Sign out"</button></form>
            </noscript>
        </div>
    }
}
