//! The raw object database: objects keyed by (resource, namespace, name), one global
//! resourceVersion counter (etcd-like), a bounded event history for watches that resume from
//! a resourceVersion, and a broadcast channel for live watchers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::error::{ApiResult, Status};

const HISTORY: usize = 20_000;

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The qualified resource (`pods`, `deployments.apps`).
    pub res: String,
    pub ns: String,
    pub name: String,
}

impl Key {
    pub fn new(res: &str, ns: &str, name: &str) -> Key {
        Key {
            res: res.to_string(),
            ns: ns.to_string(),
            name: name.to_string(),
        }
    }
}

/// Field ownership of one manager (server-side apply bookkeeping; not exposed as managedFields).
#[derive(Debug, Clone, Default)]
pub struct ManagerEntry {
    /// True for `Apply` operations, false for `Update`.
    pub apply: bool,
    /// `apps/v1`, `v1`.
    pub api_version: String,
    /// Owned leaf paths in structured-merge-diff notation (`.spec.replicas`).
    pub fields: BTreeSet<String>,
    /// For appliers: the last applied configuration.
    pub applied: Option<Value>,
}

/// A stored object with its bookkeeping.
#[derive(Debug, Clone)]
pub struct Entry {
    pub obj: Value,
    pub managers: BTreeMap<String, ManagerEntry>,
}

impl Entry {
    pub fn new(obj: Value) -> Entry {
        Entry {
            obj,
            managers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change, as seen by watchers.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: EventKind,
    pub key: Key,
    pub object: Value,
    pub old: Option<Value>,
}

/// What a write closure decides.
pub enum Write {
    Put(Entry),
    Delete,
    Noop,
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Written {
    pub old: Option<Value>,
    /// The stored object (for a delete: the final state, with the deletion resourceVersion).
    pub new: Option<Value>,
    pub created: bool,
}

struct State {
    rv: u64,
    objects: BTreeMap<Key, Entry>,
    history: VecDeque<Arc<Event>>,
    /// Events with rv <= floor are no longer in `history`.
    floor: u64,
}

pub struct Db {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Event>>,
    dirty: tokio::sync::watch::Sender<u64>,
}

impl Db {
    pub fn new(start_rv: u64) -> Db {
        let (events, _) = broadcast::channel(HISTORY);
        let (dirty, _) = tokio::sync::watch::channel(0);
        Db {
            state: Mutex::new(State {
                rv: start_rv,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                floor: start_rv,
            }),
            events,
            dirty,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written (writes are
        // single inserts/removes), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notified (with the latest resourceVersion) after every change; for persistence.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.dirty.subscribe()
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).map(|e| e.obj.clone())
    }

    pub fn get_entry(&self, key: &Key) -> Option<Entry> {
        self.lock().objects.get(key).cloned()
    }

    /// Objects of a resource, in (namespace, name) order; all namespaces when `ns` is None.
    pub fn list(&self, res: &str, ns: Option<&str>) -> (Vec<Value>, u64) {
        let st = self.lock();
        (Self::list_locked(&st, res, ns), st.rv)
    }

    fn list_locked(st: &State, res: &str, ns: Option<&str>) -> Vec<Value> {
        let start = Key::new(res, ns.unwrap_or(""), "");
        st.objects
            .range(start..)
            .take_while(|(k, _)| k.res == res && ns.is_none_or(|n| k.ns == n))
            .map(|(_, e)| e.obj.clone())
            .collect()
    }

    /// Keys of a resource (all namespaces when `ns` is None).
    pub fn keys(&self, res: &str, ns: Option<&str>) -> Vec<Key> {
        let st = self.lock();
        let start = Key::new(res, ns.unwrap_or(""), "");
        st.objects
            .range(start..)
            .take_while(|(k, _)| k.res == res && ns.is_none_or(|n| k.ns == n))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every key (for namespace clean-up and persistence).
    pub fn all(&self) -> Vec<(Key, Value)> {
        self.lock()
            .objects
            .iter()
            .map(|(k, e)| (k.clone(), e.obj.clone()))
            .collect()
    }

    /// Atomic read-modify-write of one key. The closure sees the current entry and decides.
    pub fn write<F>(&self, key: &Key, f: F) -> ApiResult<Written>
    where
        F: FnOnce(Option<&Entry>) -> ApiResult<Write>,
    {
        let mut st = self.lock();
        let current = st.objects.get(key);
        let decision = f(current)?;
        let old = current.map(|e| e.obj.clone());
        match decision {
            Write::Noop => Ok(Written {
                new: old.clone(),
                old,
                created: false,
            }),
            Write::Put(mut entry) => {
                // A write that changes nothing keeps the resourceVersion and emits nothing.
                if let Some(o) = &old {
                    let mut a = o.clone();
                    strip_rv(&mut a);
                    let mut b = entry.obj.clone();
                    strip_rv(&mut b);
                    if a == b {
                        if let Some(e) = st.objects.get_mut(key) {
                            e.managers = entry.managers;
                        }
                        return Ok(Written {
                            new: old.clone(),
                            old,
                            created: false,
                        });
                    }
                }
                st.rv += 1;
                let rv = st.rv;
                set_rv(&mut entry.obj, rv);
                let obj = entry.obj.clone();
                let created = old.is_none();
                st.objects.insert(key.clone(), entry);
                let kind = if created {
                    EventKind::Added
                } else {
                    EventKind::Modified
                };
                self.emit(&mut st, rv, kind, key, obj.clone(), old.clone());
                Ok(Written {
                    old,
                    new: Some(obj),
                    created,
                })
            }
            Write::Delete => {
                let Some(entry) = st.objects.remove(key) else {
                    return Ok(Written {
                        old: None,
                        new: None,
                        created: false,
                    });
                };
                st.rv += 1;
                let rv = st.rv;
                let mut obj = entry.obj;
                set_rv(&mut obj, rv);
                self.emit(
                    &mut st,
                    rv,
                    EventKind::Deleted,
                    key,
                    obj.clone(),
                    old.clone(),
                );
                Ok(Written {
                    old,
                    new: Some(obj),
                    created: false,
                })
            }
        }
    }

    fn emit(
        &self,
        st: &mut State,
        rv: u64,
        kind: EventKind,
        key: &Key,
        object: Value,
        old: Option<Value>,
    ) {
        let ev = Arc::new(Event {
            rv,
            kind,
            key: key.clone(),
            object,
            old,
        });
        st.history.push_back(ev.clone());
        while st.history.len() > HISTORY {
            if let Some(e) = st.history.pop_front() {
                st.floor = e.rv;
            }
        }
        // No receivers is fine.
        let _ = self.events.send(ev);
        self.dirty.send_replace(rv);
    }

    /// Start a watch: the live receiver plus either the events after `since`
    /// (`Some(rv)`) or a snapshot of the current objects (`None`), taken atomically.
    pub fn subscribe(
        &self,
        res: &str,
        ns: Option<&str>,
        since: Option<u64>,
    ) -> ApiResult<Subscription> {
        let st = self.lock();
        let rx = self.events.subscribe();
        match since {
            Some(rv) => {
                if rv < st.floor {
                    return Err(Status::gone(format!(
                        "too old resource version: {} ({})",
                        rv,
                        st.floor + 1
                    )));
                }
                let replay = st
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && e.key.res == res && ns.is_none_or(|n| e.key.ns == n))
                    .cloned()
                    .collect();
                Ok(Subscription {
                    rx,
                    snapshot: Vec::new(),
                    replay,
                    rv: st.rv,
                })
            }
            None => Ok(Subscription {
                rx,
                snapshot: Self::list_locked(&st, res, ns),
                replay: Vec::new(),
                rv: st.rv,
            }),
        }
    }

    /// Load objects (for `--state`), replacing nothing that exists.
    pub fn load(&self, rv: u64, objects: Vec<(Key, Value)>) {
        let mut st = self.lock();
        st.rv = st.rv.max(rv);
        st.floor = st.rv;
        for (k, v) in objects {
            st.objects.insert(k, Entry::new(v));
        }
    }
}

/// A watch subscription.
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<Event>>,
    pub snapshot: Vec<Value>,
    pub replay: Vec<Arc<Event>>,
    pub rv: u64,
}

fn strip_rv(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
}

fn set_rv(v: &mut Value, rv: u64) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}
