//! Who may log in, and with which keys: system accounts (passwd/group/shadow), the virtual
//! users of our `UsersFile`, and `authorized_keys` files with OpenSSH's options, `from=`
//! matching and `StrictModes` checks.
//!
//! # `UsersFile` format
//!
//! One user per line; `#` comments and blank lines are ignored:
//!
//! ```text
//! name:hash:uid:gid:home:chroot:keys
//! ```
//!
//! - `hash`: an argon2 (`$argon2id$…`), SHA-crypt (`$6$`, `$5$`) or yescrypt (`$y$`) string;
//!   `*`, `!` (or anything starting with them) or empty: no password login.
//! - `uid`, `gid`: numbers.
//! - `home`: the start directory inside the chroot (e.g. `/upload`); empty means `/`.
//! - `chroot`: a host path, may be empty (no chroot); tokens `%u %h %U %%` are allowed and are
//!   expanded by the caller.
//! - `keys`: the rest of the line, zero or more OpenSSH public keys
//!   (`ssh-ed25519 AAAA… comment`) separated by `;`.
//!
//! The file must not be group/world-writable and must be owned by root or the server's euid.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use russh::keys::{Algorithm, HashAlg, PublicKey};

use crate::config::wildcard_match;
use crate::passwd::{self, HashKind};

/// Largest `UsersFile` read (a bigger file is refused rather than read into memory).
pub const MAX_USERS_FILE_LEN: u64 = 64 << 20;

/// Errors from loading accounts.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// A `UsersFile` line that does not parse.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The file (as given to [`UsersFile::parse`]).
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A `UsersFile` that others could have written; `message` includes the fixing command.
    #[error("refusing {path}: {message}")]
    Insecure {
        /// The file.
        path: String,
        /// Why, and how to fix it.
        message: String,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The system user database could not be queried.
    #[error("looking up user {name}: {source}")]
    Lookup {
        /// The user name.
        name: String,
        /// The error.
        #[source]
        source: nix::Error,
    },
}

/// Where an account comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// passwd/group/shadow.
    System,
    /// A `UsersFile` line.
    Virtual,
}

/// A user that may log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory (virtual users: the start directory inside the chroot).
    pub home: String,
    /// Login shell (virtual users: empty).
    pub shell: String,
    /// Primary + supplementary group names (for `Match Group`, `AllowGroups`); the number as
    /// text for a gid without a name.
    pub groups: Vec<String>,
    /// Primary + supplementary group ids (for `setgroups`), primary first.
    pub gids: Vec<u32>,
    /// The password hash, `None` when password login is impossible (locked, empty, `*`).
    pub password_hash: Option<String>,
    /// Inline keys (virtual users).
    pub keys: Vec<PublicKey>,
    /// `ChrootDirectory` of a virtual user (tokens not yet expanded).
    pub chroot: Option<String>,
    /// Where the account comes from.
    pub kind: AccountKind,
    /// Account expiry, days since 1970-01-01 (shadow's 8th field).
    pub expire_day: Option<i64>,
    /// Shadow hash starts with `!`: sshd (with `UsePAM no`) refuses such accounts for every
    /// method ("User %s not allowed because account is locked").
    pub locked: bool,
}

impl Account {
    /// Whether the account has expired on day `today_days` (sshd: `today > expire`).
    #[must_use]
    pub fn expired(&self, today_days: i64) -> bool {
        self.expire_day.is_some_and(|e| today_days > e)
    }

    /// [`Account::expired`] for the current date.
    #[must_use]
    pub fn expired_now(&self) -> bool {
        self.expired(today_days())
    }
}

/// Days since 1970-01-01 now.
#[must_use]
pub fn today_days() -> i64 {
    now_unix().div_euclid(86_400)
}

/// Seconds since 1970-01-01 now.
#[must_use]
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The usable hash of a password field: `None` for locked (`!`, `*`) and empty ones.
fn usable_hash(field: &str) -> Option<String> {
    match passwd::classify(field) {
        HashKind::Locked | HashKind::NoPassword => None,
        _ => Some(field.to_owned()),
    }
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// Looks a system account up (passwd, groups, shadow). `Ok(None)` if there is no such user.
///
/// The hash comes from `/etc/shadow`; if that is unreadable (not running as root) or has no
/// entry, the passwd field is used when it is a real hash.
///
/// # Errors
/// [`UsersError::Lookup`] if the user database cannot be queried.
pub fn system_account(name: &str) -> Result<Option<Account>, UsersError> {
    let shadow = std::fs::read_to_string("/etc/shadow").ok();
    system_account_with_shadow(name, shadow.as_deref())
}

/// [`system_account`] with the shadow file's text given (`None`: unreadable).
///
/// # Errors
/// [`UsersError::Lookup`] if the user database cannot be queried.
pub fn system_account_with_shadow(
    name: &str,
    shadow: Option<&str>,
) -> Result<Option<Account>, UsersError> {
    let lookup = |source| UsersError::Lookup {
        name: name.to_owned(),
        source,
    };
    if name.is_empty() || name.contains('\0') {
        return Ok(None);
    }
    let Some(user) = nix::unistd::User::from_name(name).map_err(lookup)? else {
        return Ok(None);
    };
    let primary = user.gid;
    let mut gids: Vec<u32> = vec![primary.as_raw()];
    if let Ok(cname) = CString::new(name) {
        // A failure here leaves only the primary group, as with an empty /etc/group.
        if let Ok(list) = nix::unistd::getgrouplist(&cname, primary) {
            for g in list {
                if !gids.contains(&g.as_raw()) {
                    gids.push(g.as_raw());
                }
            }
        }
    }
    let groups = gids.iter().map(|&g| group_name(g)).collect();
    let entry = shadow.and_then(|text| passwd::shadow_entry(text, name));
    let (field, expire_day) = match entry {
        Some(e) => (e.hash.to_owned(), e.expire),
        None => (user.passwd.to_string_lossy().into_owned(), None),
    };
    // Without shadow, `x` is a placeholder: classify reports it as unsupported, not a hash.
    let password_hash = match passwd::classify(&field) {
        HashKind::Unsupported(_) if entry.is_none() => None,
        _ => usable_hash(&field),
    };
    Ok(Some(Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: primary.as_raw(),
        home: user.dir.to_string_lossy().into_owned(),
        shell: user.shell.to_string_lossy().into_owned(),
        groups,
        gids,
        password_hash,
        keys: Vec::new(),
        chroot: None,
        kind: AccountKind::System,
        expire_day,
        locked: field.starts_with('!'),
    }))
}

// ---------------------------------------------------------------------------------------
// UsersFile

/// The virtual users of a `UsersFile` (format in the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersFile {
    accounts: Vec<Account>,
    index: HashMap<String, usize>,
}

/// Parses one OpenSSH public key line (`type base64 [comment]`), tolerating any whitespace.
fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let mut parts = text.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Err("expected \"TYPE BASE64 [COMMENT]\"".to_owned());
    };
    if kind.contains("-cert-v01@") {
        return Err(format!("certificates are not supported ({kind})"));
    }
    PublicKey::from_openssh(&format!("{kind} {b64}"))
        .map_err(|e| format!("invalid {kind} key: {e}"))
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '/' && c != ':')
}

impl UsersFile {
    /// Parses a `UsersFile`; `source` names it in errors.
    ///
    /// # Errors
    /// [`UsersError::Parse`] for the first bad line.
    pub fn parse(text: &str, source: &str) -> Result<UsersFile, UsersError> {
        let mut out = UsersFile::default();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let err = |message: String| UsersError::Parse {
                file: source.to_owned(),
                line: lineno,
                message,
            };
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.splitn(7, ':').collect();
            let [name, hash, uid, gid, home, chroot, keys] = fields.as_slice() else {
                return Err(err(format!(
                    "expected 7 fields name:hash:uid:gid:home:chroot:keys, found {}",
                    fields.len()
                )));
            };
            let name = name.trim();
            if !valid_user_name(name) {
                return Err(err(format!("bad user name {name:?}")));
            }
            if let Some(first) = first_line.get(name) {
                return Err(err(format!(
                    "duplicate user {name:?} (first defined on line {first})"
                )));
            }
            let hash = hash.trim();
            let password_hash = match passwd::classify(hash) {
                HashKind::Locked | HashKind::NoPassword => None,
                HashKind::Unsupported(prefix) => {
                    return Err(err(format!(
                        "bad hash kind {prefix} for user {name:?} (use argon2, yescrypt, \
                         sha512crypt/sha256crypt, or * for no password)"
                    )));
                }
                _ => Some(hash.to_owned()),
            };
            let uid: u32 = uid
                .trim()
                .parse()
                .map_err(|_| err(format!("bad uid {:?}", uid.trim())))?;
            let gid: u32 = gid
                .trim()
                .parse()
                .map_err(|_| err(format!("bad gid {:?}", gid.trim())))?;
            let home = match home.trim() {
                "" => "/".to_owned(),
                h if h.starts_with('/') => h.to_owned(),
                h => return Err(err(format!("bad home {h:?}: must be an absolute path"))),
            };
            let chroot = match chroot.trim() {
                "" => None,
                c if c.starts_with('/') || c.starts_with('%') || c.starts_with('~') => {
                    Some(c.to_owned())
                }
                c => {
                    return Err(err(format!("bad chroot {c:?}: must be an absolute path")));
                }
            };
            let mut parsed_keys = Vec::new();
            for (pos, k) in keys
                .split(';')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .enumerate()
            {
                let key = parse_public_key(k)
                    .map_err(|e| err(format!("bad key at position {}: {e}", pos + 1)))?;
                parsed_keys.push(key);
            }
            first_line.insert(name.to_owned(), lineno);
            out.index.insert(name.to_owned(), out.accounts.len());
            out.accounts.push(Account {
                name: name.to_owned(),
                uid,
                gid,
                home,
                shell: String::new(),
                groups: vec![group_name(gid)],
                gids: vec![gid],
                password_hash,
                keys: parsed_keys,
                chroot,
                kind: AccountKind::Virtual,
                expire_day: None,
                locked: false,
            });
        }
        Ok(out)
    }

    /// The account called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Account> {
        self.index.get(name).and_then(|&i| self.accounts.get(i))
    }

    /// All accounts in file order.
    #[must_use]
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// Reads and parses a `UsersFile`, refusing one that is not a regular file, is
    /// group/world-writable, or is owned by someone other than root or the current euid.
    ///
    /// # Errors
    /// [`UsersError::Io`], [`UsersError::Insecure`] (with the fixing command) or
    /// [`UsersError::Parse`].
    pub fn load(path: &Path) -> Result<UsersFile, UsersError> {
        let shown = path.display().to_string();
        let io = |source| UsersError::Io {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        check_users_file_meta(&shown, &meta, nix::unistd::geteuid().as_raw())?;
        let mut text = String::new();
        file.take(MAX_USERS_FILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_USERS_FILE_LEN {
            return Err(UsersError::Insecure {
                path: shown,
                message: format!("larger than {MAX_USERS_FILE_LEN} bytes"),
            });
        }
        UsersFile::parse(&text, &shown)
    }
}

fn check_users_file_meta(
    path: &str,
    meta: &std::fs::Metadata,
    euid: u32,
) -> Result<(), UsersError> {
    let insecure = |message: String| UsersError::Insecure {
        path: path.to_owned(),
        message,
    };
    if !meta.is_file() {
        return Err(insecure("not a regular file".to_owned()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(insecure(format!(
            "it is group/world-writable (mode {mode:04o}); fix with: chmod 600 {path}"
        )));
    }
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(insecure(format!(
            "it is owned by uid {}, not root or the server's uid {euid}; fix with: \
             chown root {path}",
            meta.uid()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// authorized_keys

/// Options of an `authorized_keys` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyOptions {
    /// `from="pattern-list"`.
    pub from: Option<String>,
    /// `expiry-time=…` as seconds since 1970-01-01.
    pub expiry_time: Option<i64>,
    /// `restrict`.
    pub restrict: bool,
    /// `no-pty`.
    pub no_pty: bool,
    /// `no-port-forwarding`.
    pub no_port_forwarding: bool,
    /// `no-agent-forwarding`.
    pub no_agent_forwarding: bool,
    /// `no-X11-forwarding`.
    pub no_x11_forwarding: bool,
    /// `no-user-rc`.
    pub no_user_rc: bool,
    /// `command="…"` (the caller refuses anything but `internal-sftp`).
    pub command: Option<String>,
    /// Accepted options without effect on an SFTP-only server (`environment`, `permitopen`,
    /// `permitlisten`, `tunnel`, `pty`, `user-rc`, …), names as written.
    pub ignored: Vec<String>,
}

/// A parsed key line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The options before the key.
    pub options: KeyOptions,
    /// The key.
    pub key: PublicKey,
}

/// One non-comment line of an `authorized_keys` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    /// 1-based line number.
    pub line: usize,
    /// The key and options, or why the line is skipped (to be logged).
    pub entry: Result<KeyEntry, String>,
}

/// Key type names as `authorized_keys` (and OpenSSH's `sshkey_type_from_name`) know them.
fn is_key_type_name(s: &str) -> bool {
    matches!(
        s,
        "ssh-ed25519"
            | "ssh-rsa"
            | "ssh-dss"
            | "ecdsa-sha2-nistp256"
            | "ecdsa-sha2-nistp384"
            | "ecdsa-sha2-nistp521"
            | "sk-ecdsa-sha2-nistp256@openssh.com"
            | "sk-ssh-ed25519@openssh.com"
    ) || s.ends_with("-cert-v01@openssh.com")
}

/// Splits the options prefix (up to the first unquoted whitespace) from the rest.
fn split_options(line: &str) -> Result<(&str, &str), String> {
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            c if c.is_whitespace() && !in_quote => return Ok((&line[..i], line[i..].trim_start())),
            _ => {}
        }
    }
    if in_quote {
        Err("unterminated quote in options".to_owned())
    } else {
        Err("no key after options".to_owned())
    }
}

/// Parses a quoted option value starting right after `name=`; returns (value, rest).
fn quoted_value(s: &str) -> Result<(String, &str), String> {
    let Some(body) = s.strip_prefix('"') else {
        return Err("option value must be quoted".to_owned());
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return Err("unterminated quote".to_owned()),
            },
            '"' => return Ok((out, &body[i + 1..])),
            c => out.push(c),
        }
    }
    Err("unterminated quote".to_owned())
}

/// Parses `YYYYMMDD[HHMM[SS]][Z]` (OpenSSH `parse_absolute_time`): local time, or UTC with a
/// trailing `Z`.
fn parse_expiry(s: &str) -> Option<i64> {
    let (digits, utc) = match s.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (s, false),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return None;
    }
    let num = |a: usize, b: usize| digits.get(a..b).and_then(|t| t.parse::<i64>().ok());
    let (y, mo, d) = (num(0, 4)?, num(4, 6)?, num(6, 8)?);
    let (h, mi) = if digits.len() >= 12 {
        (num(8, 10)?, num(10, 12)?)
    } else {
        (0, 0)
    };
    let sec = if digits.len() == 14 { num(12, 14)? } else { 0 };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    if utc {
        Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
    } else {
        local_mktime(y, mo, d, h, mi, sec)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn local_mktime(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    let c = |v: i64| libc::c_int::try_from(v).ok();
    // SAFETY: an all-zero `tm` is a valid value (integers and, on glibc, a null tm_zone).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = c(y - 1900)?;
    tm.tm_mon = c(mo - 1)?;
    tm.tm_mday = c(d)?;
    tm.tm_hour = c(h)?;
    tm.tm_min = c(mi)?;
    tm.tm_sec = c(s)?;
    tm.tm_isdst = -1;
    // SAFETY: `tm` is a valid, exclusively borrowed struct for the duration of the call.
    let t = unsafe { libc::mktime(&mut tm) };
    // time_t is i64 here but i32 on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    (t != -1).then_some(i64::from(t))
}

/// Parses the options prefix of a key line (OpenSSH `sshauthopt_parse`).
fn parse_options(mut s: &str) -> Result<KeyOptions, String> {
    let mut o = KeyOptions::default();
    while !s.is_empty() {
        let name_end = s.find(['=', ',']).unwrap_or(s.len());
        let name = &s[..name_end];
        let lower = name.to_ascii_lowercase();
        let rest = &s[name_end..];
        let (value, rest) = if let Some(v) = rest.strip_prefix('=') {
            let (value, r) = quoted_value(v).map_err(|e| format!("{name}: {e}"))?;
            (Some(value), r)
        } else {
            (None, rest)
        };
        let flag = |o: &mut KeyOptions, set: fn(&mut KeyOptions)| -> Result<(), String> {
            if value.is_some() {
                return Err(format!("option {name} takes no value"));
            }
            set(o);
            Ok(())
        };
        match lower.as_str() {
            "restrict" => flag(&mut o, |o| o.restrict = true)?,
            "no-pty" => flag(&mut o, |o| o.no_pty = true)?,
            "no-port-forwarding" => flag(&mut o, |o| o.no_port_forwarding = true)?,
            "no-agent-forwarding" => flag(&mut o, |o| o.no_agent_forwarding = true)?,
            "no-x11-forwarding" => flag(&mut o, |o| o.no_x11_forwarding = true)?,
            "no-user-rc" => flag(&mut o, |o| o.no_user_rc = true)?,
            "pty" | "user-rc" | "port-forwarding" | "agent-forwarding" | "x11-forwarding"
            | "no-touch-required" | "verify-required" => {
                flag(&mut o, |_| {})?;
                o.ignored.push(name.to_owned());
            }
            "from" | "command" | "expiry-time" | "environment" | "permitopen" | "permitlisten"
            | "tunnel" | "principals" => {
                let Some(value) = value else {
                    return Err(format!("option {name} needs a value"));
                };
                match lower.as_str() {
                    "from" if o.from.is_some() => return Err("from specified twice".to_owned()),
                    "from" => o.from = Some(value),
                    "command" if o.command.is_some() => {
                        return Err("command specified twice".to_owned());
                    }
                    "command" => o.command = Some(value),
                    "expiry-time" => {
                        let t = parse_expiry(&value)
                            .ok_or_else(|| format!("invalid expiry-time {value:?}"))?;
                        // As OpenSSH: the earliest of several wins.
                        o.expiry_time = Some(o.expiry_time.map_or(t, |old| old.min(t)));
                    }
                    _ => o.ignored.push(name.to_owned()),
                }
            }
            "cert-authority" => {
                return Err("cert-authority keys are not supported".to_owned());
            }
            _ => return Err(format!("unknown key option {name:?}")),
        }
        s = match rest.strip_prefix(',') {
            Some(r) if !r.is_empty() => r,
            Some(_) => return Err("trailing comma in options".to_owned()),
            None if rest.is_empty() => rest,
            None => return Err(format!("unexpected text after option {name}")),
        };
    }
    Ok(o)
}

fn parse_key_line(line: &str) -> Result<KeyEntry, String> {
    let first = line.split_whitespace().next().unwrap_or("");
    if is_key_type_name(first) {
        return parse_public_key(line).map(|key| KeyEntry {
            options: KeyOptions::default(),
            key,
        });
    }
    let (opts, rest) = split_options(line)?;
    let options = parse_options(opts).map_err(|e| format!("bad key options: {e}"))?;
    let kind = rest.split_whitespace().next().unwrap_or("");
    if !is_key_type_name(kind) {
        return Err(format!("unknown key type {kind:?}"));
    }
    let key = parse_public_key(rest)?;
    Ok(KeyEntry { options, key })
}

/// Parses an `authorized_keys` file; comments and blank lines are skipped, every other line
/// is returned with its number, parsed or with the reason it is skipped.
#[must_use]
pub fn parse_authorized_keys(text: &str) -> Vec<AuthorizedKey> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            Some(AuthorizedKey {
                line: i + 1,
                entry: parse_key_line(line),
            })
        })
        .collect()
}

/// A matching `authorized_keys` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMatch {
    /// The file.
    pub path: String,
    /// 1-based line number.
    pub line: usize,
    /// The line's options.
    pub options: KeyOptions,
}

/// The outcome of [`search_keys`]: the match (if any) and messages for the log about lines
/// that were skipped or whose key matched but whose options refused it (sshd's wording).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySearch {
    /// The first line that accepts the key.
    pub found: Option<KeyMatch>,
    /// Log messages, in file order.
    pub notes: Vec<String>,
}

/// A CIDR network `addr[/len]`: `Ok(None)` if `s` is not an address (use wildcard matching),
/// `Err` if the mask length is invalid for the address or host bits are set (OpenSSH
/// `addr_pton_cidr` returning -2 is an error for the whole list).
fn parse_cidr(s: &str) -> Result<Option<(IpAddr, u32)>, ()> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let Ok(addr) = a.parse::<IpAddr>() else {
        return Ok(None);
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u32>().map_err(|_| ())?
        }
        Some(_) => return Ok(None),
    };
    if len > max {
        return Err(());
    }
    let host_bits_set = match addr {
        IpAddr::V4(v) => u32::from(v) & !u32::MAX.checked_shl(32 - len).unwrap_or(0) != 0,
        IpAddr::V6(v) => u128::from(v) & !u128::MAX.checked_shl(128 - len).unwrap_or(0) != 0,
    };
    if host_bits_set {
        return Err(());
    }
    Ok(Some((addr, len)))
}

fn in_network(net: IpAddr, len: u32, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// IPv4-mapped IPv6 addresses are treated as IPv4, as sshd does.
fn normalise(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// `from="…"` matching (OpenSSH `match_host_and_ip` with the address as host name, as with
/// `UseDNS no`): CIDR entries or wildcard patterns, `!` negation (a negated hit refuses at
/// once). `Err` for a malformed list (the key then does not match).
pub fn from_matches(client: IpAddr, list: &str) -> Result<bool, String> {
    let client = normalise(client);
    let text = client.to_string();
    let mut found = false;
    for entry in list.split(',') {
        let (neg, pat) = match entry.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, entry),
        };
        if pat.is_empty() {
            return Err(format!("empty entry in from=\"{list}\""));
        }
        let hit = match parse_cidr(pat) {
            Err(()) => {
                return Err(format!(
                    "inconsistent mask length for match network \"{pat}\""
                ));
            }
            Ok(Some((net, len))) => in_network(normalise(net), len, client),
            Ok(None) => wildcard_match(&text, &pat.to_ascii_lowercase()),
        };
        if hit {
            if neg {
                return Ok(false);
            }
            found = true;
        }
    }
    Ok(found)
}

/// Finds `offered` (compared by key data, not comment) in `files` (path, text): the first line
/// whose options accept it for `client` at `now_unix`.
#[must_use]
pub fn find_key(
    files: &[(String, String)],
    offered: &PublicKey,
    client: IpAddr,
    now_unix: i64,
) -> Option<KeyMatch> {
    search_keys(files, offered, client, now_unix).found
}

/// [`find_key`] with the log messages about skipped and refused lines.
#[must_use]
pub fn search_keys(
    files: &[(String, String)],
    offered: &PublicKey,
    client: IpAddr,
    now_unix: i64,
) -> KeySearch {
    let mut out = KeySearch::default();
    let ip = normalise(client).to_string();
    for (path, text) in files {
        for ak in parse_authorized_keys(text) {
            let entry = match ak.entry {
                Ok(e) => e,
                Err(reason) => {
                    out.notes
                        .push(format!("{path}:{}: skipping line: {reason}", ak.line));
                    continue;
                }
            };
            if entry.key.key_data() != offered.key_data() {
                continue;
            }
            let o = &entry.options;
            if let Some(exp) = o.expiry_time
                && exp < now_unix
            {
                out.notes.push(format!("{path}:{}: key expired", ak.line));
                continue;
            }
            if let Some(from) = &o.from {
                match from_matches(client, from) {
                    Ok(true) => {}
                    Ok(false) => {
                        out.notes.push(format!(
                            "Authentication tried with correct key but not from a permitted \
                             host (host={ip}, ip={ip}, required={from}). ({path}:{})",
                            ak.line
                        ));
                        continue;
                    }
                    Err(e) => {
                        out.notes.push(format!("{path}:{}: {e}", ak.line));
                        continue;
                    }
                }
            }
            out.found = Some(KeyMatch {
                path: path.clone(),
                line: ak.line,
                options: entry.options,
            });
            return out;
        }
    }
    out
}

/// What sshd prints after `ssh2: ` for a key, e.g.
/// `ED25519 SHA256:0nanQsiHvPfNiAiKE+fy4KJsy63GNhMc3ORj5s+QffY`.
#[must_use]
pub fn key_log_text(key: &PublicKey) -> String {
    let kind = match key.algorithm() {
        Algorithm::Ed25519 => "ED25519",
        Algorithm::Rsa { .. } => "RSA",
        Algorithm::Ecdsa { .. } => "ECDSA",
        Algorithm::SkEcdsaSha2NistP256 => "ECDSA-SK",
        Algorithm::SkEd25519 => "ED25519-SK",
        Algorithm::Dsa => "DSA",
        _ => "unknown",
    };
    format!("{kind} {}", key.fingerprint(HashAlg::Sha256))
}

// ---------------------------------------------------------------------------------------
// StrictModes

fn owner_ok(meta: &std::fs::Metadata, uid: u32) -> bool {
    (meta.uid() == 0 || meta.uid() == uid) && meta.mode() & 0o022 == 0
}

/// sshd's `auth_secure_path` (StrictModes): the key file must be a regular file, and it and
/// every directory above it up to `home` (or `/` when the file is outside home) must be owned
/// by root or `uid` and not group/other-writable. The error is sshd's text (log it as
/// `Authentication refused: {err}`).
///
/// # Errors
/// The refusal message.
pub fn check_key_file_modes(path: &Path, uid: u32, home: &Path) -> Result<(), String> {
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("realpath {} failed: {e}", path.display()))?;
    let home = std::fs::canonicalize(home).ok();
    let meta =
        std::fs::metadata(&real).map_err(|e| format!("stat {} failed: {e}", real.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", real.display()));
    }
    if !owner_ok(&meta, uid) {
        return Err(format!(
            "bad ownership or modes for file {}",
            real.display()
        ));
    }
    let mut dir: PathBuf = real;
    while let Some(parent) = dir.parent().map(Path::to_path_buf) {
        dir = parent;
        let ok = std::fs::metadata(&dir).is_ok_and(|m| owner_ok(&m, uid));
        if !ok {
            return Err(format!(
                "bad ownership or modes for directory {}",
                dir.display()
            ));
        }
        if home.as_deref() == Some(dir.as_path()) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    // `ssh-keygen -t ed25519 -C alice@test`; `ssh-keygen -lf` gives
    // `256 SHA256:52AhtMVZ75mc3uvhPOIIN6rRc365Z9rhNBgjjbrfhRY alice@test (ED25519)`.
    const ALICE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEU5/h56NwHrXNkKmiosYdxS/NWsqczFYLimr3bD+ZHv alice@test";
    const ALICE_FP: &str = "SHA256:52AhtMVZ75mc3uvhPOIIN6rRc365Z9rhNBgjjbrfhRY";
    const BOB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFKR5wiMjVd1ixqd5dNMTXKBV7BOM+2MlLpBd8YMjKhc bob";
    // `ssh-keygen -t ecdsa`; `ssh-keygen -lf`: `256 SHA256:d73CW3c5…mQ e (ECDSA)`.
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEpVpNviywTBPZ4M8n07oXRzzOaZZTdXg10fz0Yfqhnt5MS+TNLV5BnpYt+mHjA3K8/UdKNlvnJ0fh0EDq0TxRg= e";
    const ECDSA_FP: &str = "SHA256:d73CW3c5PnfHpeh5w1YOHwjCl6VSYER8iF8t2oSAHmQ";
    // `openssl passwd -6 -salt saltsalt secret`
    const SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    fn key(s: &str) -> PublicKey {
        parse_public_key(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn key_log_text_matches_ssh_keygen() {
        assert_eq!(key_log_text(&key(ALICE)), format!("ED25519 {ALICE_FP}"));
        assert_eq!(key_log_text(&key(ECDSA)), format!("ECDSA {ECDSA_FP}"));
        assert!(!key_log_text(&key(ALICE)).ends_with('='));
    }

    #[test]
    fn users_file_parses() {
        let alice_in_text = ALICE.replace(' ', "  ");
        let text = format!(
            "# virtual users\n\
             \n\
             cam1:{SHA512}:2001:2001:/upload:/srv/sftp/%u:{alice_in_text} ; {BOB}\n\
             cam2:*:2002:65534:::\n\
             cam3::2003:2003::/srv/jail:\r\n\
             cam4:!{SHA512}:2004:2004:/in:%h/x:{ECDSA}\n"
        );
        let f = UsersFile::parse(&text, "users").unwrap();
        assert_eq!(f.accounts().len(), 4);
        let c1 = f.get("cam1").unwrap();
        assert_eq!(c1.kind, AccountKind::Virtual);
        assert_eq!((c1.uid, c1.gid), (2001, 2001));
        assert_eq!(c1.home, "/upload");
        assert_eq!(c1.chroot.as_deref(), Some("/srv/sftp/%u"));
        assert_eq!(c1.password_hash.as_deref(), Some(SHA512));
        assert_eq!(c1.keys.len(), 2);
        assert_eq!(c1.keys[0].key_data(), key(ALICE).key_data());
        assert_eq!(c1.keys[1].key_data(), key(BOB).key_data());
        assert_eq!(c1.gids, vec![2001]);
        assert_eq!(c1.groups.len(), 1);
        assert!(!c1.expired(i64::MAX));
        let c2 = f.get("cam2").unwrap();
        assert_eq!(c2.home, "/");
        assert_eq!(c2.chroot, None);
        assert_eq!(c2.password_hash, None);
        assert!(c2.keys.is_empty());
        assert_eq!(c2.groups, vec![group_name(65534)]);
        let c3 = f.get("cam3").unwrap();
        assert_eq!(c3.password_hash, None);
        assert_eq!(c3.chroot.as_deref(), Some("/srv/jail"));
        let c4 = f.get("cam4").unwrap();
        assert_eq!(c4.password_hash, None); // locked
        assert_eq!(c4.chroot.as_deref(), Some("%h/x"));
        assert_eq!(c4.keys.len(), 1);
        assert!(f.get("cam5").is_none());
        assert!(f.get("").is_none());
        // A gid with no group name is shown as the number.
        let f = UsersFile::parse("u:*:1:4000123::/j:\n", "x").unwrap();
        assert_eq!(f.get("u").unwrap().groups, vec!["4000123".to_owned()]);
    }

    fn parse_err(text: &str) -> (usize, String) {
        match UsersFile::parse(text, "/etc/sftpd/users") {
            Err(UsersError::Parse {
                file,
                line,
                message,
            }) => {
                assert_eq!(file, "/etc/sftpd/users");
                (line, message)
            }
            other => panic!("expected parse error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn users_file_errors() {
        let (line, msg) = parse_err("a:*:1:1:::\n# c\na:*:2:2:::\n");
        assert_eq!(line, 3);
        assert!(
            msg.contains("duplicate user \"a\"") && msg.contains("line 1"),
            "{msg}"
        );
        let (line, msg) = parse_err("\n\na:*:x1:1:::\n");
        assert_eq!(line, 3);
        assert!(msg.contains("bad uid \"x1\""), "{msg}");
        let (_, msg) = parse_err("a:*:1:-1:::\n");
        assert!(msg.contains("bad gid"), "{msg}");
        let (_, msg) = parse_err("a:*:99999999999:1:::\n");
        assert!(msg.contains("bad uid"), "{msg}");
        let (_, msg) = parse_err(&format!("a:*:1:1:::{ALICE};ssh-ed25519 AAAAbroken\n"));
        assert!(msg.contains("bad key at position 2"), "{msg}");
        let (_, msg) = parse_err("a:*:1:1:::garbage\n");
        assert!(msg.contains("bad key at position 1"), "{msg}");
        let (_, msg) = parse_err("a:$1$saltsalt$9xy1btjgzLYfb7hivXtC//:1:1:::\n");
        assert!(msg.contains("bad hash kind $1$"), "{msg}");
        assert!(!msg.contains("9xy1"), "hash material leaked: {msg}");
        let (_, msg) = parse_err("a:*:1:1\n");
        assert!(msg.contains("expected 7 fields"), "{msg}");
        let (_, msg) = parse_err("a:*:1:1:upload::\n");
        assert!(msg.contains("bad home"), "{msg}");
        let (_, msg) = parse_err("a:*:1:1::srv/x:\n");
        assert!(msg.contains("bad chroot"), "{msg}");
        let (_, msg) = parse_err("a b:*:1:1:::\n");
        assert!(msg.contains("bad user name"), "{msg}");
        let (_, msg) = parse_err(":*:1:1:::\n");
        assert!(msg.contains("bad user name"), "{msg}");
        let e = UsersFile::parse("a:*:1:1\n", "F").unwrap_err().to_string();
        assert!(e.starts_with("F:1: "), "{e}");
    }

    #[test]
    fn users_file_load_checks_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users");
        std::fs::write(&p, "a:*:1:1:::\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = UsersFile::load(&p).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, UsersError::Insecure { .. }), "{text}");
        assert!(
            text.contains(&format!("chmod 600 {}", p.display())),
            "{text}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o606)).unwrap();
        assert!(matches!(
            UsersFile::load(&p),
            Err(UsersError::Insecure { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(UsersFile::load(&p).unwrap().get("a").is_some());
        assert!(matches!(
            UsersFile::load(&dir.path().join("missing")),
            Err(UsersError::Io { .. })
        ));
        // Ownership: a file owned by someone else is refused (checked on the metadata).
        let meta = std::fs::metadata(&p).unwrap();
        let owner = meta.uid();
        if owner != 0 {
            let e = check_users_file_meta("P", &meta, owner + 1)
                .unwrap_err()
                .to_string();
            assert!(e.contains("chown root P"), "{e}");
        }
        assert!(check_users_file_meta("P", &meta, owner).is_ok());
        let dmeta = std::fs::metadata(dir.path()).unwrap();
        assert!(check_users_file_meta("D", &dmeta, owner).is_err());
    }

    #[test]
    fn system_accounts() {
        let root = system_account("root").unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.kind, AccountKind::System);
        assert_eq!(root.gids.first(), Some(&0));
        assert!(root.groups.contains(&"root".to_owned()));
        assert_eq!(root.groups.len(), root.gids.len());
        assert!(system_account("no-such-user-sftpd-test").unwrap().is_none());
        assert!(system_account("").unwrap().is_none());

        let shadow = format!("root:{SHA512}:19700:0:99999:7::20000:\n");
        let r = system_account_with_shadow("root", Some(&shadow))
            .unwrap()
            .unwrap();
        assert_eq!(r.password_hash.as_deref(), Some(SHA512));
        assert_eq!(r.expire_day, Some(20000));
        assert!(!r.expired(20000));
        assert!(r.expired(20001));
        assert!(!r.locked);
        let locked = format!("root:!{SHA512}:19700:0:99999:7:::\n");
        let r = system_account_with_shadow("root", Some(&locked))
            .unwrap()
            .unwrap();
        assert_eq!(r.password_hash, None);
        assert!(r.locked);
        let star = system_account_with_shadow("root", Some("root:*:1::::::\n"))
            .unwrap()
            .unwrap();
        assert_eq!(star.password_hash, None);
        assert!(!star.locked);
        // Shadow unreadable: the passwd field ("x") is not a hash.
        let r = system_account_with_shadow("root", None).unwrap().unwrap();
        assert_eq!(r.password_hash, None);
        assert_eq!(r.expire_day, None);
    }

    #[test]
    fn authorized_keys_parsing() {
        let text = format!(
            "# comment\n\
             \n\
             {ALICE}\n\
             from=\"10.0.0.0/8,!10.1.2.3\",no-pty,command=\"internal-sftp -R\",restrict {BOB}\n\
             expiry-time=\"20200101Z\",no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc {ECDSA}\n\
             frobnicate {ALICE}\n\
             ssh-ed25519 AAAAnotbase64!!\n\
             command=\"unterminated {ALICE}\n\
             environment=\"A=b\",permitopen=\"x:1\",pty {BOB}\n\
             cert-authority {ALICE}\n\
             \tcommand=\"say \\\"hi\\\"\"\t{ALICE}\n"
        );
        let keys = parse_authorized_keys(&text);
        let lines: Vec<usize> = keys.iter().map(|k| k.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let e = keys[0].entry.as_ref().unwrap();
        assert_eq!(e.options, KeyOptions::default());
        assert_eq!(e.key.key_data(), key(ALICE).key_data());
        let e = keys[1].entry.as_ref().unwrap();
        assert_eq!(e.options.from.as_deref(), Some("10.0.0.0/8,!10.1.2.3"));
        assert_eq!(e.options.command.as_deref(), Some("internal-sftp -R"));
        assert!(e.options.no_pty && e.options.restrict);
        let e = keys[2].entry.as_ref().unwrap();
        assert_eq!(e.options.expiry_time, Some(1_577_836_800));
        assert!(e.options.no_port_forwarding && e.options.no_agent_forwarding);
        assert!(e.options.no_x11_forwarding && e.options.no_user_rc);
        assert!(
            keys[3]
                .entry
                .as_ref()
                .unwrap_err()
                .contains("unknown key option")
        );
        assert!(keys[4].entry.is_err());
        assert!(keys[5].entry.is_err());
        let e = keys[6].entry.as_ref().unwrap();
        assert_eq!(e.options.ignored, vec!["environment", "permitopen", "pty"]);
        assert!(
            keys[7]
                .entry
                .as_ref()
                .unwrap_err()
                .contains("cert-authority")
        );
        let e = keys[8].entry.as_ref().unwrap();
        assert_eq!(e.options.command.as_deref(), Some("say \"hi\""));
    }

    #[test]
    fn expiry_formats() {
        assert_eq!(parse_expiry("19700101Z"), Some(0));
        assert_eq!(parse_expiry("197001010001Z"), Some(60));
        assert_eq!(parse_expiry("20240229235959Z"), Some(1_709_251_199));
        assert!(parse_expiry("20240230").is_some()); // mktime normalises, as OpenSSH's
        for bad in [
            "2024",
            "2024010",
            "202401011",
            "20241301Z",
            "2024010125",
            "x0240101",
            "",
        ] {
            assert_eq!(parse_expiry(bad), None, "{bad}");
        }
        // Local time: within a day of UTC.
        let local = parse_expiry("20300101").unwrap();
        assert!((local - parse_expiry("20300101Z").unwrap()).abs() <= 86_400);
    }

    #[test]
    fn from_patterns() {
        let m = |addr: &str, list: &str| from_matches(ip(addr), list);
        assert_eq!(m("10.1.2.3", "10.0.0.0/8"), Ok(true));
        assert_eq!(m("11.0.0.1", "10.0.0.0/8"), Ok(false));
        assert_eq!(m("10.1.2.3", "10.0.0.0/8,!10.1.2.3"), Ok(false));
        assert_eq!(m("10.1.2.4", "10.0.0.0/8,!10.1.2.3"), Ok(true));
        assert_eq!(m("10.1.2.4", "!10.1.2.3"), Ok(false)); // no positive match
        assert_eq!(m("192.168.1.77", "192.168.1.*"), Ok(true));
        assert_eq!(m("192.168.1.77", "192.168.1.?"), Ok(false));
        assert_eq!(m("192.168.1.77", "*,!192.168.1.7?"), Ok(false));
        assert_eq!(m("1.2.3.4", "0.0.0.0/0"), Ok(true));
        assert_eq!(m("1.2.3.4", "1.2.3.4/32"), Ok(true));
        assert_eq!(m("1.2.3.5", "1.2.3.4/32"), Ok(false));
        assert_eq!(m("1.2.3.5", "1.2.3.4/31"), Ok(true));
        assert_eq!(m("1.2.3.6", "1.2.3.4/31"), Ok(false));
        assert!(m("10.0.0.1", "10.0.0.1/8").is_err()); // host bits set
        assert!(m("10.0.0.1", "10.0.0.0/33").is_err());
        assert!(m("10.0.0.1", "10.0.0.0/8,").is_err());
        assert!(m("10.0.0.1", "!").is_err());
        // IPv6
        assert_eq!(m("2001:db8::1", "2001:db8::/32"), Ok(true));
        assert_eq!(m("2001:db9::1", "2001:db8::/32"), Ok(false));
        assert_eq!(m("2001:db8:ffff::1", "2001:db8::/33"), Ok(false));
        assert_eq!(m("2001:db8:7fff::1", "2001:db8::/33"), Ok(true));
        assert_eq!(m("::1", "::/0"), Ok(true));
        assert_eq!(m("::1", "::1"), Ok(true));
        assert_eq!(m("fe80::1", "FE80::/10"), Ok(true));
        assert_eq!(m("fe80::1", "fe80::*"), Ok(true));
        assert!(m("::1", "::1/129").is_err());
        assert!(m("::1", "::1/64").is_err());
        // Families do not mix, except IPv4-mapped clients, which count as IPv4.
        assert_eq!(m("10.0.0.1", "::/0"), Ok(false));
        assert_eq!(m("2001:db8::1", "0.0.0.0/0"), Ok(false));
        assert_eq!(m("::ffff:10.0.0.1", "10.0.0.0/8"), Ok(true));
        assert_eq!(m("::ffff:10.0.0.1", "10.0.0.*"), Ok(true));
        // An unparseable mask is a wildcard pattern, which does not match.
        assert_eq!(m("10.0.0.1", "10.0.0.0/x"), Ok(false));
    }

    #[test]
    fn find_key_rules() {
        let files = vec![
            (
                "/home/a/.ssh/authorized_keys".to_owned(),
                format!(
                    "{BOB}\n\
                     from=\"192.168.0.0/16\" {ALICE}\n\
                     expiry-time=\"20000101Z\" {ALICE}\n"
                ),
            ),
            (
                "/etc/keys/a".to_owned(),
                format!(
                    "nonsense-option {ALICE}\n\
                     # other comment\n\
                     expiry-time=\"20300101Z\",command=\"internal-sftp\" {}\n",
                    ALICE.replace("alice@test", "different comment")
                ),
            ),
        ];
        let alice = key(ALICE);
        let now = 1_700_000_000; // 2023
        // From the LAN: line 2 of the first file.
        let m = find_key(&files, &alice, ip("192.168.3.4"), now).unwrap();
        assert_eq!(
            (m.path.as_str(), m.line),
            ("/home/a/.ssh/authorized_keys", 2)
        );
        // Elsewhere: line 2 refused (from), line 3 expired, second file line 1 unknown option,
        // line 3 matches although the comment differs.
        let s = search_keys(&files, &alice, ip("8.8.8.8"), now);
        let m = s.found.unwrap();
        assert_eq!((m.path.as_str(), m.line), ("/etc/keys/a", 3));
        assert_eq!(m.options.command.as_deref(), Some("internal-sftp"));
        assert_eq!(s.notes.len(), 3, "{:?}", s.notes);
        assert!(s.notes[0].contains("not from a permitted host"));
        assert!(s.notes[1].contains("key expired"));
        assert!(s.notes[2].contains("/etc/keys/a:1:"));
        // After 2030 everything for alice has expired or is refused.
        assert_eq!(find_key(&files, &alice, ip("8.8.8.8"), 1_900_000_000), None);
        // Bob without options.
        let m = find_key(&files, &key(BOB), ip("::1"), now).unwrap();
        assert_eq!(m.line, 1);
        assert_eq!(find_key(&files, &key(ECDSA), ip("::1"), now), None);
        assert_eq!(find_key(&[], &alice, ip("::1"), now), None);
    }

    #[test]
    fn strict_modes() {
        let home = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let h = home.path();
        std::fs::set_permissions(h, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ssh = h.join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
        let ak = ssh.join("authorized_keys");
        std::fs::write(&ak, ALICE).unwrap();
        std::fs::set_permissions(&ak, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Directories above the home (/tmp is 1777) are not checked.
        assert_eq!(check_key_file_modes(&ak, uid, h), Ok(()));
        let real_ak = std::fs::canonicalize(&ak).unwrap();
        let real_ssh = std::fs::canonicalize(&ssh).unwrap();

        std::fs::set_permissions(&ak, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert_eq!(
            check_key_file_modes(&ak, uid, h),
            Err(format!(
                "bad ownership or modes for file {}",
                real_ak.display()
            ))
        );
        std::fs::set_permissions(&ak, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            check_key_file_modes(&ak, uid, h),
            Err(format!(
                "bad ownership or modes for directory {}",
                real_ssh.display()
            ))
        );
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Home itself is checked.
        std::fs::set_permissions(h, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(
            check_key_file_modes(&ak, uid, h)
                .unwrap_err()
                .starts_with("bad ownership or modes for directory ")
        );
        std::fs::set_permissions(h, std::fs::Permissions::from_mode(0o755)).unwrap();
        // With a different home, the walk goes up to / and meets /tmp (1777).
        if std::fs::metadata("/tmp").unwrap().mode() & 0o022 != 0 && h.starts_with("/tmp") {
            let e = check_key_file_modes(&ak, uid, Path::new("/nonexistent")).unwrap_err();
            assert_eq!(e, "bad ownership or modes for directory /tmp");
        }
        // Owned by someone else (uid is neither 0 nor the owner).
        if uid != 0 {
            assert!(check_key_file_modes(&ak, uid + 1, h).is_err());
        } else {
            assert_eq!(check_key_file_modes(&ak, 4242, h), Ok(()));
        }
        // Not a regular file, or missing.
        assert!(
            check_key_file_modes(&ssh, uid, h)
                .unwrap_err()
                .ends_with("is not a regular file")
        );
        assert!(
            check_key_file_modes(&ssh.join("nope"), uid, h)
                .unwrap_err()
                .starts_with("realpath ")
        );
    }

    proptest::proptest! {
        #[test]
        fn users_file_never_panics(text in "([a-z0-9:;*!$/ %\n-]{0,60}){0,6}") {
            let _ = UsersFile::parse(&text, "p");
        }

        #[test]
        fn authorized_keys_never_panic(text in "[a-zA-Z0-9=\",!/\\\\ .*:\n-]{0,120}", last in 0u8..255) {
            let ks = parse_authorized_keys(&text);
            let files = vec![("f".to_owned(), text.clone())];
            let _ = find_key(&files, &key(ALICE), IpAddr::from([10, 0, 0, last]), 0);
            for k in ks {
                proptest::prop_assert!(k.line >= 1);
            }
        }

        #[test]
        fn from_never_panics(list in "[0-9a-f.:/!*?,]{0,40}", v6 in proptest::bool::ANY) {
            let addr = if v6 { ip("2001:db8::1") } else { ip("10.0.0.1") };
            let _ = from_matches(addr, &list);
        }
    }
}
