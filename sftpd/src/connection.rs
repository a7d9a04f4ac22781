//! One SSH connection, in its own process (the listener re-executes sftpd per connection, as
//! sshd does): authentication with sshd's rules and log lines, then `chroot` and the switch
//! to the user's uid/gid, then SFTP channels.
//!
//! The process reports to the listener through a pipe: `A` the moment authentication
//! succeeds (its MaxStartups slot is freed), then at exit one of `F` (a method failed),
//! `I` (invalid user), `N` (no method tried), `G` (LoginGraceTime expired), used for
//! per-source penalties.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use russh::keys::PublicKey;
use russh::server::{
    Auth, ChannelOpenHandle, Handle, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelWriteHalf, Disconnect};

use crate::chroot;
use crate::config::{self, Config, ConnectionSpec, Effective};
use crate::log::Log;
use crate::passwd;
use crate::pump::{self, Input};
use crate::server_args::{self, ServerArgs};
use crate::sftp_server::{Options, SessionInfo, SftpServer, SystemNames};
use crate::users::{self, Account, AccountKind, UsersFile};
use crate::vfs::Root;

/// Report bytes written to the listener's pipe.
pub mod report {
    /// Authenticated: release the MaxStartups slot.
    pub const AUTHENTICATED: u8 = b'A';
    /// A method failed and none succeeded.
    pub const AUTH_FAIL: u8 = b'F';
    /// The user does not exist or is not allowed.
    pub const INVALID_USER: u8 = b'I';
    /// No method was tried.
    pub const NO_AUTH: u8 = b'N';
    /// LoginGraceTime expired.
    pub const GRACE: u8 = b'G';
}

/// What every handler callback of this connection needs.
#[derive(Debug)]
pub struct Shared {
    /// The parsed configuration.
    pub config: Config,
    /// sshd's lines.
    pub log: Log,
    /// Virtual users (`UsersFile`).
    pub users_file: Option<UsersFile>,
    /// `UsersFile` path, for "found at" log lines.
    pub users_file_path: Option<String>,
    /// Client address.
    pub peer: SocketAddr,
    /// Address the client connected to.
    pub local: SocketAddr,
    /// Running as root: chroot and switch uid/gid after authentication.
    pub privileged: bool,
    /// `PermitRootLogin`.
    pub root_login: crate::setup::RootLogin,
    /// The listener's pipe.
    pub status: Mutex<Option<File>>,
    /// Executor threads of SFTP sessions, joined before the process exits.
    pub sessions: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Shared {
    fn send_status(&self, byte: u8) {
        let mut guard = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = guard.as_mut() {
            let _ = f.write_all(&[byte]);
        }
    }

    /// Writes the final outcome byte and closes the pipe.
    pub fn finish_status(&self, byte: u8) {
        self.send_status(byte);
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Waits for every SFTP executor to write its last log lines.
    pub fn join_sessions(&self) {
        let threads =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
    }

    fn addr(&self) -> String {
        self.peer.ip().to_string()
    }
}

/// The user an authentication attempt is for.
#[derive(Debug)]
struct Candidate {
    name: String,
    account: Option<Account>,
    eff: Effective,
    /// Exists and is allowed to log in.
    valid: bool,
}

/// After authentication.
#[derive(Debug)]
struct Authed {
    account: Account,
    eff: Effective,
    root: Option<Root>,
    home: String,
}

#[derive(Debug)]
struct Chan {
    id: u32,
    write: Option<ChannelWriteHalf<Msg>>,
    input: Option<Input>,
    server_closed: bool,
}

/// The russh handler of one connection.
#[derive(Debug)]
pub struct Connection {
    shared: Arc<Shared>,
    handle: Arc<OnceLock<Handle>>,
    candidate: Option<Candidate>,
    failures: u32,
    tried_method: bool,
    authed: Option<Authed>,
    /// Set by [`Connection::authenticated`] for the caller's grace timer.
    auth_done: Arc<tokio::sync::Notify>,
    outcome: Arc<Mutex<Outcome>>,
    channels: HashMap<ChannelId, Chan>,
    next_session_id: u32,
    /// Key matched when the probe was accepted: (path, line).
    key_match: Option<(PublicKey, String)>,
}

/// How authentication ended, for the last log lines and the report byte.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// User name tried last.
    pub user: Option<String>,
    /// That user was invalid.
    pub invalid: bool,
    /// Authenticated as this user.
    pub authenticated: Option<String>,
    /// A real method (not `none`) was tried.
    pub tried: bool,
    /// A method failed.
    pub failed: bool,
}

/// The caller's view of a running [`Connection`].
#[derive(Debug)]
pub struct Watch {
    /// The session handle, set once russh has started the session.
    pub handle: Arc<OnceLock<Handle>>,
    /// Notified when authentication succeeds (stops the LoginGraceTime timer).
    pub auth_done: Arc<tokio::sync::Notify>,
    /// How authentication went.
    pub outcome: Arc<Mutex<Outcome>>,
}

/// Errors that end the connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// russh's own error.
    #[error(transparent)]
    Ssh(#[from] russh::Error),
    /// The session cannot start (chroot refused, privileges, …); already logged.
    #[error("{0}")]
    Fatal(String),
}

impl Connection {
    /// A handler for a new connection, and what the caller watches it through.
    pub fn new(shared: Arc<Shared>) -> (Connection, Watch) {
        let watch = Watch {
            handle: Arc::new(OnceLock::new()),
            auth_done: Arc::new(tokio::sync::Notify::new()),
            outcome: Arc::new(Mutex::new(Outcome::default())),
        };
        let conn = Connection {
            shared,
            handle: Arc::clone(&watch.handle),
            candidate: None,
            failures: 0,
            tried_method: false,
            authed: None,
            auth_done: Arc::clone(&watch.auth_done),
            outcome: Arc::clone(&watch.outcome),
            channels: HashMap::new(),
            next_session_id: 0,
            key_match: None,
        };
        (conn, watch)
    }

    fn log(&self) -> &Log {
        &self.shared.log
    }

    fn port(&self) -> u16 {
        self.shared.peer.port()
    }

    fn set_outcome(&self, f: impl FnOnce(&mut Outcome)) {
        f(&mut self.outcome.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Looks the user up once per name, with sshd's checks and log lines.
    fn candidate(&mut self, name: &str) -> &Candidate {
        if self.candidate.as_ref().is_none_or(|c| c.name != name) {
            let c = self.lookup(name);
            self.set_outcome(|o| {
                o.user = Some(c.name.clone());
                o.invalid = !c.valid;
            });
            self.candidate = Some(c);
        }
        match &self.candidate {
            Some(c) => c,
            None => unreachable!("set above"),
        }
    }

    fn lookup(&self, name: &str) -> Candidate {
        let s = &self.shared;
        let (addr, port) = (s.addr(), self.port());
        let account = match s.users_file.as_ref().and_then(|f| f.get(name)) {
            Some(a) => Some(a.clone()),
            None => match users::system_account(name) {
                Ok(a) => a,
                Err(e) => {
                    s.log.error(format_args!("{e}"));
                    None
                }
            },
        };
        let groups = account
            .as_ref()
            .map(|a| a.groups.clone())
            .unwrap_or_default();
        let spec = ConnectionSpec {
            user: name,
            groups: &groups,
            address: s.peer.ip(),
            local_port: s.local.port(),
        };
        let eff = s.config.effective(&spec);
        let Some(account) = account else {
            s.log
                .info(format_args!("Invalid user {name} from {addr} port {port}"));
            return Candidate {
                name: name.to_owned(),
                account: None,
                eff,
                valid: false,
            };
        };
        let mut valid = true;
        if let Err(reason) = config::user_allowed(&eff, name, &groups, s.peer.ip()) {
            s.log.info(format_args!("{reason}"));
            valid = false;
        } else if account.locked {
            s.log.info(format_args!(
                "User {name} not allowed because account is locked"
            ));
            valid = false;
        } else if account.expired_now() {
            s.log.info(format_args!("User {name} account has expired"));
            valid = false;
        }
        Candidate {
            name: name.to_owned(),
            account: Some(account),
            eff,
            valid,
        }
    }

    /// sshd's `auth_log` line for a failure, and MaxAuthTries.
    async fn failed(&mut self, method: &str, user: &str, extra: &str) {
        self.failures += 1;
        self.set_outcome(|o| o.failed = true);
        let Some(c) = &self.candidate else { return };
        let invalid = if c.valid { "" } else { "invalid user " };
        let max = c.eff.max_auth_tries;
        let (addr, port) = (self.shared.addr(), self.port());
        let line =
            format!("Failed {method} for {invalid}{user} from {addr} port {port} ssh2{extra}");
        if method == "password" || !c.valid || self.failures >= max / 2 {
            self.log().info(format_args!("{line}"));
        } else {
            self.log().verbose(format_args!("{line}"));
        }
        if self.failures >= max {
            self.log().info(format_args!(
                "maximum authentication attempts exceeded for {invalid}{user} from {addr} port {port} ssh2"
            ));
            if let Some(h) = self.handle.get() {
                let _ = h
                    .disconnect(
                        Disconnect::NoMoreAuthMethodsAvailable,
                        "Too many authentication failures".into(),
                        String::new(),
                    )
                    .await;
            }
        }
    }

    /// The methods the client may still try.
    fn methods(&self) -> russh::MethodSet {
        let eff = match &self.candidate {
            Some(c) => &c.eff,
            None => return russh::MethodSet::empty(),
        };
        let mut m = Vec::new();
        if eff.password_authentication {
            m.push(russh::MethodKind::Password);
        }
        if eff.pubkey_authentication {
            m.push(russh::MethodKind::PublicKey);
        }
        russh::MethodSet::from(m.as_slice())
    }

    fn accepted(&mut self, method: &str, user: &str, extra: &str) {
        let (addr, port) = (self.shared.addr(), self.port());
        self.log().info(format_args!(
            "Accepted {method} for {user} from {addr} port {port} ssh2{extra}"
        ));
    }

    /// Key files and inline keys of the candidate; the match as `(path, line)` text.
    fn find_key(&self, key: &PublicKey) -> Option<String> {
        let c = self.candidate.as_ref()?;
        let account = c.account.as_ref()?;
        if let Some(pos) = account
            .keys
            .iter()
            .position(|k| k.key_data() == key.key_data())
        {
            let file = self
                .shared
                .users_file_path
                .as_deref()
                .unwrap_or("UsersFile");
            return Some(format!("{file} key {}", pos + 1));
        }
        if account.kind == AccountKind::Virtual {
            return None;
        }
        let paths = match c
            .eff
            .authorized_keys_for(&account.home, &account.name, account.uid)
        {
            Ok(p) => p,
            Err(e) => {
                self.log().error(format_args!("AuthorizedKeysFile: {e}"));
                return None;
            }
        };
        let mut files = Vec::new();
        for p in paths {
            let path = std::path::Path::new(&p);
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(_) => continue,
            };
            if let Err(why) =
                users::check_key_file_modes(path, account.uid, std::path::Path::new(&account.home))
            {
                self.log()
                    .info(format_args!("Authentication refused: {why}"));
                continue;
            }
            files.push((p, text));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let m = users::find_key(&files, key, self.shared.peer.ip(), now)?;
        if let Some(cmd) = m.options.command.as_deref()
            && !is_internal_sftp(cmd)
        {
            self.log().info(format_args!(
                "Authentication refused: key at {}:{} forces command \"{cmd}\"",
                m.path, m.line
            ));
            return None;
        }
        Some(format!("{}:{}", m.path, m.line))
    }

    /// Authentication succeeded: chroot, switch user, report to the listener.
    fn authenticated(&mut self) -> Result<(), ConnError> {
        let Some(c) = self.candidate.take() else {
            return Err(ConnError::Fatal("no user".into()));
        };
        let Some(account) = c.account else {
            return Err(ConnError::Fatal("no account".into()));
        };
        let eff = c.eff;
        let s = Arc::clone(&self.shared);
        s.send_status(report::AUTHENTICATED);
        self.auth_done.notify_one();
        self.set_outcome(|o| o.authenticated = Some(account.name.clone()));
        let chroot_dir = match &account.chroot {
            Some(t) => Some(
                config::expand_tokens(t, &account.home, &account.name, account.uid)
                    .map_err(|e| self.fatal(format!("ChrootDirectory: {e}")))?,
            ),
            None => match eff.chroot_for(&account.home, &account.name, account.uid) {
                Some(Ok(p)) if p != "none" => Some(p),
                Some(Ok(_)) | None => None,
                Some(Err(e)) => return Err(self.fatal(format!("ChrootDirectory: {e}"))),
            },
        };
        let euid = nix::unistd::geteuid().as_raw();
        let (root, home) = match &chroot_dir {
            Some(dir) => {
                let mut stat = |p: &str| {
                    chroot::std_stat(p).map(|mut st| {
                        // Unprivileged (tests, labs): the server's own directories count as
                        // root's, since only they can be trusted by this process.
                        if !s.privileged && st.uid == euid {
                            st.uid = 0;
                        }
                        st
                    })
                };
                if let Err(e) = chroot::check(dir, &mut stat) {
                    let fix = e.fix();
                    let msg = e.to_string();
                    s.log.log(server_args::LogLevel::Fatal, &msg);
                    if let Some(fix) = fix {
                        s.log.log(
                            server_args::LogLevel::Fatal,
                            &format!("to fix it, run: {fix}"),
                        );
                    }
                    return Err(ConnError::Fatal(msg));
                }
                let home = if account.kind == AccountKind::Virtual {
                    account.home.clone()
                } else {
                    // sshd changes to the passwd home inside the jail, or stays at `/`.
                    let inside = format!("{}{}", dir.trim_end_matches('/'), account.home);
                    if std::path::Path::new(&inside).is_dir() {
                        account.home.clone()
                    } else {
                        "/".to_owned()
                    }
                };
                let root = if s.privileged {
                    crate::vfs::keep_proc_fd()
                        .map_err(|e| self.fatal(format!("open /proc/self/fd: {e}")))?;
                    nix::unistd::chroot(dir.as_str())
                        .and_then(|()| nix::unistd::chdir("/"))
                        .map_err(|e| self.fatal(format!("chroot(\"{dir}\"): {e}")))?;
                    s.log
                        .verbose(format_args!("Changed root directory to \"{dir}\""));
                    Root::open(std::path::Path::new("/"))
                } else {
                    Root::open(std::path::Path::new(dir))
                }
                .map_err(|e| self.fatal(format!("cannot open root \"{dir}\": {e}")))?;
                (root, home)
            }
            None => {
                let root = Root::open(std::path::Path::new("/"))
                    .map_err(|e| self.fatal(format!("cannot open /: {e}")))?;
                (root, account.home.clone())
            }
        };
        if s.privileged {
            drop_privileges(&account).map_err(|e| self.fatal(e))?;
        }
        self.authed = Some(Authed {
            account,
            eff,
            root: Some(root),
            home,
        });
        Ok(())
    }

    fn fatal(&self, msg: String) -> ConnError {
        self.log().log(server_args::LogLevel::Fatal, &msg);
        ConnError::Fatal(msg)
    }

    fn remote_id(&self) -> String {
        format!("{} port {}", self.shared.addr(), self.port())
    }

    /// Refuses a shell, exec or pty session as sshd does under `ForceCommand internal-sftp`.
    async fn refuse_non_sftp(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), ConnError> {
        let rid = self.remote_id();
        self.log().error(format_args!(
            "Connection from {rid}: refusing non-sftp session"
        ));
        session.channel_success(channel)?;
        session.data(
            channel,
            bytes::Bytes::from_static(b"This service allows sftp connections only.\n"),
        )?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)?;
        if let Some(c) = self.channels.get_mut(&channel) {
            c.server_closed = true;
        }
        Ok(())
    }

    fn start_sftp(&mut self, channel: ChannelId, session: &mut Session) -> Result<bool, ConnError> {
        let Some(authed) = self.authed.as_mut() else {
            return Ok(false);
        };
        let Some(chan) = self.channels.get_mut(&channel) else {
            return Ok(false);
        };
        if chan.input.is_some() {
            return Ok(false);
        }
        let eff = &authed.eff;
        let (addr, port) = (self.shared.addr(), self.shared.peer.port());
        let user = authed.account.name.clone();
        // The command that runs: ForceCommand wins over the Subsystem line, arguments and all.
        let (command, how) = match &eff.force_command {
            Some(cmd) => (cmd.clone(), "forced-command (config)"),
            None => match &eff.subsystem_sftp {
                Some(cmd) => (cmd.clone(), "subsystem"),
                None => {
                    self.shared.log.info(format_args!(
                        "subsystem request for sftp by user {user} failed, subsystem not found"
                    ));
                    return Ok(false);
                }
            },
        };
        if !is_internal_sftp(&command) {
            self.shared.log.info(format_args!(
                "Connection from {addr} port {port}: refusing \"{command}\": only internal-sftp is served"
            ));
            return Ok(false);
        }
        let args: ServerArgs = match server_args::parse_command(&command) {
            Ok(a) => a,
            Err(e) => {
                self.shared.log.error(format_args!("{command}: {e}"));
                return Ok(false);
            }
        };
        let id = chan.id;
        if how == "subsystem" {
            self.shared.log.info(format_args!(
                "Starting session: subsystem 'sftp' for {user} from {addr} port {port} id {id}"
            ));
        } else {
            self.shared.log.info(format_args!(
                "Starting session: {how} '{command}' for {user} from {addr} port {port} id {id}"
            ));
        }
        if let Some(mask) = args.umask {
            // sftp-server -u sets the process umask; this process serves one user.
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
        }
        let Some(root) = authed
            .root
            .as_ref()
            .map(|r| r.fd().try_clone_to_owned().and_then(Root::from_fd))
            .transpose()
            .map_err(|e| ConnError::Fatal(format!("root: {e}")))?
        else {
            return Ok(false);
        };
        // The syslog ident OpenSSH would show: `internal-sftp`, or `sftp-server` for the binary.
        let ident = if command.starts_with("internal-sftp") {
            "internal-sftp"
        } else {
            "sftp-server"
        };
        let sftp_log = self.shared.log.with(ident, args.facility, args.level);
        let opts = Options {
            args,
            atomic_uploads: eff.atomic_uploads,
            max_handles: max_handles(),
        };
        let info = SessionInfo {
            user: user.clone(),
            client_addr: addr,
            home: authed.home.clone(),
            uid: authed.account.uid,
        };
        let server = SftpServer::new(root, info, opts, sftp_log.clone(), SystemNames::default());
        let Some(write) = chan.write.take() else {
            return Ok(false);
        };
        let Some(handle) = self.handle.get().cloned() else {
            return Ok(false);
        };
        session.channel_success(channel)?;
        let (input, thread) = pump::start(
            server,
            channel,
            handle,
            write,
            sftp_log,
            |h, ch, _w, status| {
                Box::pin(async move {
                    let _ = h.exit_status_request(ch, status).await;
                    let _ = h.eof(ch).await;
                    let _ = h.close(ch).await;
                })
            },
        )
        .map_err(|e| ConnError::Fatal(format!("cannot start sftp: {e}")))?;
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(thread);
        chan.input = Some(input);
        Ok(true)
    }
}

/// `internal-sftp` or an `sftp-server` binary path (served in-process with the same flags).
pub fn is_internal_sftp(command: &str) -> bool {
    let prog = command.split_whitespace().next().unwrap_or("");
    prog == "internal-sftp" || prog.rsplit('/').next() == Some("sftp-server")
}

fn max_handles() -> u32 {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    u32::try_from(limit.saturating_sub(16).clamp(64, 4096)).unwrap_or(4096)
}

fn drop_privileges(account: &Account) -> Result<(), String> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    let gids: Vec<Gid> = account.gids.iter().map(|&g| Gid::from_raw(g)).collect();
    setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
    setgid(Gid::from_raw(account.gid)).map_err(|e| format!("setgid {}: {e}", account.gid))?;
    setuid(Uid::from_raw(account.uid)).map_err(|e| format!("setuid {}: {e}", account.uid))?;
    if account.uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
        return Err("was able to restore old [e]uid".into());
    }
    Ok(())
}

impl russh::server::Handler for Connection {
    type Error = ConnError;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        // The probe every OpenSSH client sends: no failure counted, no delay, no penalty.
        self.candidate(user);
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.tried_method = true;
        self.set_outcome(|o| o.tried = true);
        let root_login = self.shared.root_login;
        let c = self.candidate(user);
        let root_ok = root_login == crate::setup::RootLogin::Yes;
        let hash = match (&c.account, c.valid && c.eff.password_authentication) {
            // PermitRootLogin prohibit-password (sshd's default) or no: never a root password.
            (Some(a), true) if a.uid != 0 || root_ok => a.password_hash.clone(),
            _ => None,
        };
        // Same work for unknown users, locked accounts and wrong passwords.
        let ok = passwd::verify_or_dummy(password.as_bytes(), hash.as_deref());
        if ok && hash.is_some() {
            self.accepted("password", user, "");
            self.authenticated()?;
            return Ok(Auth::Accept);
        }
        self.failed("password", user, "").await;
        // Keep offering passwords, as sshd does until MaxAuthTries (russh would drop the
        // method after one failure).
        Ok(Auth::Reject {
            proceed_with_methods: Some(self.methods()),
            partial_success: false,
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.tried_method = true;
        self.set_outcome(|o| o.tried = true);
        let root_login = self.shared.root_login;
        let c = self.candidate(user);
        let root_refused = root_login == crate::setup::RootLogin::No
            && c.account.as_ref().is_some_and(|a| a.uid == 0);
        let usable = c.valid && c.eff.pubkey_authentication && !root_refused;
        let key = offer.public_key.clone();
        let found = if usable { self.find_key(&key) } else { None };
        let text = users::key_log_text(&key);
        match found {
            Some(place) => {
                self.log()
                    .verbose(format_args!("Accepted key {text} found at {place}"));
                let (addr, port) = (self.shared.addr(), self.port());
                self.log().verbose(format_args!(
                    "Postponed publickey for {user} from {addr} port {port} ssh2 [preauth]"
                ));
                self.key_match = Some((key, place));
                Ok(Auth::Accept)
            }
            None => {
                self.failed("publickey", user, &format!(": {text}")).await;
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let place = match &self.key_match {
            Some((k, place)) if k.key_data() == key.public_key.key_data() => Some(place.clone()),
            _ => self.find_key(key.public_key),
        };
        let text = users::key_log_text(key.public_key);
        let valid = self
            .candidate
            .as_ref()
            .is_some_and(|c| c.valid && c.name == user);
        match place {
            Some(place) if valid => {
                self.log()
                    .verbose(format_args!("Accepted key {text} found at {place}"));
                self.accepted("publickey", user, &format!(": {text}"));
                self.authenticated()?;
                Ok(Auth::Accept)
            }
            _ => {
                self.failed("publickey", user, &format!(": {text}")).await;
                Ok(Auth::reject())
            }
        }
    }

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        let global = self.shared.config.global();
        Ok(global
            .banner
            .filter(|b| b != "none")
            .and_then(|path| std::fs::read_to_string(path).ok()))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let max = self.authed.as_ref().map_or(10, |a| a.eff.max_sessions);
        let open = self.channels.len();
        if u32::try_from(open).unwrap_or(u32::MAX) >= max {
            self.log()
                .info(format_args!("error: no more sessions (MaxSessions {max})"));
            return Ok(()); // dropping `reply` refuses the channel
        }
        let id = channel.id();
        // Incoming data arrives through `Handler::data`; dropping the read half means russh
        // never waits for anyone to read it.
        let (read, write) = channel.split();
        drop(read);
        let session_id = self.next_session_id;
        self.next_session_id += 1;
        self.channels.insert(
            id,
            Chan {
                id: session_id,
                write: Some(write),
                input: None,
                server_closed: false,
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" && self.start_sftp(channel, session)? {
            return Ok(());
        }
        if name != "sftp" {
            let user = self
                .authed
                .as_ref()
                .map(|a| a.account.name.clone())
                .unwrap_or_default();
            self.log().info(format_args!(
                "subsystem request for {name} by user {user} failed, subsystem not found"
            ));
        }
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_non_sftp(channel, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_non_sftp(channel, session).await
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Granted and ignored, as sshd grants it before refusing the shell.
        session.channel_success(channel)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        _reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // An SFTP-only server forwards nothing, whatever AllowTcpForwarding says; sshd's line
        // for a refused forward. Dropping `_reply` refuses the channel.
        self.log().info(format_args!(
            "refused local port forward: originator {originator_address} port {originator_port}, target {host_to_connect} port {port_to_connect}"
        ));
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.log().info(format_args!(
            "refused remote port forward: listen {address} port {port}"
        ));
        Ok(false)
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(chan) = self.channels.get_mut(&channel) else {
            return Ok(());
        };
        if let Some(input) = chan.input.as_mut()
            && input.push(data).is_err()
        {
            let rid = format!("{} port {}", self.shared.addr(), self.shared.peer.port());
            self.shared.log.error(format_args!(
                "{rid}: more than {} MiB of SFTP requests queued; closing the connection",
                pump::MAX_QUEUED_INPUT >> 20
            ));
            session.disconnect(Disconnect::ByApplication, "too many queued requests", "")?;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(input) = self
            .channels
            .get_mut(&channel)
            .and_then(|c| c.input.as_mut())
        {
            input.close();
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(mut chan) = self.channels.remove(&channel) {
            if let Some(input) = chan.input.as_mut() {
                input.close();
            }
            if !chan.server_closed
                && let Some(a) = &self.authed
            {
                let (addr, port) = (self.shared.addr(), self.shared.peer.port());
                self.shared.log.verbose(format_args!(
                    "Close session: user {} from {addr} port {port} id {}",
                    a.account.name, chan.id
                ));
            }
        }
        Ok(())
    }
}

/// Runs one connection on `socket` (this process's fd 0 when re-executed by the listener).
pub async fn run(shared: Arc<Shared>, socket: OwnedFd, keys: Vec<russh::keys::PrivateKey>) -> u8 {
    let s = Arc::clone(&shared);
    let (addr, port) = (s.addr(), s.peer.port());
    s.log.verbose(format_args!(
        "Connection from {addr} port {port} on {} port {} rdomain \"\"",
        s.local.ip(),
        s.local.port()
    ));
    let global = s.config.global();
    let grace = global.login_grace_time;
    let config = crate::setup::russh_config(&global, keys);
    let std_stream = std::net::TcpStream::from(socket);
    let _ = std_stream.set_nonblocking(true);
    let _ = std_stream.as_fd();
    let stream = match tokio::net::TcpStream::from_std(std_stream) {
        Ok(s) => s,
        Err(e) => {
            s.log.error(format_args!("socket: {e}"));
            return report::NO_AUTH;
        }
    };
    let _ = stream.set_nodelay(true);
    let (handler, watch) = Connection::new(Arc::clone(&shared));
    let Watch {
        handle: handle_cell,
        auth_done,
        outcome,
    } = watch;
    // LoginGraceTime counts from the accept: russh reads the client's version line before
    // `run_stream` returns, so a silent client is timed out here too.
    let deadline = tokio::time::Instant::now() + grace;
    let grace_sleep = async {
        if grace.is_zero() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(deadline).await;
    };
    let timed_out = |s: &Shared| {
        s.log.info(format_args!(
            "Timeout before authentication for {addr} port {port}"
        ));
        report::GRACE
    };
    let started = tokio::select! {
        r = russh::server::run_stream(config, stream, handler) => r,
        () = grace_sleep => return timed_out(&s),
    };
    let running = match started {
        Ok(r) => r,
        Err(e) => {
            s.log.info(format_args!(
                "Connection closed by {addr} port {port} [preauth]"
            ));
            s.log.debug(format_args!("{e}"));
            return report::NO_AUTH;
        }
    };
    let _ = handle_cell.set(running.handle());
    let handle = running.handle();
    let mut running = std::pin::pin!(running);
    let grace_timer = async {
        if grace.is_zero() {
            std::future::pending::<()>().await;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = auth_done.notified() => std::future::pending::<()>().await,
        }
    };
    let result = tokio::select! {
        r = &mut running => Some(r),
        () = grace_timer => None,
    };
    let o = outcome
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if result.is_none() {
        let code = timed_out(&s);
        let _ = handle
            .disconnect(
                Disconnect::ByApplication,
                "Timeout before authentication".into(),
                String::new(),
            )
            .await;
        return code;
    }
    if let Some(Err(ConnError::Ssh(e))) = &result {
        // A peer that hangs up mid-packet is ordinary; anything else (bad MAC, bad packet
        // length, protocol violations) is what sshd reports at ERROR.
        let text = e.to_string();
        if text.contains("early eof") || text.contains("Disconnect") {
            s.log.debug(format_args!("connection ended: {text}"));
        } else {
            s.log.error(format_args!(
                "ssh_dispatch_run_fatal: Connection from {addr} port {port}: {text}"
            ));
        }
    }
    match (&o.authenticated, &o.user) {
        (Some(user), _) => {
            s.log.info(format_args!(
                "Disconnected from user {user} {addr} port {port}"
            ));
            report::AUTHENTICATED
        }
        (None, Some(user)) => {
            let who = if o.invalid {
                "invalid"
            } else {
                "authenticating"
            };
            s.log.info(format_args!(
                "Connection closed by {who} user {user} {addr} port {port} [preauth]"
            ));
            if o.invalid {
                report::INVALID_USER
            } else if o.failed {
                report::AUTH_FAIL
            } else {
                report::NO_AUTH
            }
        }
        _ => {
            s.log.info(format_args!(
                "Connection closed by {addr} port {port} [preauth]"
            ));
            report::NO_AUTH
        }
    }
}
