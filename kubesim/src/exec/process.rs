//! Spawning container processes: with pipes, or under a pseudo-terminal that becomes the
//! controlling terminal of a new session. Every process leads its own process group so the
//! whole tree can be killed with the pod.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;

use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};

use super::confine::{self, Sandbox};

/// Environment, working directory and sandbox of a container.
#[derive(Debug, Clone, Default)]
pub struct ProcEnv {
    pub dir: std::path::PathBuf,
    pub env: Vec<(String, String)>,
    /// `Some` when the simulator confines pod processes (`Options::confine`).
    pub sandbox: Option<Sandbox>,
}

fn base_command(argv: &[String], penv: &ProcEnv) -> io::Result<Command> {
    let prog = argv
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(prog);
    cmd.args(&argv[1..]);
    cmd.current_dir(&penv.dir);
    cmd.env_clear();
    cmd.env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    cmd.env("HOME", &penv.dir);
    if penv.sandbox.is_some() {
        cmd.env("TMPDIR", &penv.dir);
    }
    for (k, v) in &penv.env {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(false);
    Ok(cmd)
}

/// Enter the sandbox last, after every other `pre_exec` step.
fn confine_command(cmd: &mut Command, penv: &ProcEnv) {
    if let Some(sb) = &penv.sandbox {
        let ruleset = sb.raw();
        // SAFETY: `confine::enter` makes only async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || confine::enter(ruleset));
        }
    }
}

/// Spawn with pipes, in a new process group.
pub fn spawn_piped(argv: &[String], penv: &ProcEnv, stdin: bool) -> io::Result<Child> {
    let mut cmd = base_command(argv, penv)?;
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped());
    cmd.stderr(Stdio::piped());
    cmd.process_group(0);
    confine_command(&mut cmd, penv);
    cmd.spawn()
}

/// A pseudo-terminal master, readable and writable asynchronously.
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
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
                // EIO: the slave side is closed (every process holding it exited).
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
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

    /// Set the terminal size (TIOCSWINSZ); the foreground process gets SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
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

/// Spawn under a new pseudo-terminal (controlling terminal of a new session).
pub fn spawn_pty(
    argv: &[String],
    penv: &ProcEnv,
    cols: u16,
    rows: u16,
) -> io::Result<(Child, PtyMaster)> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // Both ends are opened close-on-exec: a process spawned at the same moment by another
    // thread must not inherit them (a stray holder of the slave keeps the terminal open after
    // its shell exits).
    use nix::fcntl::OFlag;
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    let pt = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(io::Error::from)?;
    nix::pty::grantpt(&pt).map_err(io::Error::from)?;
    nix::pty::unlockpt(&pt).map_err(io::Error::from)?;
    let name = nix::pty::ptsname_r(&pt).map_err(io::Error::from)?;
    // SAFETY: the fd comes from `into_raw_fd`, so we own it exclusively.
    let master = unsafe { OwnedFd::from_raw_fd(pt.into_raw_fd()) };
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY) // std adds O_CLOEXEC
        .open(&name)?
        .into();
    // SAFETY: fcntl and TIOCSWINSZ on an fd we own; `ws` outlives the call.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut cmd = base_command(argv, penv)?;
    if !penv.env.iter().any(|(k, _)| k == "TERM") {
        cmd.env("TERM", "xterm");
    }
    cmd.stdin(Stdio::from(slave.try_clone()?));
    cmd.stdout(Stdio::from(slave.try_clone()?));
    cmd.stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe; run between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    confine_command(&mut cmd, penv);
    let child = cmd.spawn()?;
    drop(cmd);
    // SAFETY: `master` is an fd we own exclusively; nothing else registers or closes it.
    let fd = unsafe { AsyncFd::register(master) }.map_err(io::Error::from)?;
    Ok((child, PtyMaster { fd }))
}

/// SIGKILL a whole process group.
pub fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// The exit code a shell would report (128+signal for signals).
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Create a directory (and parents).
pub fn ensure_dir(p: &Path) -> io::Result<()> {
    std::fs::create_dir_all(p)
}
