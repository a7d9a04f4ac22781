//! RFC 2347 option negotiation, with tftpd-hpa's rules and extras.
//!
//! | option | accepted | answer | refused with ERROR 8 |
//! |---|---|---|---|
//! | `blksize` (RFC 2348) | ≥ 8 | min(request, server maximum `-B`) | < 8 |
//! | `blksize2` (tftpd-hpa) | ≥ 8 | largest power of two ≤ request, ≤ 32768 and ≤ `-B` | < 8 |
//! | `tsize` (RFC 2349) | octet mode | RRQ: the file size; WRQ: the client's value | in netascii mode |
//! | `timeout` (RFC 2349) | 1..=255 s | echoed; becomes the retransmission base | outside |
//! | `utimeout` (tftpd-hpa) | 10 000..=255 000 000 µs | echoed; becomes the base | outside |
//! | `rollover` (tftpd-hpa) | 0..=65535 | echoed; the block after 65535 | outside |
//! | `windowsize` (RFC 7440) | 1..=65535 | min(request, server maximum, what fits the receive buffer) | outside |
//!
//! As in tftpd-hpa: names are case-insensitive; a value that is not a plain decimal number
//! makes the option be ignored; unknown options and options the administrator refuses (`-r`)
//! are ignored, never refused; when an option appears twice the later one wins. The OACK
//! echoes each accepted option under the name the client used, in the client's order.

use std::time::Duration;

use super::packet::{DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE, Mode, OptionList, OptionListBuf};

/// The options this implementation understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TftpOption {
    /// RFC 2348 block size.
    Blksize,
    /// tftpd-hpa's power-of-two block size.
    Blksize2,
    /// RFC 2349 transfer size.
    Tsize,
    /// RFC 2349 timeout in seconds.
    Timeout,
    /// tftpd-hpa's timeout in microseconds.
    Utimeout,
    /// tftpd-hpa's block-number rollover value.
    Rollover,
    /// RFC 7440 window size.
    Windowsize,
}

impl TftpOption {
    /// Every option, in a fixed order.
    pub const ALL: [TftpOption; 7] = [
        TftpOption::Blksize,
        TftpOption::Blksize2,
        TftpOption::Tsize,
        TftpOption::Timeout,
        TftpOption::Utimeout,
        TftpOption::Rollover,
        TftpOption::Windowsize,
    ];

    /// The option's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            TftpOption::Blksize => "blksize",
            TftpOption::Blksize2 => "blksize2",
            TftpOption::Tsize => "tsize",
            TftpOption::Timeout => "timeout",
            TftpOption::Utimeout => "utimeout",
            TftpOption::Rollover => "rollover",
            TftpOption::Windowsize => "windowsize",
        }
    }

    /// Looks an option up by name, ignoring ASCII case.
    pub fn from_name(name: &[u8]) -> Option<TftpOption> {
        Self::ALL
            .into_iter()
            .find(|o| name.eq_ignore_ascii_case(o.name().as_bytes()))
    }
}

impl std::fmt::Display for TftpOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a request's options were refused (the server answers ERROR 8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A value outside the option's range.
    #[error("{option} value {value} out of range")]
    OutOfRange {
        /// The option.
        option: &'static str,
        /// The value requested (saturated at `u64::MAX`).
        value: u64,
    },
    /// `tsize` cannot be known in advance in netascii mode.
    #[error("tsize is not supported in netascii mode")]
    TsizeWithNetascii,
}

impl OptionError {
    /// The text tftpd-hpa sends with ERROR 8.
    pub fn wire_message(&self) -> &'static str {
        "Unsupported option(s) requested"
    }
}

/// What the server is willing to grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest blksize granted (`-B`, default 65464).
    pub max_blksize: u16,
    /// Largest windowsize granted (`--max-window`, default 64).
    pub max_window: u16,
    /// The window is further capped so that `window × datagram size` fits in this many bytes
    /// of the receiver's socket buffer (a window the receiver cannot buffer collapses into
    /// timeouts; 0 disables the cap).
    pub window_bytes: usize,
    /// Options the administrator refuses (`-r`); they are ignored like unknown ones.
    pub refused: Vec<TftpOption>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_blksize: MAX_BLKSIZE,
            max_window: 64,
            window_bytes: DEFAULT_WINDOW_BYTES,
            refused: Vec::new(),
        }
    }
}

/// Default receive-buffer budget for a window: Linux's default `rmem_default` (212,992 bytes)
/// charges each datagram its buffer's true size, roughly payload + 768 bytes.
pub const DEFAULT_WINDOW_BYTES: usize = 192 * 1024;

/// Per-datagram overhead assumed when fitting a window into [`ServerLimits::window_bytes`].
const DATAGRAM_OVERHEAD: usize = 768;

/// The transfer parameters both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// DATA payload size.
    pub blksize: u16,
    /// Blocks sent before an ACK is expected.
    pub windowsize: u16,
    /// The block number after 65535.
    pub rollover: u16,
    /// A retransmission base the client asked for (`timeout`/`utimeout`), if any.
    pub timeout: Option<Duration>,
    /// The transfer size: the file size on RRQ, the client's announced size on WRQ.
    pub tsize: Option<u64>,
    /// The encoded OACK body; empty when no option was accepted (then no OACK is sent).
    pub oack: OptionListBuf,
}

impl Default for Negotiated {
    fn default() -> Self {
        Negotiated {
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            rollover: 0,
            timeout: None,
            tsize: None,
            oack: OptionListBuf::new(),
        }
    }
}

/// Parses a plain decimal value, saturating at `u64::MAX`; anything else is `None`.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Which side of the transfer the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// RRQ: the server sends `file_size` bytes.
    Read {
        /// Size of the file being served (after netascii conversion, if any).
        file_size: u64,
    },
    /// WRQ: the server receives.
    Write,
}

/// Negotiates a request's options the way tftpd-hpa does.
pub fn negotiate(
    options: OptionList<'_>,
    mode: Mode,
    direction: Direction,
    limits: &ServerLimits,
) -> Result<Negotiated, OptionError> {
    let mut n = Negotiated::default();
    // (name as sent, value as answered); later duplicates replace earlier ones in place.
    let mut answers: Vec<(&[u8], TftpOption, u64)> = Vec::new();
    for (name, value) in options.iter() {
        let Some(option) = TftpOption::from_name(name) else {
            continue;
        };
        if limits.refused.contains(&option) {
            continue;
        }
        let Some(v) = decimal(value) else {
            continue;
        };
        let out_of_range = || OptionError::OutOfRange {
            option: option.name(),
            value: v,
        };
        let answer = match option {
            TftpOption::Blksize => {
                if v < u64::from(MIN_BLKSIZE) {
                    return Err(out_of_range());
                }
                let b = v.min(u64::from(limits.max_blksize)) as u16;
                n.blksize = b;
                u64::from(b)
            }
            TftpOption::Blksize2 => {
                if v < u64::from(MIN_BLKSIZE) {
                    return Err(out_of_range());
                }
                let cap = v.min(32768).min(u64::from(limits.max_blksize));
                // Largest power of two not above the cap (cap ≥ 8 since max_blksize ≥ 512).
                let b = 1u64 << (63 - cap.leading_zeros());
                n.blksize = b as u16;
                b
            }
            TftpOption::Tsize => {
                if mode == Mode::Netascii {
                    return Err(OptionError::TsizeWithNetascii);
                }
                let size = match direction {
                    Direction::Read { file_size } => file_size,
                    Direction::Write => v,
                };
                n.tsize = Some(size);
                size
            }
            TftpOption::Timeout => {
                if !(1..=255).contains(&v) {
                    return Err(out_of_range());
                }
                n.timeout = Some(Duration::from_secs(v));
                v
            }
            TftpOption::Utimeout => {
                if !(10_000..=255_000_000).contains(&v) {
                    return Err(out_of_range());
                }
                n.timeout = Some(Duration::from_micros(v));
                v
            }
            TftpOption::Rollover => {
                if v > 65535 {
                    return Err(out_of_range());
                }
                n.rollover = v as u16;
                v
            }
            TftpOption::Windowsize => {
                if !(1..=65535).contains(&v) {
                    return Err(out_of_range());
                }
                // Capped below once blksize is final.
                v
            }
        };
        match answers.iter_mut().find(|(_, o, _)| *o == option) {
            Some(slot) => *slot = (name, option, answer),
            None => answers.push((name, option, answer)),
        }
    }
    if let Some((_, _, want)) = answers
        .iter_mut()
        .find(|(_, o, _)| *o == TftpOption::Windowsize)
    {
        let w = (*want)
            .min(u64::from(limits.max_window.max(1)))
            .min(window_fit(limits.window_bytes, n.blksize));
        *want = w;
        n.windowsize = w as u16;
    }
    let mut text = itoa_buf();
    for (name, _, value) in &answers {
        n.oack.push(name, format_u64(&mut text, *value));
    }
    Ok(n)
}

/// How many datagrams of `blksize` fit in `budget` bytes (at least 1; 65535 when unbudgeted).
pub fn window_fit(budget: usize, blksize: u16) -> u64 {
    if budget == 0 {
        return 65535;
    }
    let per = usize::from(blksize) + 4 + DATAGRAM_OVERHEAD;
    ((budget / per) as u64).clamp(1, 65535)
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn format_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::packet::OptionListBuf;
    use proptest::prelude::*;

    fn opts(pairs: &[(&str, &str)]) -> OptionListBuf {
        let mut b = OptionListBuf::new();
        for (n, v) in pairs {
            b.push(n.as_bytes(), v.as_bytes());
        }
        b
    }

    fn read(pairs: &[(&str, &str)], size: u64) -> Result<Negotiated, OptionError> {
        negotiate(
            opts(pairs).as_list(),
            Mode::Octet,
            Direction::Read { file_size: size },
            &ServerLimits::default(),
        )
    }

    fn oack(n: &Negotiated) -> Vec<(String, String)> {
        n.oack
            .as_list()
            .iter()
            .map(|(a, b)| {
                (
                    String::from_utf8_lossy(a).into_owned(),
                    String::from_utf8_lossy(b).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn curl_request_gets_size_and_timeout_echoed() {
        let n = read(
            &[("tsize", "0"), ("timeout", "6"), ("blksize", "1468")],
            70_512_640,
        )
        .unwrap();
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.timeout, Some(Duration::from_secs(6)));
        assert_eq!(
            oack(&n),
            [("tsize", "70512640"), ("timeout", "6"), ("blksize", "1468")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn blksize_rules_match_tftpd_hpa() {
        assert_eq!(read(&[("blksize", "99999")], 1).unwrap().blksize, 65464);
        assert_eq!(read(&[("blksize", "8")], 1).unwrap().blksize, 8);
        assert_eq!(
            read(&[("blksize", "4")], 1),
            Err(OptionError::OutOfRange {
                option: "blksize",
                value: 4
            })
        );
        let limits = ServerLimits {
            max_blksize: 1468,
            ..Default::default()
        };
        let n = negotiate(
            opts(&[("blksize", "8192")]).as_list(),
            Mode::Octet,
            Direction::Read { file_size: 0 },
            &limits,
        )
        .unwrap();
        assert_eq!((n.blksize, oack(&n)[0].1.as_str()), (1468, "1468"));
        assert_eq!(read(&[("blksize2", "1468")], 1).unwrap().blksize, 1024);
        assert_eq!(read(&[("blksize2", "65464")], 1).unwrap().blksize, 32768);
        assert!(read(&[("blksize2", "7")], 1).is_err());
        // Last of blksize/blksize2 wins.
        assert_eq!(
            read(&[("blksize", "1468"), ("blksize2", "4000")], 1)
                .unwrap()
                .blksize,
            2048
        );
    }

    #[test]
    fn ranges_of_timeout_utimeout_rollover_windowsize() {
        assert!(read(&[("timeout", "0")], 1).is_err());
        assert!(read(&[("timeout", "256")], 1).is_err());
        assert_eq!(
            read(&[("timeout", "255")], 1).unwrap().timeout,
            Some(Duration::from_secs(255))
        );
        assert!(read(&[("utimeout", "9999")], 1).is_err());
        assert_eq!(
            read(&[("utimeout", "10000")], 1).unwrap().timeout,
            Some(Duration::from_millis(10))
        );
        assert!(read(&[("rollover", "65536")], 1).is_err());
        assert_eq!(read(&[("rollover", "1")], 1).unwrap().rollover, 1);
        assert!(read(&[("windowsize", "0")], 1).is_err());
        assert!(read(&[("windowsize", "65536")], 1).is_err());
        let n = read(&[("windowsize", "32"), ("blksize", "1468")], 1).unwrap();
        assert_eq!(n.windowsize, 32);
        assert_eq!(oack(&n)[0], ("windowsize".into(), "32".into()));
        // Capped by the server maximum...
        assert_eq!(read(&[("windowsize", "1000")], 1).unwrap().windowsize, 64);
        // ...and by what fits in the receiver's buffer at a large blksize.
        let big = read(&[("blksize", "65464"), ("windowsize", "64")], 1).unwrap();
        assert_eq!(big.windowsize, 2);
    }

    #[test]
    fn tsize_with_netascii_is_refused_and_wrq_echoes_tsize() {
        let r = negotiate(
            opts(&[("tsize", "0")]).as_list(),
            Mode::Netascii,
            Direction::Read { file_size: 10 },
            &ServerLimits::default(),
        );
        assert_eq!(r, Err(OptionError::TsizeWithNetascii));
        let w = negotiate(
            opts(&[("TSIZE", "1234")]).as_list(),
            Mode::Octet,
            Direction::Write,
            &ServerLimits::default(),
        )
        .unwrap();
        assert_eq!(w.tsize, Some(1234));
        assert_eq!(oack(&w), [("TSIZE".to_string(), "1234".to_string())]);
    }

    #[test]
    fn unknown_refused_and_non_decimal_are_ignored() {
        let n = read(
            &[
                ("multicast", ""),
                ("blksize", "12a"),
                ("tsize", "-1"),
                ("timeout", ""),
            ],
            5,
        )
        .unwrap();
        assert!(n.oack.is_empty());
        assert_eq!(n, Negotiated::default());
        let limits = ServerLimits {
            refused: vec![TftpOption::Tsize],
            ..Default::default()
        };
        let n = negotiate(
            opts(&[("tsize", "0"), ("blksize", "1024")]).as_list(),
            Mode::Octet,
            Direction::Read { file_size: 9 },
            &limits,
        )
        .unwrap();
        assert_eq!(oack(&n), [("blksize".to_string(), "1024".to_string())]);
    }

    #[test]
    fn huge_values_saturate() {
        assert_eq!(
            read(&[("blksize", "99999999999999999999999999")], 1)
                .unwrap()
                .blksize,
            65464
        );
        assert!(read(&[("timeout", "99999999999999999999999")], 1).is_err());
    }

    #[test]
    fn duplicate_option_later_wins_once_in_oack() {
        let n = read(
            &[("blksize", "1024"), ("tsize", "0"), ("BlkSize", "2048")],
            7,
        )
        .unwrap();
        assert_eq!(n.blksize, 2048);
        assert_eq!(
            oack(&n),
            [("BlkSize", "2048"), ("tsize", "7")].map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    proptest! {
        #[test]
        fn negotiation_never_panics_and_respects_limits(
            pairs in proptest::collection::vec((prop_oneof![
                Just("blksize".to_string()), Just("blksize2".to_string()), Just("tsize".to_string()),
                Just("timeout".to_string()), Just("utimeout".to_string()), Just("rollover".to_string()),
                Just("windowsize".to_string()), "[a-z]{1,8}"], "[0-9]{0,25}|[ -~]{0,6}"), 0..8),
            max_blksize in 512u16..=65464, max_window in 1u16..=65535,
        ) {
            let mut b = OptionListBuf::new();
            for (n, v) in &pairs { b.push(n.as_bytes(), v.as_bytes()); }
            let limits = ServerLimits { max_blksize, max_window, ..Default::default() };
            if let Ok(n) = negotiate(b.as_list(), Mode::Octet, Direction::Read { file_size: 3 }, &limits) {
                prop_assert!(n.blksize >= 8 && n.blksize <= max_blksize.max(512));
                prop_assert!(n.windowsize >= 1 && n.windowsize <= max_window);
            }
        }
    }
}
