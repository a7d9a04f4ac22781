//! The client's half of option negotiation: building a request with options, and checking
//! that a server's OACK only grants what was asked (RFC 2347 §3: a server may lower blksize
//! and windowsize, must echo timeout, and may not add options the client did not send).

use std::time::Duration;

use super::packet::{
    DEFAULT_BLKSIZE, MIN_BLKSIZE, Mode, OptionList, OptionListBuf, Packet, Request,
};

/// The options a client asks for; `None` leaves an option out of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requested {
    /// RFC 2348 blksize.
    pub blksize: Option<u16>,
    /// RFC 7440 windowsize.
    pub windowsize: Option<u16>,
    /// RFC 2349 timeout, whole seconds 1..=255.
    pub timeout: Option<u8>,
    /// RFC 2349 tsize: 0 on an RRQ to learn the size, the size on a WRQ.
    pub tsize: Option<u64>,
    /// tftpd-hpa's rollover (the block number after 65535).
    pub rollover: Option<u16>,
}

impl Requested {
    /// True when no option is asked for (the request is plain RFC 1350).
    pub fn is_empty(&self) -> bool {
        *self == Requested::default()
    }

    /// The options as they go on the wire.
    pub fn to_options(&self) -> OptionListBuf {
        let mut b = OptionListBuf::new();
        let mut push = |name: &str, v: Option<u64>| {
            if let Some(v) = v {
                b.push(name.as_bytes(), v.to_string().as_bytes());
            }
        };
        push("blksize", self.blksize.map(u64::from));
        push("tsize", self.tsize);
        push("timeout", self.timeout.map(u64::from));
        push("windowsize", self.windowsize.map(u64::from));
        push("rollover", self.rollover.map(u64::from));
        b
    }
}

/// Encodes an RRQ (`read`) or WRQ with the requested options.
pub fn request(read: bool, filename: &[u8], mode: Mode, requested: &Requested) -> Vec<u8> {
    let options = requested.to_options();
    let r = Request {
        filename,
        mode,
        options: options.as_list(),
    };
    if read {
        Packet::Rrq(r).to_vec()
    } else {
        Packet::Wrq(r).to_vec()
    }
}

/// What the server agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// DATA payload size.
    pub blksize: u16,
    /// Blocks per window.
    pub windowsize: u16,
    /// Block number after 65535.
    pub rollover: u16,
    /// Retransmission base both sides use.
    pub timeout: Option<Duration>,
    /// Transfer size, when the server told it.
    pub tsize: Option<u64>,
}

impl Agreed {
    /// RFC 1350 defaults: what applies when the server answers without an OACK.
    pub const DEFAULTS: Agreed = Agreed {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        rollover: 0,
        timeout: None,
        tsize: None,
    };
}

/// Why a client rejects an OACK (it answers ERROR 8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OackError {
    /// The server granted an option the client never asked for.
    #[error("server acknowledged option {name:?} that was not requested")]
    NotRequested {
        /// The option's name (lossy UTF-8).
        name: String,
    },
    /// The granted value is not one the client can accept.
    #[error("server answered {name} {value:?}, which is not acceptable")]
    BadValue {
        /// The option.
        name: &'static str,
        /// The value (lossy UTF-8).
        value: String,
    },
}

/// Checks an OACK against what was requested.
pub fn apply_oack(oack: OptionList<'_>, asked: &Requested) -> Result<Agreed, OackError> {
    let mut agreed = Agreed::DEFAULTS;
    for (name, value) in oack.iter() {
        let text = || String::from_utf8_lossy(value).into_owned();
        let num = std::str::from_utf8(value)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok());
        let bad = |name: &'static str| OackError::BadValue {
            name,
            value: text(),
        };
        let lower = name.to_ascii_lowercase();
        match (lower.as_slice(), num) {
            (b"blksize", Some(v)) if asked.blksize.is_some() => {
                let max = u64::from(asked.blksize.unwrap_or(DEFAULT_BLKSIZE));
                if v < u64::from(MIN_BLKSIZE) || v > max {
                    return Err(bad("blksize"));
                }
                agreed.blksize = v as u16;
            }
            (b"windowsize", Some(v)) if asked.windowsize.is_some() => {
                let max = u64::from(asked.windowsize.unwrap_or(1));
                if v < 1 || v > max {
                    return Err(bad("windowsize"));
                }
                agreed.windowsize = v as u16;
            }
            (b"timeout", Some(v)) if asked.timeout.is_some() => {
                if Some(v) != asked.timeout.map(u64::from) {
                    return Err(bad("timeout"));
                }
                agreed.timeout = Some(Duration::from_secs(v));
            }
            (b"tsize", Some(v)) if asked.tsize.is_some() => agreed.tsize = Some(v),
            (b"rollover", Some(v)) if asked.rollover.is_some() => {
                if v > 65535 {
                    return Err(bad("rollover"));
                }
                agreed.rollover = v as u16;
            }
            (b"blksize" | b"windowsize" | b"timeout" | b"tsize" | b"rollover", _)
                if is_asked(&lower, asked) =>
            {
                return Err(OackError::BadValue {
                    name: static_name(&lower),
                    value: text(),
                });
            }
            _ => {
                return Err(OackError::NotRequested {
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
        }
    }
    Ok(agreed)
}

fn is_asked(name: &[u8], asked: &Requested) -> bool {
    match name {
        b"blksize" => asked.blksize.is_some(),
        b"windowsize" => asked.windowsize.is_some(),
        b"timeout" => asked.timeout.is_some(),
        b"tsize" => asked.tsize.is_some(),
        b"rollover" => asked.rollover.is_some(),
        _ => false,
    }
}

fn static_name(name: &[u8]) -> &'static str {
    match name {
        b"blksize" => "blksize",
        b"windowsize" => "windowsize",
        b"timeout" => "timeout",
        b"tsize" => "tsize",
        _ => "rollover",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn oack(pairs: &[(&str, &str)]) -> OptionListBuf {
        let mut b = OptionListBuf::new();
        for (n, v) in pairs {
            b.push(n.as_bytes(), v.as_bytes());
        }
        b
    }

    #[test]
    fn request_carries_options_in_order() {
        let asked = Requested {
            blksize: Some(1468),
            windowsize: Some(32),
            tsize: Some(0),
            ..Default::default()
        };
        assert_eq!(
            request(true, b"ap1g8", Mode::Octet, &asked),
            b"\x00\x01ap1g8\x00octet\x00blksize\x001468\x00tsize\x000\x00windowsize\x0032\x00"
        );
        assert_eq!(
            request(false, b"f", Mode::Netascii, &Requested::default()),
            b"\x00\x02f\x00netascii\x00"
        );
    }

    #[test]
    fn accepts_lowered_values_and_rejects_raised_or_unasked() {
        let asked = Requested {
            blksize: Some(8192),
            windowsize: Some(32),
            tsize: Some(0),
            timeout: Some(6),
            rollover: None,
        };
        let a = apply_oack(
            oack(&[
                ("BLKSIZE", "1468"),
                ("windowsize", "8"),
                ("tsize", "70512640"),
            ])
            .as_list(),
            &asked,
        )
        .unwrap();
        assert_eq!(
            (a.blksize, a.windowsize, a.tsize),
            (1468, 8, Some(70_512_640))
        );
        assert!(apply_oack(oack(&[("blksize", "9000")]).as_list(), &asked).is_err());
        assert!(apply_oack(oack(&[("timeout", "5")]).as_list(), &asked).is_err());
        assert!(apply_oack(oack(&[("blksize", "x")]).as_list(), &asked).is_err());
        assert_eq!(
            apply_oack(oack(&[("rollover", "1")]).as_list(), &asked),
            Err(OackError::NotRequested {
                name: "rollover".into()
            })
        );
        assert_eq!(
            apply_oack(OptionList::EMPTY, &asked).unwrap(),
            Agreed::DEFAULTS
        );
    }
}
