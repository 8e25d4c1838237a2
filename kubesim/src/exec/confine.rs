//! Confinement of pod processes (`Options::confine`, on in Warden's demo): Landlock, built per
//! pod, lets a container or exec process read and run the system's programs and libraries,
//! read a few files of `/etc` and use the harmless devices, and write only its pod's
//! directory; no TCP (Landlock ABI 4) and no signals or abstract sockets outside its own
//! processes (ABI 6). Every other path on the host (the embedding application's data
//! directory, its database, `/tmp`, `/home`, `/root`, `/var`) cannot be opened. `/proc` is left
//! out on purpose: Landlock's ptrace scoping does not stop a same-user (or root) process from
//! reading another process's `/proc/<pid>/environ` (checked on Linux 6.18), so `ps` does not
//! work in a confined pod. `/dev/pts` is left out too (other sessions' terminals); a process
//! keeps the terminal it was given. With or without Landlock, the process starts with a
//! cleared environment, in its pod's directory, and inherits no open file descriptor beyond
//! stdio.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How pod processes are confined.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Paths the processes must never read (say, a data directory and a database file). A
    /// system directory that contains one of them is left out of what Landlock allows.
    pub protect: Vec<PathBuf>,
}

/// Programs and libraries: read and execute.
const SYSTEM_EXEC: &[&str] = &[
    "/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Read only: what shells and the common tools read at start (users, name resolution, the
/// dynamic linker's cache, terminfo, time zone).
const SYSTEM_READ: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/terminfo",
    "/etc/profile",
    "/etc/bash.bashrc",
    "/etc/inputrc",
    "/etc/shells",
    "/etc/os-release",
    "/etc/debian_version",
];

/// Devices: read and write (and terminal ioctls on a reopened `/dev/tty`, the process's own
/// controlling terminal).
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

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

/// What the simulator says once at start about the confinement it can give.
pub fn describe() -> String {
    match landlock_abi() {
        None => "pod processes are NOT confined by Landlock (not available on this kernel): cleared environment, own directory and no inherited descriptors only; they can read whatever this process's user can".into(),
        Some(v) => format!("pod processes are confined by Landlock (ABI {v}): files outside the system directories and their pod's directory cannot be opened{}{}",
            if v >= 4 { ", no TCP" } else { "" },
            if v >= 6 { ", no signals outside the pod" } else { "" }),
    }
}

/// A pod's sandbox: the Landlock ruleset its processes enter before `exec` (`None` when the
/// kernel has no Landlock: the other measures still apply).
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub ruleset: Option<Arc<OwnedFd>>,
}

impl Sandbox {
    /// The sandbox of one pod whose directory is `pod_dir`.
    pub fn for_pod(c: &Confinement, pod_dir: &Path) -> Sandbox {
        let ruleset = match landlock_abi() {
            None => None,
            Some(_) => match ruleset(c, pod_dir) {
                Ok(r) => r.map(Arc::new),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build the Landlock ruleset of a pod");
                    None
                }
            },
        };
        Sandbox { ruleset }
    }

    /// The raw descriptor for `pre_exec` (-1: none).
    pub fn raw(&self) -> i32 {
        self.ruleset.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1)
    }
}

/// True when `allowed` is, or contains, one of the protected paths.
fn covers_protected(c: &Confinement, allowed: &Path) -> bool {
    let allowed = std::fs::canonicalize(allowed).unwrap_or_else(|_| allowed.to_owned());
    c.protect.iter().any(|p| {
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        p.starts_with(&allowed)
    })
}

fn ruleset(c: &Confinement, pod_dir: &Path) -> Result<Option<OwnedFd>, String> {
    use landlock::{
        Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
        Scope, ABI,
    };
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
    let mut add = |p: &Path, access: landlock::BitFlags<AccessFs>| -> Result<(), String> {
        if !p.exists() {
            return Ok(());
        }
        if covers_protected(c, p) {
            tracing::warn!(path = %p.display(), "a protected path lies beneath it: pod processes may not read it");
            return Ok(());
        }
        let fd = PathFd::new(p).map_err(|e| err(&e))?;
        // A file gets only the rights that apply to files.
        let access = if p.is_dir() {
            access
        } else {
            access & AccessFs::from_file(abi)
        };
        (&mut r)
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| err(&e))?;
        Ok(())
    };
    for p in SYSTEM_EXEC {
        add(
            Path::new(p),
            AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute,
        )?;
    }
    for p in SYSTEM_READ {
        add(Path::new(p), AccessFs::ReadFile | AccessFs::ReadDir)?;
    }
    for p in DEVICES {
        add(
            Path::new(p),
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
        )?;
    }
    add(pod_dir, AccessFs::from_all(abi))?;
    Ok(r.into())
}

/// Between fork and exec (async-signal-safe calls only): enter the sandbox and mark every
/// inherited descriptor above stdio close-on-exec.
pub fn enter(ruleset: i32) -> std::io::Result<()> {
    // close_range(3, ~0, CLOSE_RANGE_CLOEXEC); kernels before 5.11 lack it (then only the
    // descriptors opened without O_CLOEXEC would leak, and Rust opens none of those).
    // SAFETY: a system call with integer arguments.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32);
    }
    if ruleset >= 0 {
        // SAFETY: prctl and landlock_restrict_self take integer arguments; the ruleset
        // descriptor was created before the fork and stays open in the parent.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
