//! Building blocks the console pages share: form results and errors, confirmation steps,
//! one-time secrets, permission checks for showing controls, and load-error states.
//!
//! Forms post to server functions. Before hydration the browser posts a plain form and the
//! server redirects back with the result in the query string (`ok=FORM`, or `form=FORM` and
//! `err.FIELD=message`); after hydration the result is the action's value. [`FormState`]
//! reads both, so a page renders errors next to their fields the same way in either case.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_router::hooks::{use_location, use_navigate, use_query_map};
use leptos_router::NavigateOptions;
use std::collections::BTreeMap;
use warden_domain::dto::Me;

use crate::error::AppError;

/// Query parameter naming the form the `err.*` parameters belong to.
pub const FORM_PARAM: &str = "form";
/// Query parameter naming the form that just succeeded.
pub const OK_PARAM: &str = "ok";
/// The signature of a plain form's errors in a page's address (see `ssr::sign_outcome`).
pub const SIG_PARAM: &str = "sig";
/// Prefix of the query parameters that give a plain form back what was typed into it when
/// it failed (`val.FIELD=value`; never secrets: see `ssr::settle`).
pub const TYPED_PREFIX: &str = "val.";

/// A form's errors: messages per field, and one for the whole form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FormErrors {
    pub fields: BTreeMap<String, String>,
    pub general: Option<String>,
}

impl FormErrors {
    pub fn from_app(e: &AppError) -> Self {
        match e {
            AppError::Invalid { fields } => Self {
                fields: fields.clone(),
                general: None,
            },
            AppError::Conflict {
                field: Some(f),
                message,
            } => Self {
                fields: BTreeMap::from([(f.clone(), message.clone())]),
                general: None,
            },
            other => Self {
                fields: BTreeMap::new(),
                general: Some(other.to_string()),
            },
        }
    }
}

/// The name of a server function as it appears in the query string.
fn endpoint_of<S: ServerFn>() -> &'static str {
    S::PATH.rsplit('/').next().unwrap_or_default()
}

/// The result of one form, after a plain post or from its action.
#[derive(Clone, Copy)]
pub struct FormState {
    errors: Signal<FormErrors>,
    /// What a failed plain form had typed, per field (empty after hydration's own posts).
    typed: Signal<BTreeMap<String, String>>,
    ok: Signal<bool>,
    pending: Signal<bool>,
    /// Prefix of element ids, unique per form on a page.
    pub prefix: &'static str,
}

/// Whether a form field may travel in an address (`val.FIELD` of a failed plain form): not a
/// secret by its name. Proxy URLs carry a password (`http://user:password@proxy:3128`):
/// Warden seals and masks them everywhere else, so they never go into an address (history,
/// access logs, same-origin referrers), and none is ever filled in from one (a link made by
/// someone else would aim a new cluster's agent at their proxy). A webhook URL is often its
/// own credential (a Slack-style hook): the same.
pub fn shareable_field(name: &str) -> bool {
    const SECRET: [&str; 9] = [
        "password", "secret", "token", "key", "code", "otp", "csrf", "proxy", "webhook",
    ];
    let name = name.to_ascii_lowercase();
    !SECRET.iter().any(|s| name.contains(s))
}

impl FormState {
    pub fn new<S>(action: ServerAction<S>, prefix: &'static str) -> Self
    where
        S: ServerFn<Error = AppError> + Clone + Send + Sync + 'static,
        S::Output: Send + Sync + 'static,
    {
        let endpoint = endpoint_of::<S>();
        let q = use_query_map();
        let value = action.value();
        let errors = Signal::derive(move || {
            let from_action = value.with(|v| match v {
                Some(Err(e)) => Some(FormErrors::from_app(e)),
                Some(Ok(_)) => Some(FormErrors::default()),
                None => None,
            });
            from_action.unwrap_or_else(|| {
                q.with(|q| {
                    if q.get_str(FORM_PARAM) != Some(endpoint) {
                        return FormErrors::default();
                    }
                    let mut e = FormErrors::default();
                    for (k, v) in q.latest_values() {
                        if let Some(field) = k.strip_prefix("err.") {
                            if field == "_" {
                                e.general = Some(v.to_owned());
                            } else {
                                e.fields.insert(field.to_owned(), v.to_owned());
                            }
                        }
                    }
                    e
                })
            })
        });
        let typed = Signal::derive(move || {
            q.with(|q| {
                if q.get_str(FORM_PARAM) != Some(endpoint) {
                    return BTreeMap::new();
                }
                q.latest_values()
                    .filter_map(|(k, v)| {
                        k.strip_prefix(TYPED_PREFIX)
                            .filter(|f| shareable_field(f))
                            .map(|f| (f.to_owned(), v.to_owned()))
                    })
                    .collect()
            })
        });
        let ok = Signal::derive(move || {
            value.with(|v| match v {
                Some(r) => r.is_ok(),
                None => q.with(|q| q.get_str(OK_PARAM) == Some(endpoint)),
            })
        });
        let pending = action.pending();
        Self {
            errors,
            typed,
            ok,
            pending: pending.into(),
            prefix,
        }
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.errors.with(|e| e.fields.get(name).cloned())
    }

    pub fn ok(&self) -> bool {
        self.ok.get()
    }

    /// Whether the form was refused for a second factor too old (step-up), after a plain post
    /// as after its action.
    pub fn asks_step_up(&self) -> bool {
        let text = AppError::StepUpRequired.to_string();
        self.errors
            .with(|e| e.general.as_deref() == Some(text.as_str()))
    }

    /// What was typed into `name` when this form last failed as a plain form.
    pub fn typed(&self, name: &str) -> Option<String> {
        self.typed.with_untracked(|t| t.get(name).cloned())
    }

    pub fn pending(&self) -> bool {
        self.pending.get()
    }

    /// The element id of a field's input.
    pub fn id(&self, field: &str) -> String {
        format!("{}-{}", self.prefix, field.replace('.', "-"))
    }

    /// The element id of a field's error message.
    pub fn err_id(&self, field: &str) -> String {
        format!("{}-error", self.id(field))
    }

    /// Messages for the whole form: the general one and those of fields the form does not show.
    fn unplaced(&self, shown: &[&str]) -> Vec<String> {
        self.errors.with(|e| {
            e.general
                .iter()
                .cloned()
                .chain(
                    e.fields
                        .iter()
                        .filter(|(k, _)| !shown.contains(&k.as_str()))
                        .map(|(_, v)| v.clone()),
                )
                .collect()
        })
    }
}

/// Run `f` (untracked) each time the action succeeds. Effects run only in the browser; a plain
/// post reloads the page instead.
pub fn on_success<S>(action: ServerAction<S>, f: impl Fn(&S::Output) + 'static)
where
    S: ServerFn<Error = AppError> + Clone + Send + Sync + 'static,
    S::Output: Send + Sync + 'static,
{
    let value = action.value();
    Effect::new(move |_| {
        value.with(|v| {
            if let Some(Ok(out)) = v {
                untrack(|| f(out));
            }
        })
    });
}

/// Clear a form after its action succeeded.
pub fn reset_on_success<S>(action: ServerAction<S>, form: NodeRef<leptos::html::Form>)
where
    S: ServerFn<Error = AppError> + Clone + Send + Sync + 'static,
    S::Output: Send + Sync + 'static,
{
    on_success(action, move |_| {
        if let Some(f) = form.get_untracked() {
            f.reset();
        }
    });
}

/// Close an open confirmation step (drop `confirm` and `target` from the URL) once the action
/// it confirms has succeeded.
pub fn close_confirm_on_success<S>(action: ServerAction<S>)
where
    S: ServerFn<Error = AppError> + Clone + Send + Sync + 'static,
    S::Output: Send + Sync + 'static,
{
    let location = use_location();
    let navigate = use_navigate();
    on_success(action, move |_| {
        let href = without_confirm(
            &location.pathname.get_untracked(),
            &location.search.get_untracked(),
        );
        navigate(
            &href,
            NavigateOptions {
                replace: true,
                scroll: false,
                ..Default::default()
            },
        );
    });
}

/// `path?search` without the confirmation and form-result parameters.
fn without_confirm(path: &str, search: &str) -> String {
    let kept: Vec<&str> = search
        .trim_start_matches('?')
        .split('&')
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or_default();
            !k.is_empty()
                && !k.starts_with("err.")
                && !k.starts_with(TYPED_PREFIX)
                && !matches!(k, "confirm" | "target" | FORM_PARAM | OK_PARAM | SIG_PARAM)
        })
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Percent-encode a query-string component (browser side).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The link that opens a confirmation step on the current page.
pub fn confirm_href(key: &str, target: Option<&str>) -> String {
    let location = use_location();
    let base = without_confirm(
        &location.pathname.get_untracked(),
        &location.search.get_untracked(),
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    match target {
        Some(t) => format!("{base}{sep}confirm={key}&target={}", encode(t)),
        None => format!("{base}{sep}confirm={key}"),
    }
}

/// Whether the confirmation step `key` (for `target`) is open.
pub fn confirm_open(key: &'static str, target: Option<String>) -> Signal<bool> {
    let q = use_query_map();
    Signal::derive(move || {
        q.with(|q| {
            q.get_str("confirm") == Some(key)
                && target
                    .as_deref()
                    .is_none_or(|t| q.get_str("target") == Some(t))
        })
    })
}

/// The target of the open confirmation step `key`, if any.
pub fn confirm_target(key: &'static str) -> Signal<Option<String>> {
    let q = use_query_map();
    Signal::derive(move || {
        q.with(|q| {
            (q.get_str("confirm") == Some(key))
                .then(|| q.get("target"))
                .flatten()
        })
    })
}

/// A confirmation step for a destructive action, opened by a link (see [`confirm_href`]) so it
/// works without JavaScript; the caller renders it while the step is open. `children` says
/// what will be affected and holds the form that acts.
#[component]
pub fn ConfirmPanel(#[prop(into)] title: String, children: Children) -> impl IntoView {
    let location = use_location();
    let cancel = move || without_confirm(&location.pathname.get(), &location.search.get());
    let heading = NodeRef::<leptos::html::H2>::new();
    // Move focus to the step when it opens, so keyboard and screen-reader users land on it.
    Effect::new(move |_| {
        if let Some(h) = heading.get() {
            let _ = h.focus();
        }
    });
    view! {
        <section class="confirm" role="alertdialog" aria-labelledby="confirm-title" data-testid="confirm">
            <h2 id="confirm-title" tabindex="-1" node_ref=heading>{title}</h2>
            {children()}
            <p><a class="btn" href=cancel data-testid="confirm-cancel">"Cancel"</a></p>
        </section>
    }
}

/// A field's error message, linked from its input by `aria-describedby`.
#[component]
pub fn FieldError(state: FormState, field: &'static str) -> impl IntoView {
    let id = state.err_id(field);
    view! {
        {move || state.field(field).map(|m| view! {
            <p class="field-error" id=id.clone() role="alert">{m}</p>
        })}
    }
}

/// The form's own messages: success, and errors that belong to no shown field.
#[component]
pub fn FormAlert(
    state: FormState,
    /// Fields the form shows next to their inputs.
    #[prop(optional)]
    fields: &'static [&'static str],
    /// Shown after success.
    #[prop(optional)]
    ok: Option<&'static str>,
) -> impl IntoView {
    view! {
        {move || {
            let msgs = state.unplaced(fields);
            (!msgs.is_empty()).then(|| view! {
                <div class="form-error" role="alert" data-testid=format!("{}-error", state.prefix)>
                    {msgs.into_iter().map(|m| view! { <p>{m}</p> }).collect_view()}
                </div>
            })
        }}
        // Refused for a stale second factor: where to give a fresh one (pages that show the
        // step-up form beside theirs have it at hand too).
        {move || state.asks_step_up().then(|| view! {
            <p class="muted" data-testid=format!("{}-step-up", state.prefix)>
                <a href="/me/mfa">"Confirm it is you"</a>
                " (a code from your authenticator app), then try again."
            </p>
        })}
        {move || (ok.is_some() && state.ok()).then(|| view! {
            <p class="notice" role="status">{ok.unwrap_or_default()}</p>
        })}
    }
}

/// A labelled input with its error.
#[component]
pub fn Field(
    state: FormState,
    /// The input's name (the server function's argument).
    name: &'static str,
    /// The error field it reports (defaults to `name`).
    #[prop(optional)]
    field: Option<&'static str>,
    label: &'static str,
    #[prop(optional, into)] value: Option<String>,
    #[prop(default = "text")] kind: &'static str,
    #[prop(optional)] required: bool,
    #[prop(optional, into)] hint: Option<String>,
    #[prop(optional)] autocomplete: Option<&'static str>,
    #[prop(optional)] list: Option<&'static str>,
    #[prop(optional)] placeholder: Option<&'static str>,
    #[prop(optional)] min: Option<&'static str>,
    #[prop(optional)] max: Option<&'static str>,
    /// The browser's check (the server checks again).
    #[prop(optional)]
    pattern: Option<&'static str>,
    #[prop(optional)] maxlength: Option<u32>,
    #[prop(optional, into)] disabled: Signal<bool>,
) -> impl IntoView {
    let field = field.unwrap_or(name);
    let id = state.id(name);
    let hint_id = format!("{id}-hint");
    // A failed plain form shows what was typed (never into a password field).
    let value = value.or_else(|| (kind != "password").then(|| state.typed(name)).flatten());
    let described = match &hint {
        Some(_) => format!("{hint_id} {}", state.err_id(field)),
        None => state.err_id(field),
    };
    view! {
        <label for=id.clone()>{label}</label>
        <input
            id=id
            name=name
            type=kind
            value=value
            required=required
            autocomplete=autocomplete
            list=list
            placeholder=placeholder
            min=min
            max=max
            pattern=pattern
            maxlength=maxlength
            disabled=move || disabled.get()
            aria-invalid=move || state.field(field).is_some().to_string()
            aria-describedby=described
        />
        {hint.map(|h| view! { <p class="hint" id=hint_id>{h}</p> })}
        <FieldError state field/>
    }
}

/// A submit button that says when its form is being sent.
#[component]
pub fn Submit(
    state: FormState,
    label: &'static str,
    #[prop(default = "btn btn-primary")] class: &'static str,
    #[prop(optional)] testid: Option<&'static str>,
) -> impl IntoView {
    view! {
        <button type="submit" class=class data-testid=testid aria-busy=move || state.pending().to_string()>
            {label}
        </button>
    }
}

/// What a page shows when its data could not be loaded.
#[component]
pub fn LoadError(err: AppError) -> impl IntoView {
    #[cfg(feature = "ssr")]
    crate::ssr::page_status(&err);
    match err {
        AppError::Forbidden => view! {
            <section class="card forbidden" role="alert" data-testid="forbidden">
                <h1>"Not allowed"</h1>
                <p>"You do not have permission to see this page. If you need it, ask an organization administrator."</p>
                <p><a href="/">"Back to the overview"</a></p>
            </section>
        }
        .into_any(),
        AppError::NotFound(what) => view! {
            <section class="card" role="alert" data-testid="not-found">
                <h1>{format!("{} not found", capitalize(&what))}</h1>
                <p>"It may have been deleted or renamed."</p>
                <p><a href="/">"Back to the overview"</a></p>
            </section>
        }
        .into_any(),
        AppError::Unauthenticated => view! {
            <p class="form-error" role="alert">"Your session has ended. " <a href="/login">"Sign in again"</a></p>
        }
        .into_any(),
        AppError::PasswordChangeRequired => view! {
            <p class="form-error" role="alert">"You must " <a href="/change-password">"change your password"</a> " first."</p>
        }
        .into_any(),
        other => view! { <p class="form-error" role="alert">{other.to_string()}</p> }.into_any(),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A one-time secret, shown once with a copy button.
#[component]
pub fn OneTimeSecret(
    #[prop(into)] title: String,
    #[prop(into)] value: String,
    #[prop(into)] note: String,
    testid: &'static str,
) -> impl IntoView {
    let input_id = format!("{testid}-value");
    view! {
        <section class="secret" role="status" aria-labelledby=format!("{testid}-title") data-testid=testid>
            <h2 id=format!("{testid}-title")>{title}</h2>
            <p>{note}</p>
            <div class="secret-row">
                <label class="visually-hidden" for=input_id.clone()>"Secret"</label>
                <input id=input_id class="mono" type="text" readonly value=value.clone()/>
                <CopyButton value/>
            </div>
        </section>
    }
}

/// A button that copies `value` to the clipboard (after hydration; it needs JavaScript).
#[component]
pub fn CopyButton(
    #[prop(into)] value: String,
    #[prop(optional)] testid: Option<&'static str>,
) -> impl IntoView {
    let (copied, set_copied) = signal(false);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        {
            let _ = window().navigator().clipboard().write_text(&value);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = &value;
        set_copied.set(true);
    };
    view! { <button type="button" class="btn" data-testid=testid on:click=copy>{move || if copied.get() { "Copied" } else { "Copy" }}</button> }
}

/// A command (or a few lines of them) to copy into a shell: a code box that scrolls sideways
/// instead of widening the page, with a copy button.
#[component]
pub fn CommandBox(
    #[prop(into)] command: String,
    #[prop(optional)] testid: Option<&'static str>,
) -> impl IntoView {
    view! {
        <div class="codebox">
            <pre class="mono" data-testid=testid tabindex="0">{command.clone()}</pre>
            <CopyButton value=command/>
        </div>
    }
}

/// Whether the signed-in user holds `permission` across the organization.
pub fn can(me: &Me, permission: &str) -> bool {
    me.has_org(permission)
}

/// Whether the signed-in user holds `permission` on `project` (directly or organization-wide).
pub fn can_in(me: &Me, permission: &str, project: &str) -> bool {
    me.has_org(permission)
        || me.grants.iter().any(|g| {
            g.scope == warden_domain::dto::Scope::Project
                && g.project.as_deref() == Some(project)
                && g.permissions.iter().any(|p| p == permission)
        })
}

/// `2026-01-31T10:22:05Z` as `2026-01-31 10:22`.
pub fn short_time(rfc3339: &str) -> String {
    rfc3339.get(..16).unwrap_or(rfc3339).replacen('T', " ", 1)
}

/// Namespaces as chips.
#[component]
pub fn Chips(items: Vec<String>, #[prop(optional)] label: Option<&'static str>) -> impl IntoView {
    view! {
        <ul class="chips" aria-label=label>
            {items.into_iter().map(|n| view! { <li class="chip">{n}</li> }).collect_view()}
        </ul>
    }
}

/// Take the one-time secret of this kind a plain form left in the session (see
/// [`crate::ssr::flash_for_plain_form`]); `None` when there is none.
#[server(prefix = "/sfn", endpoint = "take_flash")]
pub async fn take_flash(kind: String) -> Result<Option<String>, AppError> {
    crate::ssr::take_flash(&kind).await
}

/// Counts the action's successes: a resource keyed on it refetches after each success (and not
/// after a failure, so a form showing an error keeps what the person typed).
pub fn success_count<S>(action: ServerAction<S>) -> ReadSignal<usize>
where
    S: ServerFn<Error = AppError> + Clone + Send + Sync + 'static,
    S::Output: Send + Sync + 'static,
{
    let (n, set_n) = signal(0usize);
    on_success(action, move |_| set_n.update(|n| *n += 1));
    n
}

/// The signed-in user from the layout's resource, if signed in.
pub fn me_of(r: Result<Option<Me>, AppError>) -> Option<Me> {
    r.ok().flatten()
}

/// The loading placeholder.
#[component]
pub fn Loading() -> impl IntoView {
    view! { <p class="muted" aria-busy="true">"Loading…"</p> }
}

/// Milliseconds since the Unix epoch of a UTC RFC 3339 time as Warden writes them
/// (`2026-01-31T10:22:05Z`, optionally with a fraction of a second).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let ms = format!("{frac:0<3}").get(..3)?.parse::<i64>().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms)
}

/// Now, in milliseconds since the Unix epoch (the browser's clock once hydrated).
pub fn now_ms() -> i64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now() as i64
    }
    #[cfg(not(feature = "hydrate"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod jit_time_tests {
    #[test]
    fn parses_warden_times() {
        assert_eq!(super::parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            super::parse_rfc3339_ms("2026-12-01T10:00:00.5Z"),
            Some(1_796_119_200_500)
        );
        assert_eq!(super::parse_rfc3339_ms("nonsense"), None);
    }
}

/// The links under a list that pages with a cursor: back to the first page (when on a later
/// one) and to the next (when the list said there is one). `base` is the page's path;
/// `current` its query, whose other parameters (the filters) the links keep.
#[component]
pub fn Pager(
    base: &'static str,
    current: leptos_router::params::ParamsMap,
    next: Option<String>,
) -> impl IntoView {
    let link = |cursor: Option<String>| {
        let mut p = current.clone();
        match cursor {
            Some(c) => {
                p.replace("cursor", c);
            }
            None => {
                p.remove("cursor");
            }
        }
        format!("{base}{}", p.to_query_string())
    };
    let first_href = current
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(|_| link(None));
    let next_href = next.map(|n| link(Some(n)));
    view! {
        <nav class="pager" aria-label="Pages">
            <span>{first_href.map(|h| view! { <a href=h>"← First page"</a> })}</span>
            <span>{next_href.map(|h| view! { <a href=h data-testid="next-page">"Next page →"</a> })}</span>
        </nav>
    }
}
