//! Process setup between parsing flags and serving: listening sockets, the remap file,
//! daemonizing, the pid file, chroot and dropping privileges — each step with tftpd-hpa's
//! message and exit code when it fails. Everything here runs before the async runtime
//! starts, so credential changes apply to a single-threaded process.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::cli::{BindHost, Config, Family};
use crate::remap::RemapRules;
use crate::server::net::bind_socket;

/// sysexits.h codes tftpd-hpa exits with.
pub mod exit {
    /// Bad command line.
    pub const USAGE: i32 = 64;
    /// An input file (map file, directory) cannot be opened.
    pub const NOINPUT: i32 = 66;
    /// The `-u` user does not exist.
    pub const NOUSER: i32 = 67;
    /// A system call failed (bind, chroot, setuid).
    pub const OSERR: i32 = 71;
    /// The map file has an error.
    pub const CONFIG: i32 = 78;
}

/// A setup step failed: log `message` and exit with `code`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SetupError {
    /// What to log (tftpd-hpa's wording where it has one).
    pub message: String,
    /// Process exit code.
    pub code: i32,
}

impl SetupError {
    fn new(code: i32, message: impl Into<String>) -> SetupError {
        SetupError {
            message: message.into(),
            code,
        }
    }
}

fn m(e: &io::Error) -> String {
    crate::server::strerror(e)
}

/// Binds the standalone listening sockets for `-a` / `-4` / `-6`. Returns the sockets and
/// warnings to log (an unavailable IPv6 stack is a warning when both families were asked).
pub fn bind_listeners(
    config: &Config,
) -> Result<(Vec<std::net::UdpSocket>, Vec<String>), SetupError> {
    let port = config
        .address
        .resolve_port()
        .map_err(|e| SetupError::new(e.exit_code, e.message))?;
    let mut want_v4 = config.family != Family::V6Only;
    let mut want_v6 = config.family != Family::V4Only;
    let (mut v4, mut v6): (Option<IpAddr>, Option<IpAddr>) = (
        Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
    );
    match &config.address.host {
        None => {}
        Some(BindHost::Ip(ip @ IpAddr::V4(_))) => {
            v4 = Some(*ip);
            want_v6 = false;
        }
        Some(BindHost::Ip(ip @ IpAddr::V6(_))) => {
            v6 = Some(*ip);
            want_v4 = false;
        }
        Some(BindHost::Name(name)) => {
            let addrs: Vec<SocketAddr> = (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| {
                    SetupError::new(
                        exit::NOINPUT,
                        format!("cannot resolve local bind address: {name}, {}", m(&e)),
                    )
                })?
                .collect();
            v4 = addrs.iter().map(SocketAddr::ip).find(IpAddr::is_ipv4);
            v6 = addrs.iter().map(SocketAddr::ip).find(IpAddr::is_ipv6);
            want_v4 &= v4.is_some();
            want_v6 &= v6.is_some();
            if !want_v4 && !want_v6 {
                return Err(SetupError::new(
                    exit::NOINPUT,
                    format!("cannot resolve local bind address: {name}"),
                ));
            }
        }
    }
    let mut sockets = Vec::new();
    let mut warnings = Vec::new();
    if want_v6 && let Some(ip) = v6 {
        match bind_socket(SocketAddr::new(ip, port)) {
            Ok(s) => sockets.push(s),
            // Both families asked for and no IPv6 here: carry on with IPv4, as tftpd-hpa does.
            Err(e) if want_v4 && config.address.host.is_none() => {
                warnings.push(format!("cannot open IPv6 socket, disable IPv6: {}", m(&e)))
            }
            Err(e) => {
                return Err(SetupError::new(
                    exit::OSERR,
                    format!("cannot bind to local IPv6 socket: {}", m(&e)),
                ));
            }
        }
    }
    if want_v4 && let Some(ip) = v4 {
        let s = bind_socket(SocketAddr::new(ip, port)).map_err(|e| {
            SetupError::new(
                exit::OSERR,
                format!("cannot bind to local IPv4 socket: {}", m(&e)),
            )
        })?;
        sockets.push(s);
    }
    Ok((sockets, warnings))
}

/// inetd mode: the request socket is standard input.
pub fn inetd_socket() -> Result<std::net::UdpSocket, SetupError> {
    // SAFETY: inetd hands us fd 0 as the datagram socket; nothing else in this process owns
    // or closes it, and it is taken exactly once.
    let fd = unsafe { OwnedFd::from_raw_fd(0) };
    let sock = std::net::UdpSocket::from(fd);
    sock.local_addr().map_err(|e| {
        SetupError::new(
            exit::OSERR,
            format!(
                "standard input is not a UDP socket (run with -l or -L): {}",
                m(&e)
            ),
        )
    })?;
    Ok(sock)
}

/// The remap file, and how to read it again on SIGHUP after a chroot: the directory that
/// holds it stays open, and the file is re-opened relative to it.
#[derive(Debug)]
pub struct MapFile {
    dir: OwnedFd,
    name: CString,
    display: PathBuf,
}

impl MapFile {
    /// Opens and parses the map file (`-m`).
    pub fn load(path: &Path) -> Result<(MapFile, RemapRules), SetupError> {
        let cannot = |e: &io::Error| {
            SetupError::new(
                exit::NOINPUT,
                format!("Cannot open map file: {}: {}", path.display(), m(e)),
            )
        };
        let (dir, name) = dir_and_name(path).map_err(|e| cannot(&e))?;
        let map = MapFile {
            dir,
            name,
            display: path.to_path_buf(),
        };
        let rules = map.reload()?;
        Ok((map, rules))
    }

    /// Reads and parses the file again.
    pub fn reload(&self) -> Result<RemapRules, SetupError> {
        parse_rules(&self.read_text()?)
    }

    /// Reads the file's text again (the privileged monitor does this for the server).
    pub fn read_text(&self) -> Result<String, SetupError> {
        let cannot = |e: &io::Error| {
            SetupError::new(
                exit::NOINPUT,
                format!("Cannot open map file: {}: {}", self.display.display(), m(e)),
            )
        };
        // SAFETY: `dir` is an open directory descriptor owned by self; `name` is a valid
        // NUL-terminated single path component.
        let fd = unsafe {
            libc::openat(
                self.dir.as_fd().as_raw_fd(),
                self.name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(cannot(&io::Error::last_os_error()));
        }
        // SAFETY: openat just returned this descriptor to us.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| cannot(&e))?;
        Ok(text)
    }
}

/// Parses remap rules, with tftpd-hpa's exit code for a bad file.
pub fn parse_rules(text: &str) -> Result<RemapRules, SetupError> {
    RemapRules::parse(text).map_err(|e| SetupError::new(exit::CONFIG, e.to_string()))
}

/// Opens the directory holding `path` and returns it with the file's name, so the file can
/// still be reached (`openat`, `unlinkat`) after the process chroots.
fn dir_and_name(path: &Path) -> io::Result<(OwnedFd, CString)> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = File::open(parent)?;
    let name = path
        .file_name()
        .map(OsStr::as_bytes)
        .and_then(|n| CString::new(n).ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok((dir.into(), name))
}

/// The user transfers run as, looked up before any chroot hides `/etc/passwd`.
#[derive(Debug)]
pub struct RunAs {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: Vec<nix::unistd::Gid>,
}

impl RunAs {
    /// Looks up `user` and its groups ("no user %s" and exit 67 when it does not exist).
    pub fn lookup(user: &str) -> Result<RunAs, SetupError> {
        let no_user = || SetupError::new(exit::NOUSER, format!("no user {user}"));
        let pw = nix::unistd::User::from_name(user)
            .map_err(|_| no_user())?
            .ok_or_else(no_user)?;
        let cname = CString::new(user).map_err(|_| no_user())?;
        let groups = nix::unistd::getgrouplist(&cname, pw.gid).map_err(|e| {
            SetupError::new(
                exit::OSERR,
                format!("cannot set groups for user {user}: {e}"),
            )
        })?;
        Ok(RunAs {
            uid: pw.uid,
            gid: pw.gid,
            groups,
        })
    }

    /// Drops to this user (groups, then gid, then uid), for good.
    pub fn apply(&self) -> Result<(), SetupError> {
        let fail = |what: &str, e: nix::Error| {
            SetupError::new(exit::OSERR, format!("{what}: {}", e.desc()))
        };
        nix::unistd::setgroups(&self.groups).map_err(|e| fail("cannot set groups for user", e))?;
        nix::unistd::setresgid(self.gid, self.gid, self.gid)
            .map_err(|e| fail("cannot drop privileges", e))?;
        nix::unistd::setresuid(self.uid, self.uid, self.uid)
            .map_err(|e| fail("cannot drop privileges", e))?;
        Ok(())
    }
}

/// Confines the whole process to `dir` (`-s` when started as root).
pub fn chroot(dir: &Path) -> Result<(), SetupError> {
    nix::unistd::chroot(dir)
        .and_then(|()| nix::unistd::chdir("/"))
        .map_err(|e| SetupError::new(exit::OSERR, format!("chroot: {}", e.desc())))
}

/// True when running as root (and so able to chroot and change user).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `-l`: detach from the terminal (fork, setsid, stdio to /dev/null). Stays in the current
/// directory when `keep_dir` (tftpd-hpa keeps it with `-s`).
pub fn daemonize(keep_dir: bool) -> Result<(), SetupError> {
    nix::unistd::daemon(keep_dir, false)
        .map_err(|e| SetupError::new(exit::OSERR, format!("daemon: {}", e.desc())))
}

/// The pid file (`-P`), removed on drop. Its directory stays open so removal still works
/// after the process chroots (tftpd-hpa's listener never chroots; ours does).
#[derive(Debug)]
pub struct PidFile {
    dir: OwnedFd,
    name: CString,
}

impl PidFile {
    /// Writes our pid to `path`.
    pub fn write(path: &Path) -> Result<PidFile, SetupError> {
        let fail = |e: &io::Error| {
            SetupError::new(
                exit::NOINPUT,
                format!("cannot open pid file {}: {}", path.display(), m(e)),
            )
        };
        let (dir, name) = dir_and_name(path).map_err(|e| fail(&e))?;
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| fail(&e))?;
        Ok(PidFile { dir, name })
    }
}

impl PidFile {
    /// In the server half of a split process: the monitor owns the pid file and removes it,
    /// so this process must not.
    pub fn leave_to_monitor(self) {
        std::mem::forget(self);
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // SAFETY: `dir` is an open directory descriptor we own; `name` is one NUL-terminated
        // path component.
        unsafe {
            libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), 0);
        }
    }
}

/// Sets the process umask (`-U`, or 0 as tftpd-hpa does unless `-p`).
pub fn set_umask(mask: u32) {
    // SAFETY: umask(2) cannot fail and only changes this process's file creation mask.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cli::{BindAddress, PortSpec};

    fn cfg(host: Option<BindHost>, family: Family) -> Config {
        Config {
            family,
            address: BindAddress {
                host,
                port: Some(PortSpec::Number(0)),
            },
            ..Config::default()
        }
    }

    #[test]
    fn binds_loopback_v4_only_for_a_v4_literal() {
        let c = cfg(
            Some(BindHost::Ip("127.0.0.1".parse().unwrap())),
            Family::Any,
        );
        let (socks, warnings) = bind_listeners(&c).unwrap();
        assert_eq!(socks.len(), 1);
        assert!(socks[0].local_addr().unwrap().is_ipv4());
        assert!(warnings.is_empty());
    }

    #[test]
    fn binds_v6_literal_only() {
        let c = cfg(Some(BindHost::Ip("::1".parse().unwrap())), Family::Any);
        match bind_listeners(&c) {
            Ok((socks, _)) => {
                assert_eq!(socks.len(), 1);
                assert!(socks[0].local_addr().unwrap().is_ipv6());
            }
            // A machine without IPv6 loopback: the error must say so, with tftpd-hpa's words.
            Err(e) => assert!(e.message.starts_with("cannot bind to local IPv6 socket")),
        }
    }

    #[test]
    fn resolves_localhost_by_name() {
        let c = cfg(Some(BindHost::Name("localhost".into())), Family::V4Only);
        let (socks, _) = bind_listeners(&c).unwrap();
        assert_eq!(
            socks[0].local_addr().unwrap().ip(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn map_file_errors_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let missing = MapFile::load(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.code, exit::NOINPUT);
        assert!(missing.message.starts_with("Cannot open map file: "));
        let path = dir.path().join("rules");
        std::fs::write(&path, "r ^a b\n").unwrap();
        let (map, rules) = MapFile::load(&path).unwrap();
        assert_eq!(rules.len(), 1);
        std::fs::write(&path, "r ^a b\nr ^c d\n").unwrap();
        assert_eq!(map.reload().unwrap().len(), 2);
        std::fs::write(&path, "q ^a b\n").unwrap();
        assert_eq!(map.reload().unwrap_err().code, exit::CONFIG);
    }

    #[test]
    fn unknown_user_exits_67() {
        let e = RunAs::lookup("no-such-user-airlift").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (67, "no user no-such-user-airlift")
        );
        assert!(RunAs::lookup("root").is_ok());
    }

    #[test]
    fn pid_file_is_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tftpd.pid");
        {
            let _pid = PidFile::write(&p).unwrap();
            let text = std::fs::read_to_string(&p).unwrap();
            assert_eq!(text.trim(), std::process::id().to_string());
        }
        assert!(!p.exists());
    }
}
