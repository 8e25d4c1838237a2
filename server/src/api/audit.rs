//! `GET /api/v1/audit/events`, `/facets`, `/histogram` and `/export`: every one reads through
//! the same filter within the caller's scope.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use warden_domain::access::audit_view;
use warden_domain::audit::{event_detail, facets_at, histogram_at, search_in};
use warden_domain::dto::{
    AuditEventDetail, AuditEventDto, AuditFacets, AuditHistogram, AuditQuery, Page,
};

use super::auth::AuthUser;
use super::error::{ApiError, ApiQuery, ApiResult};
use crate::state::AppState;

pub async fn list_audit_events(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEventDto>>> {
    let scope = audit_view(&state.services.policy, &who)
        .await
        .map_err(|_| ApiError::forbidden())?;
    let svc = &state.services;
    let mut page = search_in(&svc.db, &q, &scope, svc.clock.now()).await?;
    warden_domain::recordings::mark_replayable(svc, &who, &mut page.items).await?;
    Ok(Json(page))
}

pub async fn get_audit_event(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<AuditEventDetail>> {
    let scope = audit_view(&state.services.policy, &who)
        .await
        .map_err(|_| ApiError::forbidden())?;
    let svc = &state.services;
    let mut detail = event_detail(&svc.db, &id, &scope, svc.clock.now()).await?;
    warden_domain::recordings::mark_detail(svc, &who, &mut detail).await?;
    Ok(Json(detail))
}

/// How often a live tail re-checks its viewer (sign-in and scope), besides at once when the
/// authorization epoch moves.
const TAIL_RECHECK: std::time::Duration = std::time::Duration::from_secs(3);

/// What woke the tail: something to read, or a reason to check the reader again.
enum Woken {
    Read,
    Recheck,
}
/// How far back a live tail resumes with `Last-Event-ID` (a reconnect after a blip, not a replay).
const TAIL_RESUME: std::time::Duration = std::time::Duration::from_secs(600);
/// A live tail reads at most this many events at a time (and again until it has caught up).
const TAIL_BATCH: u64 = 100;

pub async fn tail_audit_events(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    session: tower_sessions::Session,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    use crate::terminal::proof_holds;
    use axum::response::sse::{Event, KeepAlive, Sse};
    let scope_epoch = state.services.policy.epoch();
    let scope = audit_view(&state.services.policy, &who)
        .await
        .map_err(|_| ApiError::forbidden())?;
    // Refuse a bad filter now, with the envelope, rather than in the stream.
    warden_domain::audit::filter(
        sea_orm::ConnectionTrait::get_database_backend(&state.services.db),
        &q,
        &scope,
        state.services.clock.now(),
    )?;
    let proof = proof_of(&headers, &session).ok_or_else(ApiError::unauthenticated)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    // Woken by every commit of audit rows (`warden_domain::audit::committed`): subscribed
    // before the starting point is read, so nothing committed in between is missed.
    let mut committed = warden_domain::audit::committed();
    let mut last = match resume {
        // A reconnect picks up where it left off, but no further back than a few minutes: a
        // tail is not an export (that is audited, and streamed without holding a slot), so
        // `Last-Event-ID: 0` does not replay the whole log.
        Some(seq) => {
            let since = state.services.clock.now().millis() - TAIL_RESUME.as_millis() as i64;
            seq.max(warden_domain::audit::seq_before(&state.services.db, since).await?)
        }
        None => warden_domain::audit::latest_seq(&state.services.db).await?,
    };
    // Each tail re-reads the log on every audit write: a person has a few open at once.
    let Some(slot) = state
        .rate_limits
        .audit_tails
        .acquire(&who.user_id.to_string())
    else {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_tails",
            format!(
                "you (or everyone together) have the most live tails open at once ({} per person); close one first",
                crate::ratelimit::AUDIT_TAILS_PER_PERSON
            ),
        ));
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(64);
    let reread_every = state.config.audit.tail_reread;
    tokio::spawn(async move {
        let _slot = slot;
        let services = state.services.clone();
        let mut scope = scope;
        let mut scope_epoch = scope_epoch;
        let mut epochs = services.policy.subscribe();
        let mut recheck = tokio::time::interval(TAIL_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.tick().await;
        // A safety net: a read now and then even if no commit was heard of.
        let mut reread = tokio::time::interval(reread_every);
        reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let woken = tokio::select! {
                biased;
                _ = tx.closed() => return,
                _ = epochs.changed() => Woken::Recheck,
                _ = recheck.tick() => Woken::Recheck,
                changed = committed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    Woken::Read
                }
                _ = reread.tick() => Woken::Read,
            };
            // No read under a scope older than the last authorization change: a change heard
            // together with a commit is checked before that commit's events are read.
            let moved = services.policy.epoch() != scope_epoch;
            if matches!(woken, Woken::Recheck) || moved {
                scope_epoch = services.policy.epoch();
                let verdict = match proof_holds(&state, &proof).await {
                    Ok(_) => audit_view(&services.policy, &who)
                        .await
                        .map_err(|_| "you may no longer read the audit log".to_owned()),
                    Err(reason) => Err(reason),
                };
                match verdict {
                    Ok(s) => scope = s,
                    Err(reason) => {
                        let _ = tx.send(Event::default().event("end").data(reason)).await;
                        return;
                    }
                }
                // A re-check reads nothing: new events come with their commit.
                if matches!(woken, Woken::Recheck) {
                    continue;
                }
            }
            // Read until caught up.
            loop {
                let batch = warden_domain::audit::newer_than(
                    &services.db,
                    &q,
                    &scope,
                    last,
                    TAIL_BATCH,
                    services.clock.now(),
                )
                .await;
                let events = match batch {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(error = %e, "audit tail: reading new events failed");
                        break;
                    }
                };
                let full = events.len() as u64 >= TAIL_BATCH;
                for e in events {
                    last = last.max(e.seq);
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    let ev = Event::default()
                        .event("audit")
                        .id(e.seq.to_string())
                        .data(data);
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
        }
    });
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub async fn get_audit_facets(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditFacets>> {
    let scope = audit_view(&state.services.policy, &who)
        .await
        .map_err(|_| ApiError::forbidden())?;
    let now = state.services.clock.now();
    Ok(Json(facets_at(&state.services.db, &q, &scope, now).await?))
}

pub async fn get_audit_histogram(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditHistogram>> {
    let scope = audit_view(&state.services.policy, &who)
        .await
        .map_err(|_| ApiError::forbidden())?;
    let now = state.services.clock.now();
    Ok(Json(
        histogram_at(&state.services.db, &q, &scope, now).await?,
    ))
}

/// The export's parameters, as documented: the audit filter and `format`; `limit` is how many
/// of the newest events to send (without it: every matching event, streamed; no other cap). (The handler reads
/// `format` and the filter separately: the filter refuses unknown fields, and through a
/// `#[serde(flatten)]` query strings lose their numbers, so `limit=10` would be refused.)
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
pub struct ExportQueryDoc {
    /// `ndjson` (default) or `csv`.
    format: Option<String>,
    #[serde(flatten)]
    query: AuditQuery,
}

/// `format`, and the rest of the query string (the filter).
fn split_format(raw: Option<&str>) -> (Option<String>, String) {
    let mut format = None;
    let rest: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .filter_map(|(k, v)| {
            if k == "format" {
                format = Some(v.into_owned());
                None
            } else {
                Some((k.into_owned(), v.into_owned()))
            }
        })
        .collect();
    let rest = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(rest)
        .finish();
    (format, rest)
}

/// The credential a long-running read was opened with (an API key, else the console session),
/// so it can be asked again whether it still holds.
fn proof_of(
    headers: &axum::http::HeaderMap,
    session: &tower_sessions::Session,
) -> Option<crate::terminal::Proof> {
    use crate::terminal::Proof;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    match (bearer, session.id()) {
        (Some(token), _) => Some(Proof::ApiKey(token)),
        (None, Some(id)) => Some(Proof::Session(id)),
        (None, None) => None,
    }
}

/// How often a running export asks again whether its credential holds (a session's end or a
/// key's expiry moves no authorization epoch).
const EXPORT_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Streams the export: the filter is checked and the first page read before answering (so a
/// bad filter or a failing database answers with the error envelope), then the body is
/// written page by page (`warden_domain::audit::export`: keyset paging, one page in memory).
/// `limit` sends at most that many of the newest events; without it, every matching event.
pub async fn export_audit_events(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    session: tower_sessions::Session,
    headers: axum::http::HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    use warden_domain::audit::export::{Export, ExportFormat};
    let proof = proof_of(&headers, &session).ok_or_else(ApiError::unauthenticated)?;
    let (format, filter) = split_format(raw.as_deref());
    let query: AuditQuery = serde_urlencoded::from_str(&filter).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("bad query parameters: {e}"),
        )
    })?;
    // The epoch before the scope: a change after this point is seen by the export below.
    let scope_epoch = state.services.policy.epoch();
    let scope = audit_view(&state.services.policy, &who)
        .await
        .map_err(|_| ApiError::forbidden())?;
    let Some(format) = ExportFormat::parse(format.as_deref().unwrap_or("ndjson")) else {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "format must be csv or ndjson",
        );
        e.fields
            .insert("format".into(), "must be csv or ndjson".into());
        return Err(e);
    };
    // Held until the body is sent or dropped (it lives in the body's stream).
    let Some(slot) = state
        .rate_limits
        .audit_exports
        .acquire(&who.user_id.to_string())
    else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_exports",
            format!(
                "you (or everyone together) have the most audit exports running at once ({} per person); let one finish first",
                crate::ratelimit::AUDIT_EXPORTS_PER_PERSON
            ),
        ));
    };
    let db = state.services.db.clone();
    let mut export = Export::start(&db, &query, &scope, format, state.services.clock.now())?;
    let first = export.next_chunk(&db).await?;
    // A copy of the log leaving Warden is itself in the log (who, what filter, which format),
    // before the first row is sent (after the first page is read: newest first, the export never
    // holds its own event); an export that cannot be recorded is not made.
    let mut ev = warden_domain::audit::AuditEvent::by(
        &who,
        warden_domain::dto::AuditKind::Console,
        "audit.export",
        warden_domain::audit::Outcome::Allowed,
    );
    ev.details = serde_json::json!({
        "format": format.as_str(),
        "filter": filter,
    });
    state.services.audit.record(ev).await?;
    let services = state.services.clone();
    // The next pages are read (and encoded) while the previous ones are being sent: a task
    // keeps at most two ready, and stops when the client goes away (the receiver is dropped).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(2);
    if first.is_some() {
        tokio::spawn(async move {
            let mut seen_epoch = scope_epoch;
            let mut checked_at = tokio::time::Instant::now();
            loop {
                // An export of millions of rows runs for minutes: a reader who loses what
                // they began with (their audit.read removed, deactivated, the API key revoked,
                // the session ended) gets no more of it. The body is cut short, never quietly
                // ended.
                let epoch = services.policy.epoch();
                if epoch != seen_epoch || checked_at.elapsed() >= EXPORT_RECHECK {
                    seen_epoch = epoch;
                    checked_at = tokio::time::Instant::now();
                    let still = crate::terminal::proof_holds(&state, &proof).await.is_ok()
                        && audit_view(&services.policy, &who)
                            .await
                            .is_ok_and(|now| now.covers(&scope));
                    if !still {
                        tracing::info!(user = %who.email, "audit export cut: the reader's access changed");
                        let _ = tx
                            .send(Err(std::io::Error::other(
                                "audit export ended: your access changed",
                            )))
                            .await;
                        return;
                    }
                }
                let next = match export.next_chunk(&db).await {
                    Ok(Some(chunk)) => Ok(bytes::Bytes::from(chunk)),
                    Ok(None) => return,
                    Err(e) => {
                        // The answer has begun: cut it short (the client sees an incomplete
                        // body, never a silently shorter export).
                        tracing::error!(error = %e, "audit export: reading the next page failed");
                        Err(std::io::Error::other("audit export failed"))
                    }
                };
                let failed = next.is_err();
                if tx.send(next).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    let rest = futures::stream::unfold((rx, slot), |(mut rx, slot)| async move {
        rx.recv().await.map(|c| (c, (rx, slot)))
    });
    let body = futures::stream::iter(first.map(|c| Ok(bytes::Bytes::from(c)))).chain(rest);
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}
