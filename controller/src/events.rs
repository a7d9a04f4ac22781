//! The controller's syslog lines, in the embedded controller's own format as the source
//! document shows them:
//!
//! ```text
//! *Feb 1 20:29:17.325: %INSTALL-5-INSTALL_START_INFO: Chassis 1 R0/0: install_engine: Started install add sftp://*****@172.16.5.62/Documents/Wrong-Path/ap1g6
//! *Feb 1 20:29:25.730: %INSTALL-3-OPERATION_ERROR_MESSAGE: Chassis 1 R0/0: install_engine: Failed to install_add package sftp://*****@172.16.5.62/Documents/Wrong-Path/ap1g6, Error: Failed to download file sftp://*****@172.16.5.62/Documents/Wrong-Path/ap1g6: No such file or directory
//! *Feb 1 17:05:37.108: %INSTALL-5-INSTALL_COMPLETED_INFO: Chassis 1 R0/0: install_engine: Completed install add sftp://*****@172.16.5.62/Documents/sftp_files/EWC_17_9_4a/ap3g3
//! *Feb 1 17:07:00.720: %CAPWAPAC_SMGR_TRACE_MESSAGE-5-AP_JOIN_DISJOIN: Chassis 1 R0/0: wncd: AP Event: AP Name: AP-0001 Mac: 00a2.eeb1.0001 Session-IP: 127.0.0.1[40000] 127.0.0.1[5246] AP Image Download Success
//! ```
//!
//! [`Event`] is what happened; [`Event::message`] is its text (without the timestamp), and
//! [`stamp`] the `*Mmm d HH:MM:SS.mmm: ` prefix. Nothing here reads a clock.

use std::fmt;
use std::net::SocketAddr;

use relay::{FetchError, Source};

/// A MAC address, printed as Cisco does (`ccdb.93df.bbe0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}{:02x}.{:02x}{:02x}.{:02x}{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Who an AP event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApRef {
    /// AP Name.
    pub name: String,
    /// Base MAC.
    pub mac: Mac,
    /// The AP's address and port.
    pub ap: SocketAddr,
    /// The controller's address and port the AP talks to.
    pub ac: SocketAddr,
}

/// Something the controller logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An image fetch from the profile's server starts.
    InstallStart {
        /// What is fetched (printed masked).
        source: Source,
    },
    /// It completed and verified.
    InstallCompleted {
        /// What was fetched.
        source: Source,
    },
    /// It failed.
    InstallFailed {
        /// What was fetched.
        source: Source,
        /// Why, in the controller's words.
        error: FetchError,
    },
    /// The profile's folder holds a new AP version (a version staged while the controller
    /// runs, or a reloaded profile): the network runs it from now on. An airlift line; the
    /// embedded controller has no equivalent.
    NewRelease {
        /// The folder.
        folder: Source,
        /// Its `version.info`.
        version: String,
    },
    /// An AP joined.
    ApJoined(ApRef),
    /// An AP left (or was given up on).
    ApDisjoined {
        /// Which.
        ap: ApRef,
        /// Why.
        reason: String,
    },
    /// An AP's image download ended.
    ApImageDownload {
        /// Which.
        ap: ApRef,
        /// Verified by the AP.
        success: bool,
    },
}

const INSTALL: &str = "Chassis 1 R0/0: install_engine:";
const WNCD: &str =
    "%CAPWAPAC_SMGR_TRACE_MESSAGE-5-AP_JOIN_DISJOIN: Chassis 1 R0/0: wncd: AP Event:";

fn ap_event(ap: &ApRef, what: &str) -> String {
    format!(
        "{WNCD} AP Name: {} Mac: {} Session-IP: {}[{}] {}[{}] {what}",
        ap.name,
        ap.mac,
        ap.ap.ip(),
        ap.ap.port(),
        ap.ac.ip(),
        ap.ac.port()
    )
}

impl Event {
    /// The syslog severity, the number in the line's mnemonic (`%INSTALL-3-…` is an error,
    /// 3; every other line is a notice, 5).
    pub fn severity(&self) -> u8 {
        match self {
            Event::InstallFailed { .. } => 3,
            _ => 5,
        }
    }

    /// The syslog message, without the timestamp.
    pub fn message(&self) -> String {
        match self {
            Event::InstallStart { source } => {
                format!("%INSTALL-5-INSTALL_START_INFO: {INSTALL} Started install add {source}")
            }
            Event::InstallCompleted { source } => format!(
                "%INSTALL-5-INSTALL_COMPLETED_INFO: {INSTALL} Completed install add {source}"
            ),
            Event::InstallFailed { source, error } => format!(
                "%INSTALL-3-OPERATION_ERROR_MESSAGE: {INSTALL} Failed to install_add package {source}, Error: {error}"
            ),
            Event::NewRelease { folder, version } => format!(
                "%INSTALL-5-INSTALL_AP_IMAGE_VERSION: {INSTALL} AP image version {version} found at {folder}"
            ),
            Event::ApJoined(ap) => ap_event(ap, "Joined"),
            Event::ApDisjoined { ap, reason } => ap_event(ap, &format!("Disjoined {reason}")),
            Event::ApImageDownload { ap, success } => ap_event(
                ap,
                if *success {
                    "AP Image Download Success"
                } else {
                    "AP Image Download Failed"
                },
            ),
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The timestamp prefix of a controller log line, `*Feb 1 20:29:14.108: `, for the UTC time
/// `unix_ms` milliseconds after the epoch.
pub fn stamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (_, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let s = secs % 86_400;
    format!(
        "*{} {} {:02}:{:02}:{:02}.{:03}: ",
        MONTHS[usize::from(month - 1)],
        day,
        s / 3600,
        s / 60 % 60,
        s % 60,
        unix_ms % 1000
    )
}

/// Year, month (1–12) and day (1–31) of a day count since 1970-01-01 (proleptic Gregorian;
/// H. Hinnant's `civil_from_days`).
/// The timestamp prefix of an AP's console line, `[*07/12/2023 07:41:00.7960] ` (the source
/// document's AP logs: month/day/year, tenths of milliseconds), for the UTC time `unix_us`
/// microseconds after the epoch.
pub fn ap_stamp(unix_us: u64) -> String {
    let secs = unix_us / 1_000_000;
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let s = secs % 86_400;
    format!(
        "[*{month:02}/{day:02}/{year:04} {:02}:{:02}:{:02}.{:04}] ",
        s / 3600,
        s / 60 % 60,
        s % 60,
        unix_us % 1_000_000 / 100
    )
}

fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn ap_lines_are_stamped_like_the_documents() {
        // 2023-07-12 07:41:00.796 UTC, the document's "[*07/12/2023 07:41:00.7960]".
        assert_eq!(
            ap_stamp(1_689_147_660_796_000),
            "[*07/12/2023 07:41:00.7960] "
        );
        assert_eq!(ap_stamp(0), "[*01/01/1970 00:00:00.0000] ");
    }

    use super::*;
    use relay::ErrorKind;

    #[test]
    fn the_documents_lines() {
        let Ok(wrong) = Source::parse("sftp://calo@172.16.5.62/Documents/Wrong-Path/ap1g6") else {
            panic!("url")
        };
        assert_eq!(
            Event::InstallStart {
                source: wrong.clone()
            }
            .message(),
            "%INSTALL-5-INSTALL_START_INFO: Chassis 1 R0/0: install_engine: Started install add sftp://*****@172.16.5.62/Documents/Wrong-Path/ap1g6"
        );
        let error = FetchError::new(&wrong, ErrorKind::NotFound, "");
        assert_eq!(
            Event::InstallFailed {
                source: wrong,
                error
            }
            .message(),
            "%INSTALL-3-OPERATION_ERROR_MESSAGE: Chassis 1 R0/0: install_engine: Failed to install_add package sftp://*****@172.16.5.62/Documents/Wrong-Path/ap1g6, Error: Failed to download file sftp://*****@172.16.5.62/Documents/Wrong-Path/ap1g6: No such file or directory"
        );
        let Ok(good) =
            Source::parse("sftp://calo@172.16.5.62/Documents/sftp_files/EWC_17_9_4a/ap3g3")
        else {
            panic!("url")
        };
        assert_eq!(
            Event::InstallCompleted { source: good }.message(),
            "%INSTALL-5-INSTALL_COMPLETED_INFO: Chassis 1 R0/0: install_engine: Completed install add sftp://*****@172.16.5.62/Documents/sftp_files/EWC_17_9_4a/ap3g3"
        );
        let Ok(timed_out) = Source::parse("tftp://172.16.5.199/EWC/17_9_4a/ap1g6") else {
            panic!("url")
        };
        let error = FetchError::new(&timed_out, ErrorKind::TimedOut, "");
        assert!(
            Event::InstallFailed {
                source: timed_out,
                error
            }
            .message()
            .ends_with(
                "Error: Failed to download file tftp://172.16.5.199/EWC/17_9_4a/ap1g6: Timed out"
            )
        );
        let ap = ApRef {
            name: "L11_2003_AP2".into(),
            mac: Mac([0xcc, 0xdb, 0x93, 0xdf, 0xbb, 0xe0]),
            ap: SocketAddr::from(([9, 2, 91, 59], 5264)),
            ac: SocketAddr::from(([9, 2, 89, 30], 5246)),
        };
        assert_eq!(
            Event::ApDisjoined {
                ap: ap.clone(),
                reason: "Tag modified".into()
            }
            .message(),
            "%CAPWAPAC_SMGR_TRACE_MESSAGE-5-AP_JOIN_DISJOIN: Chassis 1 R0/0: wncd: AP Event: AP Name: L11_2003_AP2 Mac: ccdb.93df.bbe0 Session-IP: 9.2.91.59[5264] 9.2.89.30[5246] Disjoined Tag modified"
        );
        assert!(
            Event::ApImageDownload { ap, success: true }
                .message()
                .ends_with("] AP Image Download Success")
        );
    }

    /// The syslog severity is the number in each line's `%FACILITY-N-MNEMONIC`.
    #[test]
    fn severity_is_the_mnemonics_number() {
        let Ok(source) = Source::parse("tftp://172.16.5.199/EWC/17_9_4a/ap1g6") else {
            panic!("url")
        };
        let ap = ApRef {
            name: "AP-0001".into(),
            mac: Mac([0, 0xa2, 0xee, 0xb1, 0, 1]),
            ap: SocketAddr::from(([127, 0, 0, 1], 40000)),
            ac: SocketAddr::from(([127, 0, 0, 1], 5246)),
        };
        let events = [
            Event::InstallStart {
                source: source.clone(),
            },
            Event::InstallCompleted {
                source: source.clone(),
            },
            Event::InstallFailed {
                error: FetchError::new(&source, ErrorKind::TimedOut, ""),
                source: source.clone(),
            },
            Event::NewRelease {
                folder: source,
                version: "17.9.4.27".into(),
            },
            Event::ApJoined(ap.clone()),
            Event::ApDisjoined {
                ap: ap.clone(),
                reason: "Tag modified".into(),
            },
            Event::ApImageDownload { ap, success: false },
        ];
        for e in &events {
            let message = e.message();
            let number = message.split('-').nth(1).and_then(|n| n.parse::<u8>().ok());
            assert_eq!(number, Some(e.severity()), "{message}");
        }
        assert_eq!(events.iter().filter(|e| e.severity() == 3).count(), 1);
    }

    #[test]
    fn timestamps_read_like_the_controllers() {
        // 2024-02-01 20:29:14.108 UTC
        assert_eq!(stamp(1_706_819_354_108), "*Feb 1 20:29:14.108: ");
        assert_eq!(stamp(0), "*Jan 1 00:00:00.000: ");
        // 2024-02-29 (leap day) 23:59:59.999
        assert_eq!(stamp(1_709_251_199_999), "*Feb 29 23:59:59.999: ");
        assert_eq!(stamp(1_735_689_599_000), "*Dec 31 23:59:59.000: ");
    }
}
