//! Watch: a chunked stream of JSON events (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR), from a
//! resourceVersion or from a synthetic snapshot, with selectors applied to old and new states.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::body::{self, Resp};
use super::resources::list_query;
use super::{table, Ctx};
use crate::error::{ApiResult, Status};
use crate::ops::ListQuery;
use crate::resources::ResourceDef;
use crate::store::db::EventKind;

struct Encoder {
    res: &'static ResourceDef,
    table: bool,
    include: String,
    first: bool,
}

impl Encoder {
    fn line(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let t = table::table(
                self.res,
                std::slice::from_ref(obj),
                json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)}),
                &self.include,
                self.first,
            );
            self.first = false;
            t
        } else {
            obj.clone()
        };
        let mut s = json!({"type": kind, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

fn bookmark(res: &ResourceDef, rv: u64, initial_end: bool) -> Value {
    let mut md = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": md})
}

pub fn watch(ctx: &Ctx, res: &'static ResourceDef, ns: &str) -> ApiResult<Resp> {
    let q: ListQuery = list_query(ctx, res)?;
    let ns_filter = if ns.is_empty() {
        None
    } else {
        Some(ns.to_string())
    };
    let rv = ctx.q("resourceVersion").unwrap_or("");
    let send_initial = ctx.q_bool("sendInitialEvents");
    let bookmarks = ctx.q_bool("allowWatchBookmarks");
    if send_initial && !bookmarks {
        return Err(Status::invalid(
            res,
            "",
            vec![crate::error::FieldError::forbidden(
                "allowWatchBookmarks",
                "allowWatchBookmarks required when sendInitialEvents is specified",
            )],
        ));
    }
    let since = if send_initial || rv.is_empty() || rv == "0" {
        None
    } else {
        Some(rv.parse::<u64>().map_err(|_| {
            Status::bad_request(format!(
                "resourceVersion: Invalid value: \"{rv}\": must be a valid resource version"
            ))
        })?)
    };
    let sub = ctx
        .core
        .db
        .subscribe(&res.qualified(), ns_filter.as_deref(), since)?;
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0);
    let mut enc = Encoder {
        res,
        table: table::wants_table(ctx.header("accept")),
        include: ctx.q("includeObject").unwrap_or("Metadata").to_string(),
        first: true,
    };
    let ct = if enc.table {
        table::TABLE_CONTENT_TYPE
    } else {
        "application/json"
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let interval = ctx.core.opts.bookmark_interval;
    let mut shutdown = ctx.core.shutdown.subscribe();
    let res_key = res.qualified();
    tokio::spawn(async move {
        let matches = |o: &Value| q.labels.matches(o) && q.fields.matches(o);
        let mut last_rv = sub.rv;
        for o in sub.snapshot.iter().filter(|o| matches(o)) {
            if tx.send(enc.line("ADDED", o)).await.is_err() {
                return;
            }
        }
        if send_initial {
            let _ = tx
                .send(enc.line("BOOKMARK", &bookmark(res, sub.rv, true)))
                .await;
        }
        let mut rx = sub.rx;
        let replay: Vec<_> = sub.replay;
        let mut pending = replay.into_iter();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs(t));
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            let ev = if let Some(e) = pending.next() {
                e
            } else {
                tokio::select! {
                    r = rx.recv() => match r {
                        Ok(e) => e,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let st = Status::gone("too old resource version: watch fell behind");
                            let _ = tx.send(enc.line("ERROR", &st.to_json())).await;
                            return;
                        }
                        Err(_) => return,
                    },
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(enc.line("BOOKMARK", &bookmark(res, last_rv, false))).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return,
                    _ = tx.closed() => return,
                    _ = shutdown.changed() => return,
                }
            };
            if ev.rv <= last_rv && since.is_none() {
                continue;
            }
            if ev.key.res != res_key || ns_filter.as_ref().is_some_and(|n| *n != ev.key.ns) {
                continue;
            }
            last_rv = last_rv.max(ev.rv);
            let new_ok = matches(&ev.object);
            let old_ok = ev.old.as_ref().is_some_and(&matches);
            let (kind, obj) = match ev.kind {
                EventKind::Added if new_ok => ("ADDED", ev.object.clone()),
                EventKind::Deleted if new_ok || old_ok => ("DELETED", ev.object.clone()),
                EventKind::Modified => match (old_ok, new_ok) {
                    (true, true) => ("MODIFIED", ev.object.clone()),
                    (false, true) => ("ADDED", ev.object.clone()),
                    (true, false) => {
                        let mut o = ev.old.clone().unwrap_or(Value::Null);
                        o["metadata"]["resourceVersion"] = json!(ev.rv.to_string());
                        ("DELETED", o)
                    }
                    (false, false) => continue,
                },
                _ => continue,
            };
            if tx.send(enc.line(kind, &obj)).await.is_err() {
                return;
            }
        }
    });
    Ok(body::stream(ct, rx))
}
