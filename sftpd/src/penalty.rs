//! Per-source penalties, as OpenSSH 9.8's `PerSourcePenalties` (sans-IO: the caller passes
//! the time in).
//!
//! Each connection that ends badly adds seconds to its source address's penalty:
//! `authfail:5s` (a password or key was refused), `invaliduser:5s`, `noauth:1s` (closed
//! without trying any method), `grace-exceeded:10s` (`LoginGraceTime` ran out). A source is
//! refused only once its accumulated penalty exceeds `min:15s`, so a mistyped password or
//! two never locks anyone out; the penalty is capped at `max:10m`. Successful logins add
//! nothing, so a controller with many APs behind one address is never penalised for volume.
//! The `none` probe every OpenSSH client sends first is not an authentication failure.
//! The table holds at most `max_sources` addresses; when full, new sources are not tracked
//! (OpenSSH's `overflow:permissive`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// How a connection ended, as far as penalties are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Authenticated: no penalty.
    Authenticated,
    /// At least one method failed for an existing user and none succeeded.
    AuthFail,
    /// The user does not exist (or is not allowed).
    InvalidUser,
    /// Closed without trying any authentication method.
    NoAuth,
    /// `LoginGraceTime` expired.
    GraceExceeded,
}

/// Penalty amounts and limits (OpenSSH 9.8 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Added for [`Outcome::AuthFail`].
    pub authfail: Duration,
    /// Added for [`Outcome::InvalidUser`].
    pub invaliduser: Duration,
    /// Added for [`Outcome::NoAuth`].
    pub noauth: Duration,
    /// Added for [`Outcome::GraceExceeded`].
    pub grace_exceeded: Duration,
    /// A source is refused only while its penalty exceeds this.
    pub min: Duration,
    /// Cap on one source's penalty.
    pub max: Duration,
    /// Most sources tracked at once.
    pub max_sources: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            authfail: Duration::from_secs(5),
            invaliduser: Duration::from_secs(5),
            noauth: Duration::from_secs(1),
            grace_exceeded: Duration::from_secs(10),
            min: Duration::from_secs(15),
            max: Duration::from_secs(600),
            max_sources: 65_536,
        }
    }
}

impl Settings {
    /// Parses `PerSourcePenalties` arguments: `yes`, `no` (→ `None`), or `key:value` words
    /// (`authfail:`, `invaliduser:`, `noauth:`, `grace-exceeded:`, `min:`, `max:` with sshd
    /// time values; `max-sources4:`/`max-sources6:` counts; `crash:` and
    /// `refuseconnection:` are accepted, as nothing here crashes or refuses by config;
    /// `overflow:permissive` only).
    pub fn parse(args: &[String]) -> Result<Option<Settings>, String> {
        let mut s = Settings::default();
        for a in args {
            match a.to_ascii_lowercase().as_str() {
                "yes" => continue,
                "no" => return Ok(None),
                _ => {}
            }
            let (key, value) = a
                .split_once(':')
                .ok_or_else(|| format!("\"{a}\" is not key:value"))?;
            let time =
                || crate::config::parse_time(value).ok_or_else(|| format!("bad time \"{value}\""));
            match key.to_ascii_lowercase().as_str() {
                "authfail" => s.authfail = time()?,
                "invaliduser" => s.invaliduser = time()?,
                "noauth" => s.noauth = time()?,
                "grace-exceeded" => s.grace_exceeded = time()?,
                "min" => s.min = time()?,
                "max" => s.max = time()?,
                "crash" | "refuseconnection" => {
                    time()?;
                }
                "max-sources4" | "max-sources6" => {
                    s.max_sources = value
                        .parse()
                        .map_err(|_| format!("bad count \"{value}\""))?;
                }
                "overflow" | "overflow6" if value.eq_ignore_ascii_case("permissive") => {}
                "overflow" | "overflow6" => {
                    return Err(format!("{key}:{value} is not supported (only permissive)"));
                }
                _ => return Err(format!("unknown penalty \"{key}\"")),
            }
        }
        Ok(Some(s))
    }

    fn amount(&self, outcome: Outcome) -> Duration {
        match outcome {
            Outcome::Authenticated => Duration::ZERO,
            Outcome::AuthFail => self.authfail,
            Outcome::InvalidUser => self.invaliduser,
            Outcome::NoAuth => self.noauth,
            Outcome::GraceExceeded => self.grace_exceeded,
        }
    }
}

impl std::fmt::Display for Settings {
    /// The `-T` form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "authfail:{}s invaliduser:{}s noauth:{}s grace-exceeded:{}s min:{}s max:{}s max-sources4:{}",
            self.authfail.as_secs(),
            self.invaliduser.as_secs(),
            self.noauth.as_secs(),
            self.grace_exceeded.as_secs(),
            self.min.as_secs(),
            self.max.as_secs(),
            self.max_sources
        )
    }
}

/// Penalty reason text as OpenSSH 9.8's `srclimit_penalise` logs it (also the reason in the
/// `drop connection` line). 9.8 has no separate invalid-user penalty: it is an auth failure.
pub fn reason(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Authenticated => "none",
        Outcome::AuthFail | Outcome::InvalidUser => "penalty: failed authentication",
        Outcome::NoAuth => "penalty: connections without attempting authentication",
        Outcome::GraceExceeded => "penalty: exceeded LoginGraceTime",
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Penalty end, in the caller's clock.
    expires: Duration,
    /// Refusing connections (the remaining penalty exceeded `min` at some update).
    active: bool,
    /// Reason of the last penalty.
    reason: &'static str,
}

/// The penalty table.
#[derive(Debug, Default)]
pub struct Penalties {
    settings: Settings,
    sources: HashMap<IpAddr, Entry>,
}

/// What [`Penalties::record`] did, for OpenSSH's log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new entry: `ipv4: new ADDR/32 active|deferred penalty of N seconds for REASON`.
    New {
        /// Refusing already (the amount alone exceeds `min`).
        active: bool,
        /// Seconds.
        seconds: u64,
    },
    /// An existing entry crossed `min`: `ADDR/32: activating ipv4 penalty of N seconds for …`.
    Activated {
        /// Seconds remaining.
        seconds: u64,
    },
    /// Accumulated into an existing entry, nothing to log at VERBOSE.
    Extended,
}

/// `ipv4`/`ipv6` and `ADDR/BITS` as OpenSSH prints a penalised source.
pub fn describe_source(addr: IpAddr) -> (&'static str, String) {
    match key(addr) {
        IpAddr::V4(v4) => ("ipv4", format!("{v4}/32")),
        IpAddr::V6(v6) => ("ipv6", format!("{v6}/128")),
    }
}

fn key(addr: IpAddr) -> IpAddr {
    // Netblock 32:128 (OpenSSH's default PerSourceNetBlockSize): the whole address, with
    // v4-mapped IPv6 treated as IPv4.
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Penalties {
    /// An empty table.
    pub fn new(settings: Settings) -> Self {
        Penalties {
            settings,
            sources: HashMap::new(),
        }
    }

    /// Records how a connection from `addr` ended, at time `now` (OpenSSH's accumulation:
    /// a new entry lasts the amount; an existing one is extended by it, capped at `max`, and
    /// becomes active once the remaining time exceeds `min`).
    pub fn record(&mut self, addr: IpAddr, outcome: Outcome, now: Duration) -> Option<Applied> {
        let amount = self.settings.amount(outcome);
        if amount.is_zero() {
            return None;
        }
        self.expire(now);
        let k = key(addr);
        let reason = reason(outcome);
        let (min, max) = (self.settings.min, self.settings.max);
        match self.sources.get_mut(&k) {
            None => {
                if self.sources.len() >= self.settings.max_sources {
                    return None; // overflow:permissive
                }
                let active = amount > min;
                self.sources.insert(
                    k,
                    Entry {
                        expires: now + amount.min(max),
                        active,
                        reason,
                    },
                );
                Some(Applied::New {
                    active,
                    seconds: amount.as_secs(),
                })
            }
            Some(e) => {
                e.expires = (e.expires + amount).min(now + max);
                e.reason = reason;
                let remaining = e.expires.saturating_sub(now);
                if remaining > min && !e.active {
                    e.active = true;
                    return Some(Applied::Activated {
                        seconds: remaining.as_secs(),
                    });
                }
                Some(Applied::Extended)
            }
        }
    }

    /// The reason `addr` is refused now, if it is.
    pub fn refused(&self, addr: IpAddr, now: Duration) -> Option<&'static str> {
        self.sources
            .get(&key(addr))
            .filter(|e| e.active && e.expires > now)
            .map(|e| e.reason)
    }

    /// Forgets expired entries.
    pub fn expire(&mut self, now: Duration) {
        self.sources.retain(|_, e| e.expires > now);
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True when no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn three_failures_are_tolerated_the_fourth_refuses() {
        let mut p = Penalties::new(Settings::default());
        assert_eq!(
            p.record(A, Outcome::AuthFail, s(100)),
            Some(Applied::New {
                active: false,
                seconds: 5
            })
        );
        for _ in 0..2 {
            assert_eq!(
                p.record(A, Outcome::AuthFail, s(100)),
                Some(Applied::Extended)
            );
            assert_eq!(p.refused(A, s(100)), None);
        }
        assert_eq!(
            p.record(A, Outcome::AuthFail, s(100)),
            Some(Applied::Activated { seconds: 20 })
        );
        assert_eq!(p.refused(A, s(100)), Some("penalty: failed authentication"));
        assert_eq!(p.refused(B, s(100)), None, "other sources are unaffected");
        assert!(p.refused(A, s(119)).is_some());
        assert_eq!(p.refused(A, s(120)), None, "penalty ends");
        assert_eq!(describe_source(A), ("ipv4", "192.0.2.7/32".to_owned()));
    }

    #[test]
    fn a_large_penalty_is_active_at_once() {
        let mut p = Penalties::new(Settings {
            grace_exceeded: Duration::from_secs(20),
            ..Settings::default()
        });
        assert_eq!(
            p.record(A, Outcome::GraceExceeded, s(0)),
            Some(Applied::New {
                active: true,
                seconds: 20
            })
        );
        assert_eq!(p.refused(A, s(1)), Some("penalty: exceeded LoginGraceTime"));
    }

    #[test]
    fn settings_parse_like_sshd_config() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        assert_eq!(Settings::parse(&args(&["no"])), Ok(None));
        assert_eq!(
            Settings::parse(&args(&["yes"])),
            Ok(Some(Settings::default()))
        );
        let s = Settings::parse(&args(&["authfail:1m", "min:30s", "max-sources4:10"]))
            .expect("parse")
            .expect("on");
        assert_eq!(s.authfail, Duration::from_secs(60));
        assert_eq!(s.min, Duration::from_secs(30));
        assert_eq!(s.max_sources, 10);
        assert!(Settings::parse(&args(&["overflow:deny-all"])).is_err());
        assert!(Settings::parse(&args(&["bogus:1s"])).is_err());
        assert!(Settings::parse(&args(&["authfail"])).is_err());
    }

    #[test]
    fn successful_logins_never_penalise() {
        let mut p = Penalties::new(Settings::default());
        for i in 0..1000 {
            assert_eq!(p.record(A, Outcome::Authenticated, s(i)), None);
        }
        assert!(p.is_empty());
    }

    #[test]
    fn penalty_is_capped_and_expires() {
        let mut p = Penalties::new(Settings::default());
        for _ in 0..1000 {
            p.record(A, Outcome::GraceExceeded, s(0));
        }
        assert!(p.refused(A, s(599)).is_some());
        assert_eq!(p.refused(A, s(600)), None);
        p.expire(s(601));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn failures_spread_out_do_not_accumulate() {
        let mut p = Penalties::new(Settings::default());
        for i in 0..100 {
            p.record(A, Outcome::InvalidUser, s(i * 6));
            assert_eq!(p.refused(A, s(i * 6)), None);
        }
    }

    #[test]
    fn mapped_v6_shares_the_v4_entry_and_overflow_is_permissive() {
        let mut p = Penalties::new(Settings {
            max_sources: 1,
            ..Settings::default()
        });
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("addr");
        for _ in 0..4 {
            p.record(mapped, Outcome::AuthFail, s(0));
        }
        assert!(p.refused(A, s(1)).is_some());
        for _ in 0..10 {
            assert_eq!(p.record(B, Outcome::AuthFail, s(1)), None);
        }
        assert_eq!(p.refused(B, s(1)), None);
    }
}
