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

/// Penalty reason text as OpenSSH logs it.
pub fn reason(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Authenticated => "none",
        Outcome::AuthFail => "failed authentication",
        Outcome::InvalidUser => "invalid user",
        Outcome::NoAuth => "penalty: connections without attempting authentication",
        Outcome::GraceExceeded => "exceeded LoginGraceTime",
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Penalty end, in the caller's clock.
    expires: Duration,
    /// Accumulated penalty at the last update.
    start: Duration,
}

/// The penalty table.
#[derive(Debug, Default)]
pub struct Penalties {
    settings: Settings,
    sources: HashMap<IpAddr, Entry>,
}

/// A new penalty that crossed the enforcement threshold (for the log line).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    /// Seconds the source is now refused for.
    pub seconds: f64,
    /// True the first time this source becomes refused.
    pub newly_active: bool,
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

    /// Records how a connection from `addr` ended, at time `now`. Returns the penalty now in
    /// force if the source is being refused.
    pub fn record(&mut self, addr: IpAddr, outcome: Outcome, now: Duration) -> Option<Applied> {
        let amount = self.settings.amount(outcome);
        if amount.is_zero() {
            return None;
        }
        self.expire(now);
        let k = key(addr);
        if !self.sources.contains_key(&k) && self.sources.len() >= self.settings.max_sources {
            return None;
        }
        let entry = self.sources.entry(k).or_insert(Entry {
            expires: now,
            start: now,
        });
        let was_active =
            entry.expires.saturating_sub(entry.start) > self.settings.min && entry.expires > now;
        let base = entry.expires.max(now);
        if entry.expires <= now {
            entry.start = now;
        }
        entry.expires = (base + amount).min(entry.start + self.settings.max);
        let total = entry.expires.saturating_sub(entry.start);
        (total > self.settings.min).then(|| Applied {
            seconds: entry.expires.saturating_sub(now).as_secs_f64(),
            newly_active: !was_active,
        })
    }

    /// True while `addr` is refused.
    pub fn refused(&self, addr: IpAddr, now: Duration) -> bool {
        self.sources.get(&key(addr)).is_some_and(|e| {
            e.expires > now && e.expires.saturating_sub(e.start) > self.settings.min
        })
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
        for _ in 0..3 {
            assert_eq!(p.record(A, Outcome::AuthFail, s(100)), None);
            assert!(!p.refused(A, s(100)));
        }
        let applied = p.record(A, Outcome::AuthFail, s(100)).expect("active");
        assert!(applied.newly_active);
        assert!((applied.seconds - 20.0).abs() < 1e-9);
        assert!(p.refused(A, s(100)));
        assert!(!p.refused(B, s(100)), "other sources are unaffected");
        assert!(p.refused(A, s(119)));
        assert!(!p.refused(A, s(120)), "penalty ends");
        let again = p
            .record(A, Outcome::AuthFail, s(101))
            .expect("still active");
        assert!(!again.newly_active);
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
        assert!(p.refused(A, s(599)));
        assert!(!p.refused(A, s(600)));
        p.expire(s(601));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn failures_spread_out_do_not_accumulate() {
        let mut p = Penalties::new(Settings::default());
        for i in 0..100 {
            assert_eq!(p.record(A, Outcome::InvalidUser, s(i * 6)), None);
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
        assert!(p.refused(A, s(1)));
        for _ in 0..10 {
            assert_eq!(p.record(B, Outcome::AuthFail, s(1)), None);
        }
        assert!(!p.refused(B, s(1)));
    }
}
