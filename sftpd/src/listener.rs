//! The listener: accepts connections, applies MaxStartups and per-source penalties, and
//! re-executes sftpd for each connection (`--session`, socket on fd 0, report pipe on fd 1),
//! as sshd re-executes itself.
//!
//! MaxStartups `start:rate:full`: up to `start` connections may be in authentication at once;
//! further ones **wait** for a slot (their TCP connection is held, the SSH banner is sent when
//! a slot frees) instead of being dropped at random as sshd does, and only connections beyond
//! `full` unauthenticated ones are dropped. A controller that opens 50 sessions at once is
//! served in full; a flood still cannot hold more than `full` connections. `rate` is accepted
//! and unused.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::MaxStartups;
use crate::connection::report;
use crate::log::Log;
use crate::penalty::{self, Outcome, Penalties};

/// What the listener needs.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// `MaxStartups`.
    pub max_startups: MaxStartups,
    /// Penalty amounts (`PerSourcePenalties`; `None` = `no`).
    pub penalties: Option<penalty::Settings>,
    /// `PerSourcePenaltyExemptList` pattern lists.
    pub penalty_exempt: Vec<String>,
    /// Program and arguments of the per-connection process (`--session` is appended).
    pub session_command: Vec<OsString>,
    /// sshd's lines.
    pub log: Log,
}

struct State {
    unauthenticated: Mutex<u32>,
    penalties: Mutex<Penalties>,
    slots: Semaphore,
    throttling: Mutex<bool>,
    epoch: Instant,
}

impl State {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// Serves until `shutdown` resolves. Each listener socket gets its own accept loop.
pub async fn serve(
    listeners: Vec<TcpListener>,
    cfg: ListenerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let state = Arc::new(State {
        unauthenticated: Mutex::new(0),
        penalties: Mutex::new(Penalties::new(cfg.penalties.unwrap_or_default())),
        slots: Semaphore::new(cfg.max_startups.start.max(1) as usize),
        throttling: Mutex::new(false),
        epoch: Instant::now(),
    });
    let cfg = Arc::new(cfg);
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        let (state, cfg) = (Arc::clone(&state), Arc::clone(&cfg));
        tasks.spawn(async move { accept_loop(l, state, cfg).await });
    }
    shutdown.await;
    tasks.abort_all();
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, cfg: Arc<ListenerConfig>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: log, back off, keep serving.
                cfg.log.error(format_args!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or(peer);
        let refused = state
            .penalties
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .refused(peer.ip(), state.now());
        if let Some(reason) = refused {
            let n = *state
                .unauthenticated
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            cfg.log.verbose(format_args!(
                "drop connection #{n} from [{}]:{} on [{}]:{} {reason}",
                peer.ip(),
                peer.port(),
                local.ip(),
                local.port()
            ));
            continue;
        }
        let n = {
            let mut u = state
                .unauthenticated
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *u >= cfg.max_startups.full {
                drop(u);
                cfg.log.info(format_args!(
                    "drop connection #{} from [{}]:{} on [{}]:{} past MaxStartups",
                    cfg.max_startups.full,
                    peer.ip(),
                    peer.port(),
                    local.ip(),
                    local.port()
                ));
                continue;
            }
            *u += 1;
            *u
        };
        let (state, cfg) = (Arc::clone(&state), Arc::clone(&cfg));
        tokio::spawn(async move {
            let outcome = connection(stream, peer, n, &state, &cfg).await;
            let exempt = cfg.penalties.is_none()
                || cfg
                    .penalty_exempt
                    .iter()
                    .any(|list| crate::config::addr_match_list(peer.ip(), list) == Ok(Some(true)));
            if exempt {
                return;
            }
            let applied = state
                .penalties
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(peer.ip(), outcome, state.now());
            let (family, source) = penalty::describe_source(peer.ip());
            let why = penalty::reason(outcome);
            match applied {
                Some(penalty::Applied::New { active, seconds }) => {
                    let state = if active { "active" } else { "deferred" };
                    cfg.log.verbose(format_args!(
                        "srclimit_penalise: {family}: new {source} {state} penalty of {seconds} seconds for {why}"
                    ));
                }
                Some(penalty::Applied::Activated { seconds }) => {
                    cfg.log.verbose(format_args!(
                        "srclimit_penalise: {source}: activating {family} penalty of {seconds} seconds for {why}"
                    ));
                }
                Some(penalty::Applied::Extended) | None => {}
            }
        });
    }
}

fn release(state: &State) {
    let mut u = state
        .unauthenticated
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    *u = u.saturating_sub(1);
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    n: u32,
    state: &State,
    cfg: &ListenerConfig,
) -> Outcome {
    let permit = match state.slots.try_acquire() {
        Ok(p) => p,
        Err(_) => {
            {
                let mut t = state
                    .throttling
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if !*t {
                    *t = true;
                    cfg.log
                        .info(format_args!("beginning MaxStartups throttling"));
                }
            }
            cfg.log.verbose(format_args!(
                "connection #{n} from [{}]:{} waits for a MaxStartups slot",
                peer.ip(),
                peer.port()
            ));
            match state.slots.acquire().await {
                Ok(p) => p,
                Err(_) => {
                    release(state);
                    return Outcome::NoAuth;
                }
            }
        }
    };
    if state.slots.available_permits() > 0 {
        let mut t = state
            .throttling
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *t {
            *t = false;
            cfg.log.info(format_args!("exited MaxStartups throttling"));
        }
    }
    let mut permit = Some(permit);
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            release(state);
            cfg.log.error(format_args!("socket: {e}"));
            return Outcome::NoAuth;
        }
    };
    let _ = std_stream.set_nonblocking(false);
    let fd = OwnedFd::from(std_stream);
    let Some((program, args)) = cfg.session_command.split_first() else {
        release(state);
        return Outcome::NoAuth;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .arg("--session")
        .stdin(Stdio::from(fd))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            release(state);
            cfg.log
                .error(format_args!("cannot start session process: {e}"));
            return Outcome::NoAuth;
        }
    };
    let mut outcome = Outcome::NoAuth;
    let mut released = false;
    if let Some(mut out) = child.stdout.take() {
        let mut byte = [0u8; 1];
        while let Ok(1) = out.read(&mut byte).await {
            outcome = match byte[0] {
                report::AUTHENTICATED => {
                    if !released {
                        released = true;
                        release(state);
                        permit.take();
                    }
                    Outcome::Authenticated
                }
                report::AUTH_FAIL => Outcome::AuthFail,
                report::INVALID_USER => Outcome::InvalidUser,
                report::GRACE => Outcome::GraceExceeded,
                _ => Outcome::NoAuth,
            };
        }
    }
    if !released {
        release(state);
    }
    drop(permit);
    let _ = child.wait().await;
    outcome
}
