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
    Ok(Json(
        search_in(&state.services.db, &q, &scope, state.services.clock.now()).await?,
    ))
}

pub async fn get_audit_event(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<AuditEventDetail>> {
    let scope = audit_view(&state.services.policy, &who)
        .await
        .map_err(|_| ApiError::forbidden())?;
    let now = state.services.clock.now();
    Ok(Json(
        event_detail(&state.services.db, &id, &scope, now).await?,
    ))
}

/// How often a live tail re-checks its viewer (sign-in and scope), besides at once when the
/// authorization epoch moves.
const TAIL_RECHECK: std::time::Duration = std::time::Duration::from_secs(3);
/// A live tail reads at most this many events at a time (and again until it has caught up).
const TAIL_BATCH: u64 = 100;

pub async fn tail_audit_events(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    session: tower_sessions::Session,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    use crate::terminal::{proof_holds, Proof};
    use axum::response::sse::{Event, KeepAlive, Sse};
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
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let proof = match (bearer, session.id()) {
        (Some(token), _) => Proof::ApiKey(token),
        (None, Some(id)) => Proof::Session(id),
        (None, None) => return Err(ApiError::unauthenticated()),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    // Woken by every commit of audit rows (`warden_domain::audit::committed`): subscribed
    // before the starting point is read, so nothing committed in between is missed.
    let mut committed = warden_domain::audit::committed();
    let mut last = match resume {
        Some(seq) => seq,
        None => warden_domain::audit::latest_seq(&state.services.db).await?,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(64);
    let reread_every = state.config.audit.tail_reread;
    tokio::spawn(async move {
        let services = state.services.clone();
        let mut scope = scope;
        let mut epochs = services.policy.subscribe();
        let mut recheck = tokio::time::interval(TAIL_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.tick().await;
        // A safety net: a read now and then even if no commit was heard of.
        let mut reread = tokio::time::interval(reread_every);
        reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let check = tokio::select! {
                _ = tx.closed() => return,
                changed = committed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    false
                }
                _ = reread.tick() => false,
                _ = epochs.changed() => true,
                _ = recheck.tick() => true,
            };
            if check {
                let verdict = match proof_holds(&state, &proof).await {
                    Ok(()) => audit_view(&services.policy, &who)
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
                continue;
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

/// The export's parameters, as documented: the audit filter and `format`. (The handler reads
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

const EXPORT_MAX: usize = 100_000;

pub async fn export_audit_events(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (format, filter) = split_format(raw.as_deref());
    let query: AuditQuery = serde_urlencoded::from_str(&filter).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("bad query parameters: {e}"),
        )
    })?;
    let scope = audit_view(&state.services.policy, &who)
        .await
        .map_err(|_| ApiError::forbidden())?;
    let format = format.as_deref().unwrap_or("ndjson");
    if format != "csv" && format != "ndjson" {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "format must be csv or ndjson",
        );
        e.fields
            .insert("format".into(), "must be csv or ndjson".into());
        return Err(e);
    }
    // `limit`: at most that many events (the newest first); at most EXPORT_MAX in any case.
    let max = query
        .limit
        .map_or(EXPORT_MAX, |l| (l as usize).min(EXPORT_MAX));
    let mut q = query;
    q.limit = Some(500.min(max as u64));
    let mut rows: Vec<AuditEventDto> = Vec::new();
    loop {
        let page = search_in(&state.services.db, &q, &scope, state.services.clock.now()).await?;
        rows.extend(page.items);
        match page.next {
            Some(n) if rows.len() < max => q.cursor = Some(n),
            _ => break,
        }
    }
    rows.truncate(max);
    let (ctype, body) = if format == "csv" {
        let mut out = String::from("seq,id,time,kind,actor,session_type,project,cluster,namespace,action,resource_kind,resource_name,outcome,reason,method,path,status,source_ip,request_id,duration_ms\n");
        for r in &rows {
            let cells = [
                r.seq.to_string(),
                r.id.clone(),
                r.time.clone(),
                r.kind.clone(),
                r.actor.clone(),
                r.session_type.clone(),
                r.project.clone().unwrap_or_default(),
                r.cluster.clone().unwrap_or_default(),
                r.namespace.clone().unwrap_or_default(),
                r.action.clone(),
                r.resource_kind.clone().unwrap_or_default(),
                r.resource_name.clone().unwrap_or_default(),
                r.outcome.clone(),
                r.reason.clone().unwrap_or_default(),
                r.method.clone().unwrap_or_default(),
                r.path.clone().unwrap_or_default(),
                r.status.map(|s| s.to_string()).unwrap_or_default(),
                r.source_ip.clone().unwrap_or_default(),
                r.request_id.clone().unwrap_or_default(),
                r.duration_ms.map(|s| s.to_string()).unwrap_or_default(),
            ];
            out.push_str(
                &cells
                    .iter()
                    .map(|c| csv_cell(c))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push('\n');
        }
        ("text/csv; charset=utf-8", out)
    } else {
        let mut out = String::new();
        for r in &rows {
            out.push_str(&serde_json::to_string(r).unwrap_or_default());
            out.push('\n');
        }
        ("application/x-ndjson", out)
    };
    Ok(([(header::CONTENT_TYPE, ctype)], body).into_response())
}

/// Quote a CSV cell; neutralise spreadsheet formulas.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
