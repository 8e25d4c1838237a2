//! Pods as real local processes: a scratch directory per pod, a main process per container
//! that has a command (its output is the container log), and kill-on-delete.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};

use super::confine::{Confinement, Sandbox};
use super::logbuf::LogBuf;
use super::process::{self, ProcEnv};
use crate::core::Core;

/// One running container.
pub struct ContainerRt {
    pub name: String,
    pub env: ProcEnv,
    pub log: LogBuf,
    /// Live output of the main process (channel 1 stdout, 2 stderr), for attach.
    pub output: broadcast::Sender<(u8, Bytes)>,
    /// Input for the main process (when the container has `stdin: true`).
    pub stdin: Mutex<Option<mpsc::Sender<Option<Bytes>>>>,
    /// The main process's exit code once it has exited.
    pub exited: watch::Sender<Option<i32>>,
}

/// One pod.
pub struct PodRt {
    pub ns: String,
    pub name: String,
    pub uid: String,
    pub dir: PathBuf,
    pub containers: BTreeMap<String, Arc<ContainerRt>>,
    pgids: Mutex<Vec<i32>>,
    pub stopped: watch::Sender<bool>,
}

impl PodRt {
    pub fn add_pgid(&self, pgid: i32) {
        self.pgids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pgid);
    }

    pub fn remove_pgid(&self, pgid: i32) {
        self.pgids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| *p != pgid);
    }

    fn kill_all(&self) {
        let pgids = std::mem::take(&mut *self.pgids.lock().unwrap_or_else(|p| p.into_inner()));
        for pg in pgids {
            process::kill_group(pg);
        }
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }
}

pub struct Runtime {
    root: PathBuf,
    confine: Option<Confinement>,
    pods: Mutex<HashMap<(String, String), Arc<PodRt>>>,
}

fn argv_of(c: &Value) -> Vec<String> {
    let strs = |k: &str| -> Vec<String> {
        c.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut argv = strs("command");
    argv.extend(strs("args"));
    argv
}

impl Runtime {
    pub fn new(root: PathBuf, confine: Option<Confinement>) -> Runtime {
        if confine.is_some() {
            tracing::info!("{}", super::confine::describe());
        }
        Runtime {
            root,
            confine,
            pods: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<PodRt>>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Arc<PodRt>> {
        self.lock()
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Start a pod's containers.
    pub fn start_pod(&self, core: &Arc<Core>, pod: &Value) {
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let uid = pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let dir = self
            .root
            .join(&ns)
            .join(format!("{name}-{}", &uid[..uid.len().min(8)]));
        if let Err(e) = process::ensure_dir(&dir) {
            tracing::warn!(error = %e, "cannot create the pod directory");
        }
        let sandbox = self.confine.as_ref().map(|c| Sandbox::for_pod(c, &dir));
        let mut containers = BTreeMap::new();
        let mut to_start = Vec::new();
        let specs = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in &specs {
            let cname = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut env = vec![
                ("HOSTNAME".to_string(), name.clone()),
                (
                    "KUBERNETES_SERVICE_HOST".to_string(),
                    "10.96.0.1".to_string(),
                ),
                ("KUBERNETES_SERVICE_PORT".to_string(), "443".to_string()),
            ];
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                if let (Some(k), Some(v)) = (
                    e.get("name").and_then(Value::as_str),
                    e.get("value").and_then(Value::as_str),
                ) {
                    env.push((k.to_string(), v.to_string()));
                }
            }
            let argv = argv_of(c);
            let has_process = !argv.is_empty() && tokio::runtime::Handle::try_current().is_ok();
            let rt = Arc::new(ContainerRt {
                name: cname.clone(),
                env: ProcEnv {
                    dir: dir.clone(),
                    env,
                    sandbox: sandbox.clone(),
                },
                log: LogBuf::default(),
                output: broadcast::channel(1024).0,
                stdin: Mutex::new(None),
                exited: watch::channel(None).0,
            });
            if has_process {
                let stdin = c.get("stdin").and_then(Value::as_bool).unwrap_or(false);
                to_start.push((rt.clone(), argv, stdin));
            }
            containers.insert(cname, rt);
        }
        let prt = Arc::new(PodRt {
            ns: ns.clone(),
            name: name.clone(),
            uid,
            dir,
            containers,
            pgids: Mutex::new(Vec::new()),
            stopped: watch::channel(false).0,
        });
        if let Some(old) = self.lock().insert((ns, name), prt.clone()) {
            stop(&old);
        }
        for (c, argv, stdin) in to_start {
            start_main(Arc::downgrade(core), prt.clone(), c, argv, stdin);
        }
    }

    /// Kill a pod's processes and remove its directory.
    pub fn stop_pod(&self, ns: &str, name: &str, uid: &str) {
        let key = (ns.to_string(), name.to_string());
        let mut pods = self.lock();
        let matches = pods
            .get(&key)
            .is_some_and(|p| uid.is_empty() || p.uid == uid);
        if matches {
            if let Some(p) = pods.remove(&key) {
                drop(pods);
                stop(&p);
            }
        }
    }

    /// Stop everything (simulator shutdown).
    pub fn stop_all(&self) {
        let pods: Vec<Arc<PodRt>> = self.lock().drain().map(|(_, p)| p).collect();
        for p in pods {
            stop(&p);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn stop(p: &PodRt) {
    p.stopped.send_replace(true);
    p.kill_all();
    for c in p.containers.values() {
        c.log.close();
    }
    let _ = std::fs::remove_dir_all(&p.dir);
}

fn start_main(
    core: Weak<Core>,
    pod: Arc<PodRt>,
    c: Arc<ContainerRt>,
    argv: Vec<String>,
    stdin: bool,
) {
    let child = process::spawn_piped(&argv, &c.env, stdin);
    let mut child = match child {
        Ok(ch) => ch,
        Err(e) => {
            c.log.append(
                format!(
                    "failed to start container process: exec: \"{}\": {}\n",
                    argv[0], e
                )
                .as_bytes(),
            );
            c.log.close();
            c.exited.send_replace(Some(128));
            if let Some(core) = core.upgrade() {
                core.set_container_terminated(&pod.ns, &pod.name, &pod.uid, &c.name, 128);
            }
            return;
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    pod.add_pgid(pgid);
    if let Some(mut sin) = child.stdin.take() {
        let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(64);
        *c.stdin.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        tokio::spawn(async move {
            while let Some(Some(data)) = rx.recv().await {
                if sin.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
    }
    let mut pumps = Vec::new();
    for (ch, out) in [
        (
            1u8,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            2u8,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let Some(mut out) = out else { continue };
        let c2 = c.clone();
        pumps.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        c2.log.append(&buf[..n]);
                        let _ = c2.output.send((ch, Bytes::copy_from_slice(&buf[..n])));
                    }
                }
            }
        }));
    }
    tokio::spawn(async move {
        let code = match child.wait().await {
            Ok(st) => process::exit_code(st),
            Err(_) => 1,
        };
        for p in pumps {
            let _ = p.await;
        }
        pod.remove_pgid(pgid);
        c.log.close();
        c.exited.send_replace(Some(code));
        if !pod.is_stopped() {
            if let Some(core) = core.upgrade() {
                core.set_container_terminated(&pod.ns, &pod.name, &pod.uid, &c.name, code);
            }
        }
    });
}
