//! Privilege separation for a standalone server started as root.
//!
//! tftpd-hpa's listener stays root and forks an unprivileged, chrooted child per transfer, so
//! it can always re-read a root-only remap file on SIGHUP and remove its pid file from
//! `/run`. We serve every transfer from one process, which chroots and drops to `-u`; to keep
//! those two abilities without keeping privileges in the server, the process splits once at
//! startup, as OpenSSH's monitor does:
//!
//! - the **monitor** (the original process, root, single-threaded, no network) owns the pid
//!   file, waits for signals, re-reads the map file on SIGHUP and hands its text to the
//!   server over a socketpair, forwards SIGTERM/SIGINT, and exits with the server's status;
//!   it closes the listening sockets it inherited, so it has no network at all;
//! - the **server** (the child) chroots, drops privileges, and serves. It dies with the
//!   monitor (`PR_SET_PDEATHSIG`, set again after the privilege drop, which clears it).
//!
//! Frames on the socketpair: a big-endian `u32` length, then that many bytes of map-file
//! text. Length 0 means "reload without a map file" (the file cache is still cleared).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getppid};

use crate::setup::{MapFile, PidFile, SetupError, exit};
use crate::syslog::{Logger, Priority};

/// Which side of the split this process is.
#[derive(Debug)]
pub enum Role {
    /// The root monitor: call [`Monitor::run`].
    Monitor(Monitor),
    /// The server: read reloads from this end of the socketpair; call
    /// [`Server::follow_monitor`] once privileges are dropped.
    Server(Server),
}

/// The unprivileged half.
#[derive(Debug)]
pub struct Server {
    /// The server's end of the socketpair.
    pub channel: UnixStream,
    monitor: Pid,
}

impl Server {
    /// Dies with the monitor. Call after dropping privileges: the kernel clears the
    /// parent-death signal whenever credentials change.
    pub fn follow_monitor(&self) -> Result<(), SetupError> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(|e| SetupError {
            message: format!("prctl: {}", e.desc()),
            code: exit::OSERR,
        })?;
        if getppid() != self.monitor {
            // The monitor died before we could ask to follow it.
            std::process::exit(exit::OSERR);
        }
        Ok(())
    }
}

/// The root half.
#[derive(Debug)]
pub struct Monitor {
    child: Pid,
    channel: UnixStream,
}

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

/// Splits the process. Must be called while the process is single-threaded.
pub fn split() -> Result<Role, SetupError> {
    let fail = |what: &str, e: nix::Error| SetupError {
        message: format!("{what}: {}", e.desc()),
        code: exit::OSERR,
    };
    let (monitor_end, server_end) = UnixStream::pair().map_err(|e| SetupError {
        message: format!("socketpair: {e}"),
        code: exit::OSERR,
    })?;
    // Signals arriving between the fork and the monitor's sigwait must wait, not kill.
    let set = signals();
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .map_err(|e| fail("sigprocmask", e))?;
    let parent = nix::unistd::getpid();
    // SAFETY: the process is single-threaded here (no runtime, no watcher yet), so the child
    // may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| fail("fork", e))? {
        ForkResult::Child => {
            drop(monitor_end);
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)
                .map_err(|e| fail("sigprocmask", e))?;
            let server = Server {
                channel: server_end,
                monitor: parent,
            };
            server.follow_monitor()?;
            Ok(Role::Server(server))
        }
        ForkResult::Parent { child } => {
            drop(server_end);
            Ok(Role::Monitor(Monitor {
                child,
                channel: monitor_end,
            }))
        }
    }
}

impl Monitor {
    /// Runs until the server exits; returns the exit code to leave with. The pid file is
    /// removed when this returns (the monitor is still root).
    pub fn run(mut self, map: Option<MapFile>, pidfile: Option<PidFile>, log: &Logger) -> i32 {
        let set = signals();
        let code = loop {
            let Ok(sig) = set.wait() else { continue };
            match sig {
                Signal::SIGHUP => {
                    let text = match &map {
                        Some(m) => match m.read_text() {
                            Ok(t) => t,
                            Err(e) => {
                                log.log(Priority::Err, format_args!("{}", e.message));
                                continue;
                            }
                        },
                        None => String::new(),
                    };
                    if let Err(e) = send_frame(&mut self.channel, text.as_bytes()) {
                        log.log(
                            Priority::Err,
                            format_args!("cannot pass reload to server: {e}"),
                        );
                    }
                }
                Signal::SIGTERM | Signal::SIGINT => {
                    let _ = kill(self.child, Signal::SIGTERM);
                }
                Signal::SIGCHLD => match waitpid(self.child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => break code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                    Ok(_) => {}
                    Err(_) => break exit::OSERR,
                },
                _ => {}
            }
        };
        drop(pidfile);
        code
    }
}

/// Writes one reload frame.
pub fn send_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "map file too large"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(payload)
}

/// Reads one reload frame (blocking); `None` at end of stream. Frames over 16 MiB are refused.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > 16 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "reload frame too large",
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut wire = Vec::new();
        send_frame(&mut wire, b"r ^a b\n").unwrap();
        send_frame(&mut wire, b"").unwrap();
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"r ^a b\n");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn oversized_or_truncated_frames_are_errors() {
        let mut r = &[0xff, 0xff, 0xff, 0xff][..];
        assert!(read_frame(&mut r).is_err());
        let mut r = &[0, 0, 0, 5, b'a'][..];
        assert!(read_frame(&mut r).is_err());
    }
}
