//! The kubectl shell: Warden's own line-oriented shell in front of the real `kubectl` of
//! Warden's host.
//!
//! Warden reads the line itself ([`Editor`]: prompt `cluster:namespace$ `, line editing, ↑/↓
//! history, Ctrl-C, Ctrl-D, tab completion of subcommands; `clear`, `help`, `exit`), splits it
//! without any shell and checks it ([`super::argv`]), audits it (`terminal.command`, the argv,
//! never the output or a pasted manifest), then runs `kubectl` as a child in a PTY of its own
//! (so `exec -it`, `logs -f`, `get -w` work: keystrokes go to the child, resizes to the PTY,
//! Ctrl-C is the PTY's interrupt).
//!
//! kubectl runs
//! - with a kubeconfig made for this terminal only: a `web_shell` client certificate that
//!   reaches this cluster only, expires with the terminal's limit and is revoked when the
//!   terminal ends, pointing at Warden's own gateway through its loopback entry for web
//!   terminals (the only place that credential is accepted, so a copy read out of the
//!   terminal is useless elsewhere), so every API call passes the gateway's checks and audit
//!   (the events carry `details.terminal_id`);
//! - with a cleared environment (`PATH` = kubectl's directory; `HOME`, `KUBECONFIG` and
//!   `KUBECACHEDIR` in a per-terminal directory, mode 0700, deleted at the end), in that
//!   directory, as the leader of its own session (the whole group is killed at the end);
//! - confined with Landlock where the kernel has it ([`Confinement`]): it may read and run
//!   kubectl (and its sibling `kubectl.*` binaries, which a version dispatcher runs), read the
//!   name-resolution and time-zone files, read and write the terminal's directory and nothing
//!   else; connect over TCP to that entry's port only (Landlock ABI 4+); not signal or reach
//!   abstract sockets outside itself (ABI 6+). Without Landlock it runs unconfined, and the
//!   terminal's `terminal.open` event says so.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use warden_domain::access::Principal;
use warden_domain::audit::{AuditEvent, Outcome, SessionType};
use warden_domain::kubectl as kc;
use warden_domain::Services;

use super::{argv, Backend, Output};
use crate::gateway::kubeconfig::{render, KubeconfigCluster, KubeconfigInput};
use crate::gateway::pki::PeerIdentity;
use crate::gateway::Gateway;
use crate::state::AppState;

/// What the browser sends a running shell.
#[derive(Debug)]
enum Input {
    Data(Vec<u8>),
    Resize(u16, u16),
    Close,
}

/// Why a shell could not be prepared: (status, message, detail for the audit log).
pub(crate) type ShellRefusal = (StatusCode, String, Option<String>);

/// The kubectl the shell runs: `WARDEN_KUBECTL`, or the first `kubectl` on Warden's `PATH`.
pub fn find_kubectl(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = configured {
        return is_executable(p).then(|| p.to_owned());
    }
    // The process's own search path, as a shell would use it to find the command.
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What is cleaned up when the shell ends, however it ends: the credential is refused at once
/// and revoked in the database, the terminal's directory deleted.
struct Resources {
    gw: Arc<Gateway>,
    services: Arc<Services>,
    serial: Option<String>,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Resources {
    fn drop(&mut self) {
        if let Some(serial) = self.serial.take() {
            self.gw.web_shell_ended(&serial);
            let services = self.services.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let now = services.clock.now();
                    if let Err(e) = kc::revoke_credential(&services.db, &serial, now).await {
                        tracing::error!(error = %e, "could not revoke a web terminal's credential");
                    }
                });
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                tracing::warn!(error = %e, "could not delete a web terminal's directory");
            }
        }
    }
}

/// A shell ready to start once the terminal is registered.
pub(crate) struct PreparedShell {
    res: Resources,
    kubectl: Option<PathBuf>,
    confinement: Option<Confinement>,
    identity: Option<PeerIdentity>,
    cluster: String,
    namespace: String,
    sa: String,
}

/// Prepare a shell for `who` on `cluster`: find kubectl, make the terminal's directory, issue
/// its credential and write its kubeconfig. Without kubectl the shell still opens, says so and
/// ends (a refused upgrade would leave the browser without a reason).
pub(crate) async fn prepare(
    state: &AppState,
    who: &Principal,
    cluster: &str,
    namespace: &str,
    sa: &str,
    expires_at: i64,
) -> Result<PreparedShell, ShellRefusal> {
    let mut shell = PreparedShell {
        res: Resources {
            gw: state.gateway.clone(),
            services: state.services.clone(),
            serial: None,
            dir: None,
        },
        kubectl: find_kubectl(state.config.terminal.kubectl.as_deref()),
        confinement: None,
        identity: None,
        cluster: cluster.to_owned(),
        namespace: namespace.to_owned(),
        sa: sa.to_owned(),
    };
    let Some(kubectl) = shell.kubectl.clone() else {
        return Ok(shell);
    };
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Warden cannot {what} for the shell right now"),
            Some(e.to_string()),
        )
    };
    let dir = tempfile::Builder::new()
        .prefix("warden-shell-")
        .tempdir()
        .map_err(|e| internal("prepare a directory", &e))?;
    std::fs::create_dir(dir.path().join("cache"))
        .map_err(|e| internal("prepare a directory", &e))?;
    let dir_path = dir.path().to_owned();
    shell.res.dir = Some(dir);
    // The credential: this terminal's only.
    let svc = &state.services;
    let now = svc.clock.now();
    let until = warden_domain::clock::Timestamp(expires_at);
    let user_id = who.user_id.to_string();
    let read_only = warden_domain::identity::mfa::second_factor_is_stale(svc, who)
        .await
        .map_err(|e| internal("check your second factor", &e))?;
    let serial = kc::issue_web_shell(&svc.db, &user_id, cluster, now, until, read_only)
        .await
        .map_err(|e| internal("issue a credential", &e))?;
    state.gateway.web_shell_opened(&serial, 0);
    shell.res.serial = Some(serial.clone());
    let session_type = SessionType::WebShell.as_str();
    let (cert, key) = state
        .gateway
        .pki()
        .client_cert(
            &user_id,
            session_type,
            &serial,
            now.to_offset() - time::Duration::minutes(5),
            until.to_offset(),
        )
        .map_err(|e| internal("sign a credential", &e))?;
    // The loopback entry that alone accepts this credential.
    let entry = state
        .gateway
        .shell_entry()
        .ok_or_else(|| internal("find the gateway", &"the gateway is not serving"))?;
    let gateway_url = format!("https://{entry}");
    let kubeconfig = render(&KubeconfigInput {
        gateway_url: &gateway_url,
        // The shell's kubectl dials loopback, where the gateway CA's certificate is served.
        gateway_ca_pem: Some(state.gateway.pki().gateway_ca_pem()),
        clusters: &[KubeconfigCluster {
            name: cluster.to_owned(),
            namespace: Some(namespace.to_owned()),
        }],
        user: sa,
        cert_pem: &cert,
        key_pem: &key,
        expires_at: &until.rfc3339(),
    });
    write_private(&dir_path.join("kubeconfig"), &kubeconfig)
        .map_err(|e| internal("write a kubeconfig", &e))?;
    shell.identity = Some(PeerIdentity {
        user_id,
        session_type: session_type.to_owned(),
        serial,
    });
    shell.confinement = Some(Confinement::new(&kubectl, &dir_path, entry.port()));
    Ok(shell)
}

fn write_private(path: &Path, content: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())
}

impl PreparedShell {
    /// The credential the shell's kubectl uses (none when kubectl is missing).
    pub(crate) fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }

    pub(crate) fn serial(&self) -> Option<&str> {
        self.res.serial.as_deref()
    }

    /// What confines kubectl here, in words (for the audit log).
    pub(crate) fn confinement(&self) -> Option<String> {
        self.confinement.as_ref().map(Confinement::describe)
    }

    /// Start the shell for terminal `terminal_id`; `opened` is its `terminal.open` event (the
    /// template of the command events).
    pub(crate) fn start(self, terminal_id: u64, opened: AuditEvent) -> ShellBackend {
        if let Some(serial) = &self.res.serial {
            self.res.gw.web_shell_opened(serial, terminal_id);
        }
        let (in_tx, in_rx) = mpsc::channel(64);
        let (out_tx, out_rx) = mpsc::channel(64);
        let dir = self.res.dir.as_ref().map(|d| d.path().to_owned());
        let task = ShellTask {
            editor: Editor::new(format!("{}:{}$ ", self.cluster, self.namespace)),
            audit: self.res.services.audit.clone(),
            _res: self.res,
            kubectl: self.kubectl,
            confinement: self.confinement,
            dir,
            size: (80, 24),
            template: opened,
            terminal_id,
            out: out_tx,
            cluster: self.cluster,
            namespace: self.namespace,
            sa: self.sa,
            typeahead: Vec::new(),
            at_line_start: true,
        };
        let task = tokio::spawn(task.run(in_rx));
        ShellBackend {
            input: in_tx,
            output: out_rx,
            task: Some(task),
        }
    }
}

/// The relay's handle on a running shell.
pub(crate) struct ShellBackend {
    input: mpsc::Sender<Input>,
    output: mpsc::Receiver<Output>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Backend for ShellBackend {
    async fn input(&mut self, data: Vec<u8>) -> Result<(), String> {
        // A shell that ended says so on its output.
        let _ = self.input.send(Input::Data(data)).await;
        Ok(())
    }

    async fn resize(&mut self, cols: u16, rows: u16) -> Result<(), String> {
        let _ = self.input.send(Input::Resize(cols, rows)).await;
        Ok(())
    }

    async fn next_output(&mut self) -> Output {
        self.output
            .recv()
            .await
            .unwrap_or_else(|| Output::Lost("the shell ended".into()))
    }

    async fn close(&mut self) {
        let _ = self.input.try_send(Input::Close);
        self.output.close();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

const HELP: &str = "\
Warden's kubectl shell. Each line is one kubectl command, run against this cluster as you,
through Warden's gateway (checked and audited). No shell runs: no pipes, redirections,
variables, ; or &&. Quotes ('...' \"...\") and backslashes work.

  kubectl get pods            kubectl logs -f POD         kubectl exec -it POD -- sh
  kubectl apply -f -          (paste the manifest, then Ctrl-D on an empty line)

Not available here: files on Warden's server (-f PATH, -k, --from-file, cp), editors (edit),
listeners (proxy, port-forward), other identities or targets (--kubeconfig, --as, --server,
--context, --token...), config, plugins, diff, debug.

Keys: ←/→ Home/End Ctrl-A/E to move, ↑/↓ history, Tab completes subcommands and resource
kinds, Ctrl-U/K/W delete, Ctrl-L or clear clears the screen, Ctrl-C interrupts, Ctrl-D or exit
leaves.
";

/// What the line said to do.
enum Flow {
    Continue,
    Exit,
    /// The terminal is closing: stop now.
    Closed,
}

struct ShellTask {
    /// Cleaned up when the task ends, however it ends.
    _res: Resources,
    kubectl: Option<PathBuf>,
    confinement: Option<Confinement>,
    dir: Option<PathBuf>,
    size: (u16, u16),
    editor: Editor,
    audit: warden_domain::audit::SharedAuditSink,
    template: AuditEvent,
    terminal_id: u64,
    out: mpsc::Sender<Output>,
    cluster: String,
    namespace: String,
    sa: String,
    /// Keystrokes that came after a line, for the next prompt.
    typeahead: Vec<u8>,
    /// The cursor is at the start of a line (the prompt can be drawn as is).
    at_line_start: bool,
}

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

impl ShellTask {
    async fn send(&mut self, data: Vec<u8>) -> bool {
        if let Some(&last) = data.last() {
            self.at_line_start = last == b'\n';
        }
        self.out.send(Output::Data(data)).await.is_ok()
    }

    async fn say(&mut self, text: &str) -> bool {
        self.send(crlf(text)).await
    }

    async fn prompt(&mut self) -> bool {
        let mut p = Vec::new();
        if !self.at_line_start {
            p.extend_from_slice(b"\r\n");
        }
        p.extend_from_slice(self.editor.prompt_bytes());
        self.at_line_start = false;
        self.out.send(Output::Data(p)).await.is_ok()
    }

    async fn run(mut self, mut input: mpsc::Receiver<Input>) {
        let Some(_) = self.kubectl else {
            let _ = self
                .say("kubectl is not installed on the Warden server, so the kubectl shell cannot run.\nAsk your administrator to install kubectl on Warden's PATH (or set WARDEN_KUBECTL).\n")
                .await;
            let _ = self
                .out
                .send(Output::Lost(
                    "kubectl is not available on the Warden server".into(),
                ))
                .await;
            return;
        };
        let banner = format!(
            "Warden kubectl shell on cluster {}, namespace {}, as system:serviceaccount:{}:{}.\nEvery command goes through Warden's gateway and is audited. Type help.\n",
            self.cluster,
            self.namespace,
            crate::gateway::rbac::NAMESPACE,
            self.sa
        );
        if !self.say(&banner).await || !self.prompt().await {
            return;
        }
        loop {
            let bytes = if !self.typeahead.is_empty() {
                std::mem::take(&mut self.typeahead)
            } else {
                match input.recv().await {
                    None | Some(Input::Close) => return,
                    Some(Input::Resize(c, r)) => {
                        self.size = (c, r);
                        continue;
                    }
                    Some(Input::Data(d)) => d,
                }
            };
            let mut draw = Vec::new();
            let event = self.editor.feed(&bytes, &mut draw);
            if !draw.is_empty() && self.out.send(Output::Data(draw)).await.is_err() {
                return;
            }
            match event {
                None => {}
                Some((Event::Eof, _)) => {
                    let _ = self.send(b"exit\r\n".to_vec()).await;
                    let _ = self.out.send(Output::Exit(0)).await;
                    return;
                }
                Some((Event::Line(line), rest)) => {
                    self.at_line_start = true;
                    match self.line(&line, rest, &mut input).await {
                        Flow::Continue => {}
                        Flow::Exit => {
                            let _ = self.out.send(Output::Exit(0)).await;
                            return;
                        }
                        Flow::Closed => return,
                    }
                    if !self.prompt().await {
                        return;
                    }
                }
            }
        }
    }

    /// The audit event of a command line.
    fn command_event(&self, outcome: Outcome, detail: serde_json::Value) -> AuditEvent {
        let mut ev = self.template.clone();
        ev.id = warden_domain::ids::AuditEventId::new();
        ev.action = "terminal.command".into();
        ev.outcome = outcome;
        ev.resource_kind = None;
        ev.resource_name = None;
        ev.details = json!({"mode": "shell", "terminal_id": self.terminal_id});
        if let (Some(d), Some(extra)) = (ev.details.as_object_mut(), detail.as_object()) {
            for (k, v) in extra {
                d.insert(k.clone(), v.clone());
            }
        }
        ev
    }

    async fn refuse(&mut self, why: &str, detail: serde_json::Value) -> Flow {
        let mut ev = self.command_event(Outcome::Denied, detail);
        ev.reason = Some(why.to_owned());
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "could not audit a refused shell command");
        }
        if self
            .send(format!("\x1b[31mwarden: {why}\x1b[0m\r\n").into_bytes())
            .await
        {
            Flow::Continue
        } else {
            Flow::Closed
        }
    }

    async fn line(&mut self, line: &str, rest: Vec<u8>, input: &mut mpsc::Receiver<Input>) -> Flow {
        let line = line.trim();
        match line {
            "" => {
                self.typeahead = rest;
                return Flow::Continue;
            }
            "exit" | "logout" => return Flow::Exit,
            "clear" => {
                self.typeahead = rest;
                let _ = self.send(b"\x1b[H\x1b[2J\x1b[3J".to_vec()).await;
                self.at_line_start = true;
                return Flow::Continue;
            }
            "help" => {
                self.typeahead = rest;
                return if self.say(HELP).await {
                    Flow::Continue
                } else {
                    Flow::Closed
                };
            }
            _ => {}
        }
        let words = match argv::tokenize(line) {
            Ok(w) => w,
            Err(why) => {
                self.typeahead = rest;
                // Recorded as the words it seems to hold, masked as an accepted line's are
                // (a secret typed into a line with a stray quote stays out of the log).
                let seen: Vec<String> = line
                    .split_whitespace()
                    .take(64)
                    .map(|w| w.chars().take(200).collect())
                    .collect();
                return self
                    .refuse(&why.0, json!({"argv": argv::for_audit(&seen)}))
                    .await;
            }
        };
        if words.first().map(String::as_str) != Some("kubectl") {
            self.typeahead = rest;
            let first = words.first().cloned().unwrap_or_default();
            return self
                .refuse(
                    &format!("{first}: only kubectl commands run here (type help)"),
                    json!({"argv": argv::for_audit(&words)}),
                )
                .await;
        }
        let args = &words[1..];
        let checked = match argv::check(args) {
            Ok(c) => c,
            Err(why) => {
                self.typeahead = rest;
                return self
                    .refuse(&why.0, json!({"argv": argv::for_audit(args)}))
                    .await;
            }
        };
        let ev = self.command_event(Outcome::Allowed, json!({"argv": argv::for_audit(args)}));
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "could not audit a shell command");
            self.typeahead = rest;
            let _ = self
                .say("warden: the command cannot be audited right now, so it does not run\n")
                .await;
            return Flow::Continue;
        }
        // What was typed after the line goes to kubectl when it reads the terminal.
        let interactive =
            checked.reads_stdin || matches!(checked.subcommand.as_str(), "exec" | "attach" | "run");
        let to_child = if interactive {
            rest
        } else {
            self.typeahead = rest;
            Vec::new()
        };
        self.run_kubectl(args, to_child, input).await
    }

    async fn run_kubectl(
        &mut self,
        args: &[String],
        first_input: Vec<u8>,
        input: &mut mpsc::Receiver<Input>,
    ) -> Flow {
        let (Some(kubectl), Some(dir)) = (self.kubectl.clone(), self.dir.clone()) else {
            return Flow::Continue;
        };
        let env = vec![
            (
                "PATH".to_owned(),
                kubectl
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("HOME".to_owned(), dir.display().to_string()),
            (
                "KUBECONFIG".to_owned(),
                dir.join("kubeconfig").display().to_string(),
            ),
            (
                "KUBECACHEDIR".to_owned(),
                dir.join("cache").display().to_string(),
            ),
            ("TERM".to_owned(), "xterm-256color".to_owned()),
            // No preferences file (kubectl 1.33+ `kuberc`: aliases and default flags the
            // argument filter would not see).
            ("KUBECTL_KUBERC".to_owned(), "false".to_owned()),
            ("KUBERC".to_owned(), "off".to_owned()),
            // Should a line ever get an editor started past the filter, it is no editor.
            ("KUBE_EDITOR".to_owned(), "/bin/false".to_owned()),
            ("EDITOR".to_owned(), "/bin/false".to_owned()),
            ("VISUAL".to_owned(), "/bin/false".to_owned()),
        ];
        let ruleset = match self.confinement.as_ref().map(Confinement::ruleset) {
            Some(Ok(fd)) => fd,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot confine the kubectl shell");
                let _ = self
                    .say("warden: kubectl cannot be confined right now, so it does not run\n")
                    .await;
                return Flow::Continue;
            }
            None => None,
        };
        let spawned = spawn_pty(&kubectl, args, &env, &dir, self.size, ruleset.as_ref());
        drop(ruleset);
        let (mut child, pty) = match spawned {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "cannot start kubectl");
                let _ = self
                    .say(&format!("warden: kubectl could not start: {e}\n"))
                    .await;
                return Flow::Continue;
            }
        };
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        let _kill = KillGroup(pgid);
        if !first_input.is_empty() && pty.write_all(&first_input).await.is_err() {
            return Flow::Continue;
        }
        let mut buf = vec![0u8; 16 * 1024];
        let mut exited = false;
        loop {
            tokio::select! {
                biased;
                msg = input.recv() => match msg {
                    None | Some(Input::Close) => return Flow::Closed,
                    Some(Input::Data(d)) => {
                        if pty.write_all(&d).await.is_err() {
                            break;
                        }
                    }
                    Some(Input::Resize(c, r)) => {
                        self.size = (c, r);
                        let _ = pty.resize(c, r);
                    }
                },
                n = pty.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !self.send(buf[..n].to_vec()).await {
                            return Flow::Closed;
                        }
                    }
                },
                _ = child.wait(), if !exited => {
                    exited = true;
                    // Whatever it wrote last is still in the PTY: read it, briefly.
                    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), pty.read(&mut buf)).await {
                        if n == 0 || !self.send(buf[..n].to_vec()).await {
                            break;
                        }
                    }
                    break;
                }
            }
        }
        if !exited {
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        }
        Flow::Continue
    }
}

/// Kills a process group when dropped (the command ended, was interrupted, or the terminal
/// closed).
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: kill(2) with a negative pid signals the group; no memory is touched.
            unsafe {
                libc::kill(-self.0, libc::SIGKILL);
            }
        }
    }
}

// ---- confinement ----

/// Landlock's ABI version on this kernel (`None`: not available).
pub fn landlock_abi() -> Option<i32> {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns
    // the ABI version; no memory is passed.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    (v > 0).then_some(v as i32)
}

/// What kubectl may touch: its own binaries, a few system files read-only, the terminal's
/// directory, the gateway's port.
pub(crate) struct Confinement {
    /// kubectl and its `kubectl*` siblings (canonical paths).
    binaries: Vec<PathBuf>,
    binary_dir: Option<PathBuf>,
    session_dir: PathBuf,
    gateway_port: u16,
    abi: Option<i32>,
}

/// Read-only files and directories kubectl may need: name resolution (a gateway named by
/// host name) and time zones (ages and timestamps). `/dev/null` is read-write.
const SYSTEM_READ: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/usr/share/zoneinfo",
];

impl Confinement {
    pub(crate) fn new(kubectl: &Path, session_dir: &Path, gateway_port: u16) -> Self {
        let real = std::fs::canonicalize(kubectl).unwrap_or_else(|_| kubectl.to_owned());
        let binary_dir = real.parent().map(Path::to_owned);
        let stem = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut binaries = vec![real.clone()];
        if let Some(dir) = &binary_dir {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name != stem && name.starts_with(&format!("{stem}.")) {
                        binaries.push(e.path());
                    }
                }
            }
        }
        binaries.sort();
        Self {
            binaries,
            binary_dir,
            session_dir: session_dir.to_owned(),
            gateway_port,
            abi: landlock_abi(),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self.abi {
            None => "none: Landlock is not available on this kernel (cleared environment and a private directory only)".into(),
            Some(v) => {
                let mut parts = vec!["files"];
                if v >= 4 {
                    parts.push("TCP (gateway port only)");
                }
                if v >= 6 {
                    parts.push("signals and abstract sockets");
                }
                format!("landlock ABI {v}: {}", parts.join(", "))
            }
        }
    }

    /// A Landlock ruleset for one kubectl run (`None` when the kernel has no Landlock). Built
    /// in the parent: between fork and exec only async-signal-safe calls are allowed.
    fn ruleset(&self) -> Result<Option<OwnedFd>, String> {
        use landlock::{
            Access, AccessFs, AccessNet, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
            RulesetCreatedAttr, Scope, ABI,
        };
        if self.abi.is_none() {
            return Ok(None);
        }
        let abi = ABI::V6;
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let mut r = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))
            .map_err(|e| err(&e))?
            .handle_access(AccessNet::from_all(abi))
            .map_err(|e| err(&e))?
            .scope(Scope::from_all(abi))
            .map_err(|e| err(&e))?
            .create()
            .map_err(|e| err(&e))?;
        let rule = |p: &Path, access| -> Result<_, String> {
            Ok(PathBeneath::new(
                PathFd::new(p).map_err(|e| err(&e))?,
                access,
            ))
        };
        for b in &self.binaries {
            r = r
                .add_rule(rule(b, AccessFs::Execute | AccessFs::ReadFile)?)
                .map_err(|e| err(&e))?;
        }
        if let Some(d) = &self.binary_dir {
            r = r
                .add_rule(rule(d, AccessFs::ReadDir.into())?)
                .map_err(|e| err(&e))?;
        }
        r = r
            .add_rule(rule(&self.session_dir, AccessFs::from_all(abi))?)
            .map_err(|e| err(&e))?;
        for p in SYSTEM_READ {
            let p = Path::new(p);
            let Ok(meta) = std::fs::metadata(p) else {
                continue;
            };
            let access = if meta.is_dir() {
                AccessFs::ReadFile | AccessFs::ReadDir
            } else {
                AccessFs::ReadFile.into()
            };
            r = r.add_rule(rule(p, access)?).map_err(|e| err(&e))?;
        }
        r = r
            .add_rule(rule(
                Path::new("/dev/null"),
                AccessFs::ReadFile | AccessFs::WriteFile,
            )?)
            .map_err(|e| err(&e))?;
        r = r
            .add_rule(NetPort::new(self.gateway_port, AccessNet::ConnectTcp))
            .map_err(|e| err(&e))?;
        Ok(r.into())
    }
}

// ---- the PTY ----

/// A pseudo-terminal master, readable and writable asynchronously.
struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|inner| {
                // SAFETY: reading into a valid, exclusively borrowed buffer from an fd we own.
                let n =
                    unsafe { libc::read(inner.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => return Ok(n),
                // EIO: every process holding the slave side is gone.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            let res = guard.try_io(|inner| {
                // SAFETY: writing from a valid buffer to an fd we own.
                let n = unsafe { libc::write(inner.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// TIOCSWINSZ; the foreground process group gets SIGWINCH.
    fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct we pass by reference.
        let r = unsafe { libc::ioctl(self.fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// The signals a program in a terminal gets from it (and from its parent's ending), each set
/// back to its default action in the child.
const TERMINAL_SIGNALS: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGHUP,
];

/// Run `program args` in a new session whose controlling terminal is a new PTY, with exactly
/// `env`, in `dir`, confined by `ruleset` when given.
fn spawn_pty(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    dir: &Path,
    (cols, rows): (u16, u16),
    ruleset: Option<&OwnedFd>,
) -> io::Result<(tokio::process::Child, PtyMaster)> {
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).map_err(io::Error::from)?;
    let (master, slave) = (pty.master, pty.slave);
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
    }
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(std::process::Stdio::from(slave.try_clone()?))
        .stdout(std::process::Stdio::from(slave.try_clone()?))
        .stderr(std::process::Stdio::from(slave))
        .kill_on_drop(true);
    let ruleset: RawFd = ruleset.map(|f| f.as_raw_fd()).unwrap_or(-1);
    // SAFETY: only async-signal-safe calls between fork and exec (signal, setsid, ioctl, prctl
    // and the landlock_restrict_self system call); the ruleset was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // A terminal's program takes its keyboard signals as a terminal gives them:
            // dispositions Warden was started with (SIGINT and SIGQUIT ignored, as for any
            // program started in the background by a script or `nohup`) are not inherited, or
            // a Ctrl-C that lands before kubectl installs its own handler is lost and
            // `get -w` or `logs -f` runs on.
            for sig in TERMINAL_SIGNALS {
                if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if ruleset >= 0 {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(cmd);
    // SAFETY: `master` is an fd we own exclusively; nothing else registers or closes it.
    let fd = unsafe { AsyncFd::register(master) }?;
    Ok((child, PtyMaster { fd }))
}

// ---- the line editor ----

/// A finished line, or Ctrl-D on an empty one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Line(String),
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Char(char),
    Enter,
    Backspace,
    Delete,
    Left,
    Right,
    Up,
    Down,
    Home,
    End,
    Interrupt,
    Eof,
    KillToEnd,
    KillToStart,
    KillWord,
    ClearScreen,
    Tab,
    Ignore,
}

/// The next key in `b`, and how many bytes it took; `None` when `b` ends in the middle of one.
fn next_key(b: &[u8]) -> Option<(Key, usize)> {
    let first = *b.first()?;
    Some(match first {
        0x1b => {
            let Some(&kind) = b.get(1) else {
                return Some((Key::Ignore, 1)); // a lone Escape
            };
            if kind != b'[' && kind != b'O' {
                return Some((Key::Ignore, 2));
            }
            let end = b[2..].iter().position(|c| (0x40..=0x7e).contains(c))?;
            let params = &b[2..2 + end];
            let key = match (b[2 + end], params) {
                (b'A', _) => Key::Up,
                (b'B', _) => Key::Down,
                (b'C', _) => Key::Right,
                (b'D', _) => Key::Left,
                (b'H', _) => Key::Home,
                (b'F', _) => Key::End,
                (b'~', b"1" | b"7") => Key::Home,
                (b'~', b"4" | b"8") => Key::End,
                (b'~', b"3") => Key::Delete,
                _ => Key::Ignore,
            };
            (key, 3 + end)
        }
        b'\r' => (Key::Enter, if b.get(1) == Some(&b'\n') { 2 } else { 1 }),
        b'\n' => (Key::Enter, 1),
        0x7f | 0x08 => (Key::Backspace, 1),
        0x01 => (Key::Home, 1),
        0x05 => (Key::End, 1),
        0x02 => (Key::Left, 1),
        0x06 => (Key::Right, 1),
        0x10 => (Key::Up, 1),
        0x0e => (Key::Down, 1),
        0x03 => (Key::Interrupt, 1),
        0x04 => (Key::Eof, 1),
        0x0b => (Key::KillToEnd, 1),
        0x15 => (Key::KillToStart, 1),
        0x17 => (Key::KillWord, 1),
        0x0c => (Key::ClearScreen, 1),
        b'\t' => (Key::Tab, 1),
        c if c < 0x20 => (Key::Ignore, 1),
        c => {
            let len = match c {
                0x00..=0x7f => 1,
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => return Some((Key::Ignore, 1)),
            };
            if b.len() < len {
                return None;
            }
            match std::str::from_utf8(&b[..len]) {
                Ok(s) => (Key::Char(s.chars().next().unwrap_or(' ')), len),
                Err(_) => (Key::Ignore, 1),
            }
        }
    })
}

/// The subcommands whose first argument is a resource kind.
const RESOURCE_VERBS: &[&str] = &[
    "get", "describe", "delete", "explain", "label", "annotate", "patch", "scale", "create", "set",
    "rollout", "top", "wait",
];

/// The resource kinds Tab offers (the built-in ones people type most).
const RESOURCE_KINDS: &[&str] = &[
    "all",
    "clusterrolebindings",
    "clusterroles",
    "configmaps",
    "cronjobs",
    "daemonsets",
    "deployments",
    "endpoints",
    "events",
    "horizontalpodautoscalers",
    "ingresses",
    "jobs",
    "limitranges",
    "namespaces",
    "networkpolicies",
    "nodes",
    "persistentvolumeclaims",
    "persistentvolumes",
    "poddisruptionbudgets",
    "pods",
    "replicasets",
    "resourcequotas",
    "rolebindings",
    "roles",
    "secrets",
    "serviceaccounts",
    "services",
    "statefulsets",
    "storageclasses",
];

/// The shell's line editor: it draws the prompt and the line as keys arrive.
pub(crate) struct Editor {
    prompt: String,
    line: Vec<char>,
    cursor: usize,
    history: Vec<String>,
    /// The history entry shown, while browsing.
    browsing: Option<usize>,
    /// The line being typed before browsing began.
    draft: Vec<char>,
    /// An incomplete key at the end of the last input.
    pending: Vec<u8>,
}

const HISTORY_MAX: usize = 500;

impl Editor {
    pub(crate) fn new(prompt: String) -> Self {
        Self {
            prompt,
            line: Vec::new(),
            cursor: 0,
            history: Vec::new(),
            browsing: None,
            draft: Vec::new(),
            pending: Vec::new(),
        }
    }

    pub(crate) fn prompt_bytes(&self) -> &[u8] {
        self.prompt.as_bytes()
    }

    /// Redraw the prompt and the line, the cursor in place.
    fn redraw(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r");
        out.extend_from_slice(self.prompt.as_bytes());
        out.extend_from_slice(self.line.iter().collect::<String>().as_bytes());
        out.extend_from_slice(b"\x1b[K");
        let back = self.line.len() - self.cursor;
        if back > 0 {
            out.extend_from_slice(format!("\x1b[{back}D").as_bytes());
        }
    }

    fn set_line(&mut self, line: Vec<char>) {
        self.cursor = line.len();
        self.line = line;
    }

    /// Feed keystrokes; drawing goes to `out`. Returns the first finished line (or Ctrl-D on
    /// an empty line) and the bytes that came after it.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<(Event, Vec<u8>)> {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(input);
        let mut i = 0;
        while i < buf.len() {
            let Some((key, n)) = next_key(&buf[i..]) else {
                self.pending = buf[i..].to_vec();
                return None;
            };
            i += n;
            if let Some(event) = self.key(key, out) {
                return Some((event, buf[i..].to_vec()));
            }
        }
        None
    }

    fn key(&mut self, key: Key, out: &mut Vec<u8>) -> Option<Event> {
        match key {
            Key::Char(c) => {
                self.line.insert(self.cursor, c);
                self.cursor += 1;
                if self.cursor == self.line.len() {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                } else {
                    self.redraw(out);
                }
            }
            Key::Enter => {
                out.extend_from_slice(b"\r\n");
                let line: String = self.line.iter().collect();
                if !line.trim().is_empty() && self.history.last() != Some(&line) {
                    self.history.push(line.clone());
                    if self.history.len() > HISTORY_MAX {
                        self.history.remove(0);
                    }
                }
                self.set_line(Vec::new());
                self.browsing = None;
                return Some(Event::Line(line));
            }
            Key::Backspace => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    self.line.remove(self.cursor);
                    self.redraw(out);
                }
            }
            Key::Delete => {
                if self.cursor < self.line.len() {
                    self.line.remove(self.cursor);
                    self.redraw(out);
                }
            }
            Key::Left => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    out.extend_from_slice(b"\x1b[D");
                }
            }
            Key::Right => {
                if self.cursor < self.line.len() {
                    self.cursor += 1;
                    out.extend_from_slice(b"\x1b[C");
                }
            }
            Key::Home => {
                self.cursor = 0;
                self.redraw(out);
            }
            Key::End => {
                self.cursor = self.line.len();
                self.redraw(out);
            }
            Key::Up => {
                let next = match self.browsing {
                    None if !self.history.is_empty() => {
                        self.draft = self.line.clone();
                        Some(self.history.len() - 1)
                    }
                    Some(i) if i > 0 => Some(i - 1),
                    other => other,
                };
                if let Some(i) = next {
                    self.browsing = Some(i);
                    self.set_line(self.history[i].chars().collect());
                    self.redraw(out);
                }
            }
            Key::Down => {
                if let Some(i) = self.browsing {
                    if i + 1 < self.history.len() {
                        self.browsing = Some(i + 1);
                        self.set_line(self.history[i + 1].chars().collect());
                    } else {
                        self.browsing = None;
                        let draft = std::mem::take(&mut self.draft);
                        self.set_line(draft);
                    }
                    self.redraw(out);
                }
            }
            Key::Interrupt => {
                out.extend_from_slice(b"^C\r\n");
                self.set_line(Vec::new());
                self.browsing = None;
                self.redraw(out);
            }
            Key::Eof => {
                if self.line.is_empty() {
                    out.extend_from_slice(b"\r\n");
                    return Some(Event::Eof);
                }
                if self.cursor < self.line.len() {
                    self.line.remove(self.cursor);
                    self.redraw(out);
                }
            }
            Key::KillToEnd => {
                self.line.truncate(self.cursor);
                self.redraw(out);
            }
            Key::KillToStart => {
                self.line.drain(..self.cursor);
                self.cursor = 0;
                self.redraw(out);
            }
            Key::KillWord => {
                let mut start = self.cursor;
                while start > 0 && self.line[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && self.line[start - 1] != ' ' {
                    start -= 1;
                }
                self.line.drain(start..self.cursor);
                self.cursor = start;
                self.redraw(out);
            }
            Key::ClearScreen => {
                out.extend_from_slice(b"\x1b[H\x1b[2J");
                self.redraw(out);
            }
            Key::Tab => self.complete(out),
            Key::Ignore => {}
        }
        None
    }

    /// Complete the word before the cursor: `kubectl` and the built-ins first, then kubectl's
    /// subcommands, then the resource kind after a verb that takes one.
    fn complete(&mut self, out: &mut Vec<u8>) {
        if self.cursor != self.line.len() {
            return;
        }
        let text: String = self.line.iter().collect();
        let words: Vec<&str> = text.split(' ').collect();
        let candidates: Vec<&str> = match words.as_slice() {
            [partial] => ["kubectl", "clear", "exit", "help"]
                .into_iter()
                .filter(|c| c.starts_with(partial))
                .collect(),
            ["kubectl", rest @ ..] if rest.iter().filter(|w| !w.is_empty()).count() <= 1 => {
                let partial = rest.last().copied().unwrap_or("");
                if rest.len() > 1 && rest[..rest.len() - 1].iter().any(|w| !w.is_empty()) {
                    return;
                }
                argv::ALLOWED
                    .iter()
                    .copied()
                    .filter(|c| c.starts_with(partial))
                    .collect()
            }
            // The resource kind after a verb that takes one (`kubectl get po<Tab>`).
            ["kubectl", verb, partial] if RESOURCE_VERBS.contains(verb) => RESOURCE_KINDS
                .iter()
                .copied()
                .filter(|c| c.starts_with(partial))
                .collect(),
            _ => return,
        };
        let partial = words.last().copied().unwrap_or("");
        match candidates.as_slice() {
            [] => {}
            [one] => {
                for c in one[partial.len()..].chars().chain(std::iter::once(' ')) {
                    self.line.push(c);
                }
                self.cursor = self.line.len();
                self.redraw(out);
            }
            many => {
                let common = many.iter().fold(many[0].to_owned(), |acc, c| {
                    acc.chars()
                        .zip(c.chars())
                        .take_while(|(a, b)| a == b)
                        .map(|(a, _)| a)
                        .collect()
                });
                if common.len() > partial.len() {
                    self.line.extend(common[partial.len()..].chars());
                    self.cursor = self.line.len();
                } else {
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(many.join("  ").as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                self.redraw(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(e: &mut Editor, s: &[u8]) -> (Option<Event>, String) {
        let mut out = Vec::new();
        let ev = e.feed(s, &mut out).map(|(e, _)| e);
        (ev, String::from_utf8_lossy(&out).into_owned())
    }

    fn line(e: &mut Editor, s: &[u8]) -> String {
        match typed(e, s).0 {
            Some(Event::Line(l)) => l,
            other => panic!("no line: {other:?}"),
        }
    }

    #[test]
    fn typing_editing_and_enter() {
        let mut e = Editor::new("c:ns$ ".into());
        assert_eq!(line(&mut e, b"kubectl get pods\r"), "kubectl get pods");
        // Left twice, insert, Home, delete, End.
        assert_eq!(line(&mut e, b"abd\x1b[D\x1b[Dx\r"), "axbd");
        assert_eq!(line(&mut e, b"abc\x01\x1b[3~\x05d\r"), "bcd");
        // Backspace, Ctrl-U, Ctrl-W, Ctrl-K.
        assert_eq!(line(&mut e, b"abc\x7f\r"), "ab");
        assert_eq!(line(&mut e, b"junk\x15ok\r"), "ok");
        assert_eq!(line(&mut e, b"get pods\x17ns\r"), "get ns");
        assert_eq!(line(&mut e, b"abcdef\x01\x06\x06\x0b\r"), "ab");
        // UTF-8, split between two inputs.
        let mut out = Vec::new();
        assert!(e.feed("é".as_bytes()[..1].as_ref(), &mut out).is_none());
        assert_eq!(line(&mut e, &"é\r".as_bytes()[1..]), "é");
        // \r\n is one Enter.
        let mut out = Vec::new();
        let (ev, rest) = e.feed(b"a\r\nb", &mut out).unwrap();
        assert_eq!(ev, Event::Line("a".into()));
        assert_eq!(rest, b"b");
    }

    #[test]
    fn history_up_and_down() {
        let mut e = Editor::new("$ ".into());
        line(&mut e, b"one\r");
        line(&mut e, b"two\r");
        line(&mut e, b"two\r"); // no duplicate
        assert_eq!(line(&mut e, b"\x1b[A\r"), "two");
        assert_eq!(line(&mut e, b"\x1b[A\x1b[A\r"), "one");
        assert_eq!(line(&mut e, b"dr\x1b[A\x1b[B\r"), "dr");
        // Application-mode arrows too.
        assert_eq!(line(&mut e, b"\x1bOA\r"), "dr");
    }

    #[test]
    fn ctrl_c_clears_and_ctrl_d_ends_on_an_empty_line() {
        let mut e = Editor::new("$ ".into());
        let (ev, out) = typed(&mut e, b"half\x03");
        assert_eq!(ev, None);
        assert!(out.contains("^C"));
        assert_eq!(line(&mut e, b"x\r"), "x");
        assert_eq!(typed(&mut e, b"ab\x01\x04").0, None); // deletes under the cursor
        assert_eq!(line(&mut e, b"\r"), "b");
        assert_eq!(typed(&mut e, b"\x04").0, Some(Event::Eof));
    }

    #[test]
    fn tab_completes_subcommands() {
        let mut e = Editor::new("$ ".into());
        assert_eq!(line(&mut e, b"ku\tge\tpods\r"), "kubectl get pods");
        assert_eq!(line(&mut e, b"kubectl ap\t\r"), "kubectl ap");
        let (_, out) = typed(&mut e, b"kubectl api-\t");
        assert!(out.contains("api-resources  api-versions"), "{out}");
        assert_eq!(line(&mut e, b"r\t\r"), "kubectl api-resources ");
        // Resource kinds after a verb that takes one.
        assert_eq!(
            line(&mut e, b"kubectl get dep\t-n apple\r"),
            "kubectl get deployments -n apple"
        );
        let (_, out) = typed(&mut e, b"kubectl describe pe\t\t");
        assert!(
            out.contains("persistentvolumeclaims  persistentvolumes"),
            "{out}"
        );
        assert_eq!(line(&mut e, b"\x15\r"), "");
        assert_eq!(line(&mut e, b"kubectl logs dep\t\r"), "kubectl logs dep");
        // Escape sequences we do not know are ignored.
        assert_eq!(line(&mut e, b"a\x1b[200~b\x1b[201~\r"), "ab");
    }

    /// What the program in the PTY writes until it ends (or is quiet for 20 s).
    async fn read_to_end(mut child: tokio::process::Child, pty: PtyMaster) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(20), pty.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let _ = child.wait().await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Defence in depth: even a command the filter would refuse cannot read Warden's files
    /// when Landlock is there.
    #[tokio::test]
    async fn confined_kubectl_cannot_read_other_files() {
        let Some(kubectl) = find_kubectl(None) else {
            eprintln!("no kubectl on PATH: skipped");
            return;
        };
        if landlock_abi().is_none() {
            eprintln!("no Landlock on this kernel: skipped");
            return;
        }
        let data = tempfile::tempdir().unwrap();
        let secret = data.path().join("secret.yaml");
        std::fs::write(
            &secret,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        )
        .unwrap();
        let session = tempfile::tempdir().unwrap();
        let own = session.path().join("mine.yaml");
        std::fs::copy(&secret, &own).unwrap();
        let c = Confinement::new(&kubectl, session.path(), 1);
        assert!(c.describe().starts_with("landlock"), "{}", c.describe());
        let run = |file: PathBuf| {
            let fd = c.ruleset().unwrap();
            let env = vec![
                (
                    "PATH".to_owned(),
                    kubectl.parent().unwrap().display().to_string(),
                ),
                ("HOME".to_owned(), session.path().display().to_string()),
            ];
            // `label --local` reads the file and never calls a server.
            let args: Vec<String> = [
                "label",
                "--local",
                "-o",
                "name",
                "-f",
                &file.display().to_string(),
                "a=b",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let (child, pty) =
                spawn_pty(&kubectl, &args, &env, session.path(), (80, 24), fd.as_ref()).unwrap();
            read_to_end(child, pty)
        };
        let inside = run(own).await;
        assert!(inside.contains("configmap/x"), "{inside}");
        let outside = run(secret).await;
        assert!(outside.contains("permission denied"), "{outside}");
    }

    /// Warden started with SIGINT and SIGQUIT ignored (in the background of a script, under
    /// `nohup`): the program in the PTY still has them at their default, so Ctrl-C ends it
    /// even before it installs a handler of its own.
    #[tokio::test]
    async fn the_program_in_the_pty_takes_ctrl_c_whatever_warden_ignores() {
        let cat = Path::new("/bin/cat");
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: changes this test process's dispositions, restored below; no handler runs.
        let before = unsafe {
            [
                libc::signal(libc::SIGINT, libc::SIG_IGN),
                libc::signal(libc::SIGQUIT, libc::SIG_IGN),
            ]
        };
        let spawned = spawn_pty(
            cat,
            &["/proc/self/status".to_owned()],
            &[],
            dir.path(),
            (80, 24),
            None,
        );
        // SAFETY: as above.
        unsafe {
            libc::signal(libc::SIGINT, before[0]);
            libc::signal(libc::SIGQUIT, before[1]);
        }
        let (child, pty) = spawned.unwrap();
        let status = read_to_end(child, pty).await;
        let ignored = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("no SigIgn in {status}"));
        for sig in [libc::SIGINT, libc::SIGQUIT] {
            assert_eq!(
                ignored & (1 << (sig - 1)),
                0,
                "signal {sig} ignored: {status}"
            );
        }
    }
}
