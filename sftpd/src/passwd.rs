//! System-account passwords as `sshd` checks them: `/etc/shadow` parsing and crypt(3) hash
//! verification (sans-IO — callers pass the file's text and the password bytes).
//!
//! Supported schemes: yescrypt (`$y$`, Debian 12's default), SHA-512 crypt (`$6$`) and
//! SHA-256 crypt (`$5$`), both with optional `rounds=N$`, and Argon2 PHC strings
//! (`$argon2id$`, `$argon2i$`, `$argon2d$`, as written by `argon2(1)` and most password tools;
//! used by the `UsersFile` of virtual users). Locked (`!…`, `*…`) and empty
//! ("no password") entries are refused, as `sshd` does with `PermitEmptyPasswords no`.
//! Other schemes (`$1$` MD5, `$2b$` bcrypt, DES) are reported as [`HashError::Unsupported`].
//!
//! Timing: to avoid telling unknown users from wrong passwords, use [`verify_or_dummy`] (or
//! verify against [`dummy_hash`] yourself) whenever there is no usable hash, so that a failed
//! login always costs one yescrypt computation at Debian's default cost.

use std::fmt;

/// The longest password accepted, in bytes. SHA-crypt costs O(len²) (as glibc's does), so a
/// multi-megabyte password from the network would pin a CPU; longer passwords never match.
pub const MAX_PASSWORD_LEN: usize = 4096;

/// Upper bound on the memory a yescrypt hash's parameters may ask for (1 GiB, libxcrypt's
/// largest cost factor, 11, uses 1 GiB). Larger is treated as malformed rather than attempted.
pub const MAX_YESCRYPT_MEMORY: u64 = 1 << 30;

/// A valid yescrypt hash with Debian's default parameters (`j9T`: N=4096, r=32, 16 MiB) of a
/// random password that was thrown away, so nothing verifies against it.
/// Upper bound on the memory an Argon2 hash's `m=` parameter may ask for (1 GiB, as for
/// yescrypt). Larger is reported as [`HashError::TooExpensive`] without hashing.
pub const MAX_ARGON2_MEMORY: u64 = 1 << 30;

/// Upper bound on an Argon2 hash's passes (`t=`): each pass walks the whole memory again, so a
/// hostile `t=4294967295` would pin a CPU for ever. Common settings are 1–10.
pub const MAX_ARGON2_PASSES: u32 = 64;

/// Upper bound on an Argon2 hash's lanes (`p=`); each lane is computed in turn here.
pub const MAX_ARGON2_LANES: u32 = 64;

const DUMMY_HASH: &str =
    "$y$j9T$G2paIC1l.q4s/Y4att8/D.$dxbqBSAf6y/ayJNyY1dpeYxKJjiNfR31JIq3yGczzS3";

/// Errors from [`verify`]. Messages never include hash material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// A scheme this server does not implement (`$1$`, `$2b$`, DES, …).
    #[error("unsupported password hash scheme {prefix}")]
    Unsupported {
        /// The scheme prefix, e.g. `$1$`, or `DES` / `unknown` for hashes without one.
        prefix: String,
    },
    /// The hash claims a supported scheme but does not parse (or its parameters are invalid).
    #[error("malformed {scheme} password hash")]
    Malformed {
        /// `yescrypt`, `sha512crypt`, `sha256crypt`, `argon2id`, `argon2i` or `argon2d`.
        scheme: &'static str,
    },
    /// A hash whose parameters need more than the scheme's memory bound
    /// ([`MAX_YESCRYPT_MEMORY`], [`MAX_ARGON2_MEMORY`]) or, for Argon2, more passes or lanes
    /// than [`MAX_ARGON2_PASSES`] / [`MAX_ARGON2_LANES`].
    #[error("{scheme} password hash parameters are too expensive (memory limit {max} bytes)")]
    TooExpensive {
        /// `yescrypt` or the Argon2 variant.
        scheme: &'static str,
        /// The memory limit of that scheme.
        max: u64,
    },
}

/// What a shadow password field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKind {
    /// `$y$…`
    Yescrypt,
    /// `$6$…`
    ShaCrypt512,
    /// `$5$…`
    ShaCrypt256,
    /// `$argon2id$…`
    Argon2id,
    /// `$argon2i$…`
    Argon2i,
    /// `$argon2d$…`
    Argon2d,
    /// Starts with `!` or `*` (`!`, `!!`, `*`, `!$6$…`, `*LK*`): password login disabled.
    Locked,
    /// Empty: no password; refused (sshd's `PermitEmptyPasswords no`).
    NoPassword,
    /// Anything else; the prefix as in [`HashError::Unsupported`].
    Unsupported(String),
}

impl HashKind {
    /// The reason a login with this kind of hash is refused before any hashing, if any.
    #[must_use]
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Self::Locked => Some("account is locked"),
            Self::NoPassword => Some("account has no password"),
            Self::Unsupported(_) => Some("unsupported password hash"),
            Self::Yescrypt
            | Self::ShaCrypt512
            | Self::ShaCrypt256
            | Self::Argon2id
            | Self::Argon2i
            | Self::Argon2d => None,
        }
    }
}

impl fmt::Display for HashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Yescrypt => f.write_str("yescrypt"),
            Self::ShaCrypt512 => f.write_str("sha512crypt"),
            Self::ShaCrypt256 => f.write_str("sha256crypt"),
            Self::Argon2id => f.write_str("argon2id"),
            Self::Argon2i => f.write_str("argon2i"),
            Self::Argon2d => f.write_str("argon2d"),
            Self::Locked => f.write_str("locked"),
            Self::NoPassword => f.write_str("no password"),
            Self::Unsupported(p) => write!(f, "unsupported ({p})"),
        }
    }
}

/// Classifies a shadow password field without hashing anything.
#[must_use]
pub fn classify(hash: &str) -> HashKind {
    if hash.is_empty() {
        return HashKind::NoPassword;
    }
    if hash.starts_with('!') || hash.starts_with('*') {
        return HashKind::Locked;
    }
    if hash.starts_with("$y$") {
        return HashKind::Yescrypt;
    }
    if hash.starts_with("$6$") {
        return HashKind::ShaCrypt512;
    }
    if hash.starts_with("$5$") {
        return HashKind::ShaCrypt256;
    }
    if hash.starts_with("$argon2id$") {
        return HashKind::Argon2id;
    }
    if hash.starts_with("$argon2i$") {
        return HashKind::Argon2i;
    }
    if hash.starts_with("$argon2d$") {
        return HashKind::Argon2d;
    }
    HashKind::Unsupported(unsupported_prefix(hash))
}

/// Names an unsupported scheme without echoing hash material.
fn unsupported_prefix(hash: &str) -> String {
    if let Some(rest) = hash.strip_prefix('$') {
        if let Some(end) = rest.find('$') {
            let id = &rest[..end];
            let sane = !id.is_empty()
                && id.len() <= 16
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if sane {
                return format!("${id}$");
            }
        }
        return "unknown".to_owned();
    }
    let crypt64 = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
    if hash.len() == 13 && hash.bytes().all(crypt64) {
        return "DES".to_owned();
    }
    if hash.len() == 20 && hash.starts_with('_') && hash.bytes().skip(1).all(crypt64) {
        return "_ (BSDi DES)".to_owned();
    }
    "unknown".to_owned()
}

/// Checks `password` against a shadow password field.
///
/// `Ok(true)` only for a supported hash that matches. Locked and empty hashes give `Ok(false)`
/// at once (see [`classify`] for why, and [`verify_or_dummy`] to keep the timing uniform), as
/// do passwords longer than [`MAX_PASSWORD_LEN`].
///
/// # Errors
/// [`HashError::Unsupported`] for other schemes, [`HashError::Malformed`] for hashes that
/// claim a supported scheme but do not parse, [`HashError::TooExpensive`] for yescrypt
/// parameters over [`MAX_YESCRYPT_MEMORY`] and Argon2 parameters over [`MAX_ARGON2_MEMORY`],
/// [`MAX_ARGON2_PASSES`] or [`MAX_ARGON2_LANES`].
pub fn verify(password: &[u8], hash: &str) -> Result<bool, HashError> {
    let kind = classify(hash);
    let scheme = match kind {
        HashKind::Locked | HashKind::NoPassword => return Ok(false),
        HashKind::Unsupported(prefix) => return Err(HashError::Unsupported { prefix }),
        HashKind::Yescrypt => "yescrypt",
        HashKind::ShaCrypt512 => "sha512crypt",
        HashKind::ShaCrypt256 => "sha256crypt",
        HashKind::Argon2id => "argon2id",
        HashKind::Argon2i => "argon2i",
        HashKind::Argon2d => "argon2d",
    };
    if password.len() > MAX_PASSWORD_LEN {
        return Ok(false);
    }
    if scheme.starts_with("argon2") {
        return verify_argon2(password, hash, scheme);
    }
    let result = if kind == HashKind::Yescrypt {
        check_yescrypt_cost(hash)?;
        yescrypt::PasswordVerifier::<str>::verify_password(
            &yescrypt::Yescrypt::default(),
            password,
            hash,
        )
    } else {
        // The algorithm is taken from the hash's `$6$`/`$5$` identifier, not from `SHA512`.
        sha_crypt::PasswordVerifier::<str>::verify_password(
            &sha_crypt::ShaCrypt::SHA512,
            password,
            hash,
        )
    };
    match result {
        Ok(()) => Ok(true),
        Err(yescrypt::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(_) => Err(HashError::Malformed { scheme }),
    }
}

/// Rejects yescrypt parameters that would allocate more than [`MAX_YESCRYPT_MEMORY`].
fn check_yescrypt_cost(hash: &str) -> Result<(), HashError> {
    let malformed = HashError::Malformed { scheme: "yescrypt" };
    let params_field = hash.split('$').nth(2).ok_or(malformed.clone())?;
    let params: yescrypt::Params = params_field.parse().map_err(|_| malformed)?;
    // V is 128·r·N bytes, B is 128·r·p bytes.
    let too_expensive = HashError::TooExpensive {
        scheme: "yescrypt",
        max: MAX_YESCRYPT_MEMORY,
    };
    let memory = params
        .n()
        .checked_add(u64::from(params.p()))
        .and_then(|blocks| blocks.checked_mul(u64::from(params.r())))
        .and_then(|words| words.checked_mul(128))
        .ok_or(too_expensive.clone())?;
    if memory > MAX_YESCRYPT_MEMORY {
        return Err(too_expensive);
    }
    Ok(())
}

/// Argon2 PHC-string verification, with the parameters bounded before anything is allocated.
fn verify_argon2(password: &[u8], hash: &str, scheme: &'static str) -> Result<bool, HashError> {
    use argon2::{Argon2, PasswordHash, PasswordVerifier};
    let malformed = HashError::Malformed { scheme };
    let parsed = PasswordHash::new(hash).map_err(|_| malformed.clone())?;
    if parsed.algorithm.as_str() != scheme || parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(malformed);
    }
    let params = argon2::Params::try_from(&parsed).map_err(|_| malformed.clone())?;
    // m_cost is in KiB.
    let memory = u64::from(params.m_cost()).saturating_mul(1024);
    if memory > MAX_ARGON2_MEMORY
        || params.t_cost() > MAX_ARGON2_PASSES
        || params.p_cost() > MAX_ARGON2_LANES
    {
        return Err(HashError::TooExpensive {
            scheme,
            max: MAX_ARGON2_MEMORY,
        });
    }
    // `Argon2::default()`'s own parameters are ignored: algorithm, version and parameters all
    // come from the PHC string.
    match Argon2::default().verify_password(password, &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(_) => Err(malformed),
    }
}

/// A fixed, valid yescrypt hash (Debian's default cost, `$y$j9T$`) that no password matches.
/// Verify against it when the user is unknown so the failure takes as long as a real one.
#[must_use]
pub fn dummy_hash() -> &'static str {
    DUMMY_HASH
}

/// Password check with uniform failure cost: when `hash` is `None` (unknown user) or cannot
/// succeed (locked, empty, unsupported, malformed), the password is verified against
/// [`dummy_hash`] anyway and `false` returned.
///
/// Successful-path cost still depends on the user's scheme (SHA-crypt is much cheaper than
/// yescrypt), exactly as with `sshd`.
#[must_use]
pub fn verify_or_dummy(password: &[u8], hash: Option<&str>) -> bool {
    if let Some(hash) = hash {
        match verify(password, hash) {
            Ok(true) => return true,
            Ok(false)
                if classify(hash).refusal().is_none() && password.len() <= MAX_PASSWORD_LEN =>
            {
                return false;
            }
            Ok(false) | Err(_) => {}
        }
    }
    let _ = verify(
        password.get(..MAX_PASSWORD_LEN).unwrap_or(password),
        DUMMY_HASH,
    );
    false
}

/// One `/etc/shadow` line (see shadow(5)). Day counts are days since 1970-01-01; `None` means
/// the field is empty (or negative, which shadow tools also treat as unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowEntry<'a> {
    /// Login name.
    pub name: &'a str,
    /// Encrypted password field, as is (may be empty, `!…`, `*`).
    pub hash: &'a str,
    /// Date of last password change; `Some(0)` means "must change at next login".
    pub last_change: Option<i64>,
    /// Minimum password age in days.
    pub min: Option<i64>,
    /// Maximum password age in days.
    pub max: Option<i64>,
    /// Password warning period in days.
    pub warn: Option<i64>,
    /// Password inactivity period in days.
    pub inactive: Option<i64>,
    /// Account expiration date.
    pub expire: Option<i64>,
}

impl ShadowEntry<'_> {
    /// Whether the account has expired on day `today_days`, as `sshd` decides it
    /// (`today > sp_expire`; so `expire = 0` counts as expired, as it does for sshd).
    #[must_use]
    pub fn expired(&self, today_days: i64) -> bool {
        self.expire.is_some_and(|expire| today_days > expire)
    }

    /// Whether the password has expired on day `today_days`, following OpenSSH's
    /// `auth_shadow_pwexpired`: last change 0 ("root forced"), or last change + max < today.
    #[must_use]
    pub fn password_expired(&self, today_days: i64) -> bool {
        match (self.last_change, self.max) {
            (Some(0), _) => true,
            (Some(last), Some(max)) => last.saturating_add(max) < today_days,
            _ => false,
        }
    }
}

/// Parses one shadow line; `None` if it is not a valid entry (like glibc, which skips those).
fn parse_line(line: &str) -> Option<ShadowEntry<'_>> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = line.split(':');
    let name = fields.next()?;
    if name.is_empty() || name.starts_with('#') || name.starts_with('+') || name.starts_with('-') {
        return None;
    }
    let hash = fields.next()?;
    let mut day = || -> Option<Option<i64>> {
        match fields.next() {
            None | Some("") => Some(None),
            Some(text) => {
                let value: i64 = text.trim().parse().ok()?;
                Some((value >= 0).then_some(value))
            }
        }
    };
    Some(ShadowEntry {
        name,
        hash,
        last_change: day()?,
        min: day()?,
        max: day()?,
        warn: day()?,
        inactive: day()?,
        expire: day()?,
    })
}

/// Finds `user`'s entry in the text of `/etc/shadow`. The first valid line with that name wins;
/// comment, NIS (`+`/`-`) and unparseable lines are skipped.
#[must_use]
pub fn shadow_entry<'a>(shadow: &'a str, user: &str) -> Option<ShadowEntry<'a>> {
    if user.is_empty() {
        return None;
    }
    shadow
        .lines()
        .filter(|line| line.split(':').next() == Some(user))
        .find_map(parse_line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // `openssl passwd -6 -salt saltsalt secret`
    const SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
    // `openssl passwd -5 -salt saltsalt secret`
    const SHA256: &str = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
    // libxcrypt crypt("secret", crypt_gensalt("$6$", rounds=10000)) via python's crypt module
    const SHA512_ROUNDS: &str = "$6$rounds=10000$bvDnOuTjgdEvs7Z.$SbTbSK4HK1EFZg5KurXbKjRVO7vEB.52aVYRiuEGCDayXsty3i3Pwm1tjoe6FHoxYj5NLSmzS5TlwQ31x9ZaI.";
    // libxcrypt crypt("secret", "$6$rounds=1000$saltsalt$") (the minimum)
    const SHA512_ROUNDS_MIN: &str = "$6$rounds=1000$saltsalt$LAV5VE5Y7w1d73x1mFNspYWUpazfmwv2SoepNXNKJ/otop/Zok96Hr8Q13LEv0DRY/x8v0/crpIjl8NJSAqXV/";
    // libxcrypt crypt("secret", "$5$rounds=12345$saltsalt$")
    const SHA256_ROUNDS: &str =
        "$5$rounds=12345$saltsalt$tLq5Yx6jEKDsHiD83OsuTVhJpqU2iygTiqZKJ3fWt23";
    // `openssl passwd -5 -salt abcdefghijklmnopqrst secret`: salts are cut to 16 characters
    const SHA256_LONG_SALT: &str =
        "$5$abcdefghijklmnop$i7zHaTeYqXlesRXJ8dXj6o.MEFQdzfIJpJpcWAtszs6";
    // Debian 12 libxcrypt: crypt("secret", crypt_gensalt("$y$", 0)) — the default cost
    const YESCRYPT: &str =
        "$y$j9T$pLPvwRnZWDLm/zTgTTIJZ0$2nC9..ll0k4uMlUkXYeCOOA3WfGQe1PIu.Ii5Af0Ud4";
    // Debian 12 libxcrypt: crypt("correct horse", crypt_gensalt("$y$", 0))
    const YESCRYPT_HORSE: &str =
        "$y$j9T$lx6F2zcgH8fmAXZXieWAp.$V1YjgOKpZyAZ2coHf4ch7xF31U3o2Lro0hIV288BBEB";
    // Debian 12 libxcrypt: crypt("secret", "$y$j75$saltsaltsalt$") — a cheaper cost
    const YESCRYPT_CHEAP: &str = "$y$j75$saltsaltsalt$jyf/lxrpdyAIshWRo1x5DRC6KIE7sNRRtjcomR3PgHA";
    // `openssl passwd -1 -salt saltsalt secret`
    const MD5: &str = "$1$saltsalt$9xy1btjgzLYfb7hivXtC//";

    #[test]
    fn sha512_vectors() {
        assert_eq!(verify(b"secret", SHA512), Ok(true));
        assert_eq!(verify(b"wrong", SHA512), Ok(false));
        assert_eq!(verify(b"secret", SHA512_ROUNDS), Ok(true));
        assert_eq!(verify(b"secret ", SHA512_ROUNDS), Ok(false));
        assert_eq!(verify(b"secret", SHA512_ROUNDS_MIN), Ok(true));
        assert_eq!(verify(b"", SHA512_ROUNDS_MIN), Ok(false));
        assert_eq!(classify(SHA512), HashKind::ShaCrypt512);
    }

    #[test]
    fn sha256_vectors() {
        assert_eq!(verify(b"secret", SHA256), Ok(true));
        assert_eq!(verify(b"Secret", SHA256), Ok(false));
        assert_eq!(verify(b"secret", SHA256_ROUNDS), Ok(true));
        assert_eq!(verify(b"secre", SHA256_ROUNDS), Ok(false));
        assert_eq!(verify(b"secret", SHA256_LONG_SALT), Ok(true));
        assert_eq!(classify(SHA256), HashKind::ShaCrypt256);
    }

    #[test]
    fn yescrypt_vectors() {
        assert_eq!(classify(YESCRYPT), HashKind::Yescrypt);
        assert_eq!(verify(b"secret", YESCRYPT), Ok(true));
        assert_eq!(verify(b"secreT", YESCRYPT), Ok(false));
        assert_eq!(verify(b"correct horse", YESCRYPT_HORSE), Ok(true));
        assert_eq!(verify(b"secret", YESCRYPT_HORSE), Ok(false));
        assert_eq!(verify(b"secret", YESCRYPT_CHEAP), Ok(true));
        assert_eq!(verify(b"", YESCRYPT_CHEAP), Ok(false));
    }

    #[test]
    fn tampered_hashes_do_not_verify() {
        // One digest character changed: still well-formed, must not match.
        let sha = SHA512.replace("TVLlQ", "TVLlR");
        assert_eq!(verify(b"secret", &sha), Ok(false));
        let y = YESCRYPT_CHEAP.replace("jyf/", "jyg/");
        assert_eq!(verify(b"secret", &y), Ok(false));
    }

    #[test]
    fn rounds_out_of_range_are_malformed() {
        // libxcrypt refuses these too (crypt returns "*0").
        let low = "$6$rounds=10$saltsalt$LAV5VE5Y7w1d73x1mFNspYWUpazfmwv2SoepNXNKJ/otop/Zok96Hr8Q13LEv0DRY/x8v0/crpIjl8NJSAqXV/";
        assert_eq!(
            verify(b"secret", low),
            Err(HashError::Malformed {
                scheme: "sha512crypt"
            })
        );
        let junk = "$5$rounds=abc$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
        assert!(verify(b"secret", junk).is_err());
    }

    #[test]
    fn locked_and_empty() {
        for h in ["!", "!!", "*", "*LK*", "!$6$saltsalt$abc", "!*"] {
            assert_eq!(classify(h), HashKind::Locked, "{h}");
            assert_eq!(verify(b"secret", h), Ok(false), "{h}");
            assert_eq!(verify(b"", h), Ok(false), "{h}");
        }
        // A locked copy of a valid hash must not verify with the right password.
        assert_eq!(verify(b"secret", &format!("!{SHA512}")), Ok(false));
        assert_eq!(classify(""), HashKind::NoPassword);
        assert_eq!(verify(b"", ""), Ok(false));
        assert_eq!(verify(b"anything", ""), Ok(false));
        assert_eq!(HashKind::Locked.refusal(), Some("account is locked"));
        assert_eq!(
            HashKind::NoPassword.refusal(),
            Some("account has no password")
        );
        assert_eq!(HashKind::Yescrypt.refusal(), None);
    }

    #[test]
    fn unsupported_schemes_name_their_prefix() {
        let cases = [
            (MD5, "$1$"),
            (
                "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
                "$2b$",
            ),
            ("$gy$j9T$abc$def", "$gy$"),
            ("$7$CU..../....abc$def", "$7$"),
            ("abJnggxhB/yWI", "DES"),
            ("_J9..CCCCXBrJUJV154M", "_ (BSDi DES)"),
            ("x", "unknown"),
            ("$$$", "unknown"),
            ("$nodollar", "unknown"),
        ];
        for (hash, prefix) in cases {
            assert_eq!(
                classify(hash),
                HashKind::Unsupported(prefix.to_owned()),
                "{hash}"
            );
            let err = verify(b"secret", hash).unwrap_err();
            assert_eq!(
                err,
                HashError::Unsupported {
                    prefix: prefix.to_owned()
                }
            );
            assert!(err.to_string().contains(prefix));
        }
    }

    #[test]
    fn malformed_supported_hashes_are_errors() {
        for h in [
            "$y$",
            "$y$j9T",
            "$y$j9T$",
            "$y$j9T$salt",
            "$y$zzz$salt$hash",
            "$y$j9T$pLPvwRnZWDLm/zTgTTIJZ0$2nC9$extra",
            "$6$",
            "$6$salt",
            "$6$salt$",
            "$6$sa:lt$abc",
            "$5$salt$!!!",
        ] {
            assert!(
                matches!(verify(b"secret", h), Err(HashError::Malformed { .. })),
                "{h}"
            );
        }
        // N = 2^40 (`b`), r = 32: refused before anything is allocated.
        assert_eq!(
            verify(
                b"secret",
                "$y$jbT$saltsaltsalt$jyf/lxrpdyAIshWRo1x5DRC6KIE7sNRRtjcomR3PgHA"
            ),
            Err(HashError::TooExpensive {
                scheme: "yescrypt",
                max: MAX_YESCRYPT_MEMORY
            })
        );
    }

    #[test]
    fn overlong_passwords_never_match() {
        let long = vec![b'a'; MAX_PASSWORD_LEN + 1];
        assert_eq!(verify(&long, SHA512), Ok(false));
        assert!(!verify_or_dummy(&long, Some(SHA512)));
    }

    #[test]
    fn verify_or_dummy_outcomes() {
        assert!(verify_or_dummy(b"secret", Some(SHA256)));
        assert!(!verify_or_dummy(b"wrong", Some(SHA256)));
        assert!(!verify_or_dummy(b"secret", None));
        assert!(!verify_or_dummy(b"secret", Some("!")));
        assert!(!verify_or_dummy(b"", Some("")));
        assert!(!verify_or_dummy(b"secret", Some(MD5)));
    }

    #[test]
    fn dummy_hash_is_valid_default_cost_yescrypt() {
        let dummy = dummy_hash();
        assert!(dummy.starts_with("$y$j9T$"));
        // Same parameter field as a hash Debian 12 writes by default.
        assert_eq!(dummy.split('$').nth(2), YESCRYPT.split('$').nth(2));
        assert_eq!(classify(dummy), HashKind::Yescrypt);
        assert_eq!(verify(b"secret", dummy), Ok(false));
        assert_eq!(verify(b"", dummy), Ok(false));

        // That unknown and locked users really pay for a yescrypt run is a timing property:
        // it is measured by the login-latency rows of bench/sftp.sh, not asserted here (test
        // machines are shared and noisy).
    }

    /// A cheap Argon2 hash of `password` made in the test (m = 64 KiB, t = 2, p = 1).
    fn argon2_hash(alg: argon2::Algorithm, password: &[u8]) -> String {
        use argon2::PasswordHasher;
        let params = argon2::Params::new(64, 2, 1, None).unwrap();
        let hasher = argon2::Argon2::new(alg, argon2::Version::V0x13, params);
        hasher
            .hash_password_with_salt(password, b"saltsaltsaltsalt")
            .unwrap()
            .to_string()
    }

    #[test]
    fn argon2_generated_hashes() {
        for (alg, kind, prefix) in [
            (
                argon2::Algorithm::Argon2id,
                HashKind::Argon2id,
                "$argon2id$v=19$m=64,t=2,p=1$",
            ),
            (
                argon2::Algorithm::Argon2i,
                HashKind::Argon2i,
                "$argon2i$v=19$m=64,t=2,p=1$",
            ),
            (
                argon2::Algorithm::Argon2d,
                HashKind::Argon2d,
                "$argon2d$v=19$m=64,t=2,p=1$",
            ),
        ] {
            let h = argon2_hash(alg, b"secret");
            assert!(h.starts_with(prefix), "{h}");
            assert_eq!(classify(&h), kind);
            assert_eq!(kind.refusal(), None);
            assert_eq!(verify(b"secret", &h), Ok(true), "{h}");
            assert_eq!(verify(b"Secret", &h), Ok(false), "{h}");
            assert_eq!(verify(b"", &h), Ok(false), "{h}");
            assert!(verify_or_dummy(b"secret", Some(&h)));
            assert!(!verify_or_dummy(b"secre", Some(&h)));
            // Locked copy.
            assert_eq!(verify(b"secret", &format!("!{h}")), Ok(false));
        }
        // The algorithm in the string is what counts: an argon2id digest relabelled argon2d
        // does not verify.
        let id = argon2_hash(argon2::Algorithm::Argon2id, b"secret");
        let relabelled = id.replacen("$argon2id$", "$argon2d$", 1);
        assert_eq!(verify(b"secret", &relabelled), Ok(false));
    }

    // A well-formed, cheap argon2id string (salt "somesalt", m = 64 KiB) whose digest is
    // arbitrary bytes, so no password matches it.
    const ARGON2ID_NOMATCH: &str =
        "$argon2id$v=19$m=64,t=2,p=1$c29tZXNhbHQ$8KpA9zXjvfq7ejw0sR0TGWrKxYJvZZD8y7ZRWsPfC6Y";

    #[test]
    fn argon2_limits_and_malformed() {
        let expensive = [
            // m = 2 GiB
            "$argon2id$v=19$m=2097152,t=1,p=1$c29tZXNhbHQ$8KpA9zXjvfq7ejw0sR0TGWrKxYJvZZD8y7ZRWsPfC6Y",
            // m = u32::MAX KiB
            "$argon2id$v=19$m=4294967295,t=1,p=1$c29tZXNhbHQ$8KpA9zXjvfq7ejw0sR0TGWrKxYJvZZD8y7ZRWsPfC6Y",
            // t = u32::MAX
            "$argon2i$v=19$m=64,t=4294967295,p=1$c29tZXNhbHQ$8KpA9zXjvfq7ejw0sR0TGWrKxYJvZZD8y7ZRWsPfC6Y",
            // p = 1000
            "$argon2d$v=19$m=65536,t=1,p=1000$c29tZXNhbHQ$8KpA9zXjvfq7ejw0sR0TGWrKxYJvZZD8y7ZRWsPfC6Y",
        ];
        for h in expensive {
            let err = verify(b"secret", h).unwrap_err();
            assert!(
                matches!(
                    err,
                    HashError::TooExpensive {
                        max: MAX_ARGON2_MEMORY,
                        ..
                    }
                ),
                "{h}: {err:?}"
            );
            assert!(!verify_or_dummy(b"secret", Some(h)));
        }
        for h in [
            "$argon2id$",
            "$argon2id$v=19$m=64,t=2,p=1$c29tZXNhbHQ",
            "$argon2id$v=19$m=64,t=2,p=1",
            "$argon2id$v=19$m=abc,t=2,p=1$c29tZXNhbHQ$8KpA9zXjvfq7ejw0sR0TGWrKxYJvZZD8y7ZRWsPfC6Y",
            "$argon2id$v=19$m=1,t=2,p=1$c29tZXNhbHQ$8KpA9zXjvfq7ejw0sR0TGWrKxYJvZZD8y7ZRWsPfC6Y",
            "$argon2id$v=19$m=64,t=0,p=1$c29tZXNhbHQ$8KpA9zXjvfq7ejw0sR0TGWrKxYJvZZD8y7ZRWsPfC6Y",
            "$argon2id$v=19$m=64,t=2,p=1$c29tZXNhbHQ$!!!",
            "$argon2id$v=7$m=64,t=2,p=1$c29tZXNhbHQ$8KpA9zXjvfq7ejw0sR0TGWrKxYJvZZD8y7ZRWsPfC6Y",
        ] {
            assert!(
                matches!(
                    verify(b"secret", h),
                    Err(HashError::Malformed { scheme: "argon2id" })
                ),
                "{h}: {:?}",
                verify(b"secret", h)
            );
        }
        // Well-formed and cheap: verifies to a plain yes/no.
        assert_eq!(verify(b"password", ARGON2ID_NOMATCH), Ok(false));
        assert_eq!(verify(b"", ARGON2ID_NOMATCH), Ok(false));
    }

    const SHADOW: &str = "\\
root:*:19700:0:99999:7:::
daemon:*:19700:0:99999:7:::
# a comment line
calo:$y$j9T$pLPvwRnZWDLm/zTgTTIJZ0$2nC9..ll0k4uMlUkXYeCOOA3WfGQe1PIu.Ii5Af0Ud4:19700:0:99999:7:::
locked:!$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1:19000:0:99999:7:::
new:!!:19800::::::
nopass::19700:0:99999:7:::
temp:$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA:19700:1:90:14:30:20000:
forced:$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA:0:0:99999:7:::
bad:x:notanumber:0:99999:7:::
bad:$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA:19700::::::
+nisuser::0:0:99999:7:::
crlf:*:19700:0:99999:7:::\r
short:*
";

    #[test]
    fn shadow_realistic_file() {
        let root = shadow_entry(SHADOW, "root").unwrap();
        assert_eq!(
            root,
            ShadowEntry {
                name: "root",
                hash: "*",
                last_change: Some(19700),
                min: Some(0),
                max: Some(99999),
                warn: Some(7),
                inactive: None,
                expire: None,
            }
        );
        assert_eq!(classify(root.hash), HashKind::Locked);

        let calo = shadow_entry(SHADOW, "calo").unwrap();
        assert_eq!(calo.hash, YESCRYPT);
        assert_eq!(calo.expire, None);
        assert!(!calo.expired(30000));
        assert!(!calo.password_expired(30000)); // max 99999
        assert_eq!(verify(b"secret", calo.hash), Ok(true));

        let locked = shadow_entry(SHADOW, "locked").unwrap();
        assert_eq!(verify(b"secret", locked.hash), Ok(false));
        assert_eq!(classify(locked.hash), HashKind::Locked);

        let new = shadow_entry(SHADOW, "new").unwrap();
        assert_eq!(new.hash, "!!");
        assert_eq!((new.min, new.max, new.expire), (None, None, None));

        let nopass = shadow_entry(SHADOW, "nopass").unwrap();
        assert_eq!(classify(nopass.hash), HashKind::NoPassword);

        let temp = shadow_entry(SHADOW, "temp").unwrap();
        assert_eq!(
            (temp.min, temp.max, temp.warn, temp.inactive, temp.expire),
            (Some(1), Some(90), Some(14), Some(30), Some(20000))
        );
        assert!(!temp.expired(19999));
        assert!(!temp.expired(20000)); // sshd: expired only when today > expire
        assert!(temp.expired(20001));
        assert!(!temp.password_expired(19790));
        assert!(temp.password_expired(19791));

        assert!(shadow_entry(SHADOW, "forced").unwrap().password_expired(0));

        // First line is invalid (non-numeric day count) and skipped, like glibc does.
        let bad = shadow_entry(SHADOW, "bad").unwrap();
        assert_eq!(bad.hash, SHA256);

        assert_eq!(shadow_entry(SHADOW, "crlf").unwrap().hash, "*");
        let short = shadow_entry(SHADOW, "short").unwrap();
        assert_eq!((short.hash, short.last_change), ("*", None));

        for missing in [
            "nobody",
            "",
            "+nisuser",
            "nisuser",
            "# a comment line",
            "cal",
            "calo:",
        ] {
            assert_eq!(shadow_entry(SHADOW, missing), None, "{missing}");
        }
    }

    #[test]
    fn expiry_edges() {
        let mut e = shadow_entry("u:*:19700:0:99999:7::0:", "u").unwrap();
        assert_eq!(e.expire, Some(0));
        assert!(e.expired(1)); // sshd: today > 0
        e.expire = None;
        assert!(!e.expired(i64::MAX));
        let neg = shadow_entry("u:*:-1:0:-1:7::-1:", "u").unwrap();
        assert_eq!((neg.last_change, neg.max, neg.expire), (None, None, None));
        assert!(!neg.expired(50000));
        assert!(!neg.password_expired(50000));
    }

    proptest! {
        #[test]
        fn verify_never_panics(s in ".{0,120}", pw in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = verify(&pw, &s);
            let _ = classify(&s);
        }

        #[test]
        fn sha_shaped_strings_never_panic(
            id in prop_oneof![Just("5"), Just("6")],
            rounds in proptest::option::of("rounds=[0-9]{0,5}"),
            rest in "[A-Za-z0-9./$:!]{0,100}",
        ) {
            let hash = match rounds {
                Some(r) => format!("${id}${r}${rest}"),
                None => format!("${id}${rest}"),
            };
            let _ = verify(b"secret", &hash);
        }

        #[test]
        fn yescrypt_shaped_strings_never_panic(
            rest in "[A-Za-z0-9./$]{0,80}",
        ) {
            // Parameters fixed at a cheap cost so arbitrary (possibly valid) strings stay fast.
            let _ = verify(b"secret", &format!("$y$j75${rest}"));
        }

        #[test]
        fn argon2_shaped_strings_never_panic(
            alg in prop_oneof![Just("argon2id"), Just("argon2i"), Just("argon2d")],
            rest in "[A-Za-z0-9+/=,$]{0,80}",
        ) {
            // Cheap fixed parameters first so random tails stay fast.
            let _ = verify(b"secret", &format!("${alg}$v=19$m=16,t=1,p=1${rest}"));
            let _ = verify(b"secret", &format!("${alg}${rest}"));
        }

        #[test]
        fn yescrypt_params_never_panic(params in "[A-Za-z0-9./]{0,10}") {
            // Only the parameter check: running yescrypt on random parameters could be slow.
            let _ = check_yescrypt_cost(&format!("$y${params}$salt$hash"));
        }

        #[test]
        fn shadow_parsing_never_panics(text in "([a-z!*$0-9:\n-]{0,40}){0,8}", user in "[a-z]{0,4}") {
            if let Some(e) = shadow_entry(&text, &user) {
                prop_assert_eq!(e.name, user.as_str());
                let _ = e.expired(19700);
                let _ = e.password_expired(19700);
            }
        }
    }
}
