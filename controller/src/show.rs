//! `show ap image`: the counters and the per-AP table the embedded controller prints (the
//! source document shows both), as text and as JSON. Built from [`ApImageRow`]s; the
//! counters are derived from the rows, so the two can never disagree.

use std::fmt;

use serde::Serialize;

/// Where an AP is with the image it must run now (download at join).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownloadState {
    /// Runs the network's version, or has not needed an image.
    None,
    /// Told to download; the transfer has not started.
    Initiated,
    /// Receiving the image.
    Downloading,
    /// Received and verified it.
    Completed,
    /// Failed (retried at `next_retry`).
    Failed,
    /// The server has no image of its family.
    NotSupported,
}

/// Where an AP is with an image stored as its backup while it runs (predownload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PredownloadState {
    /// Nothing asked.
    None,
    /// Asked; the transfer has not started.
    Initiated,
    /// Receiving the image.
    Predownloading,
    /// Stored as the backup image.
    Complete,
    /// Failed.
    Failed,
    /// The server has no image of its family.
    NotSupported,
}

impl PredownloadState {
    fn as_str(self) -> &'static str {
        match self {
            PredownloadState::None => "None",
            PredownloadState::Initiated => "Initiated",
            PredownloadState::Predownloading => "Predownloading",
            PredownloadState::Complete => "Complete",
            PredownloadState::Failed => "Failed",
            PredownloadState::NotSupported => "Not supported",
        }
    }
}

/// One AP's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApImageRow {
    /// AP Name.
    pub name: String,
    /// Image family (`ap1g8`).
    pub family: String,
    /// Primary (running) image version.
    pub primary: String,
    /// Backup image version.
    pub backup: String,
    /// Download at join.
    pub download: DownloadState,
    /// Predownload.
    pub predownload: PredownloadState,
    /// Version being predownloaded, if any.
    pub predownload_version: Option<String>,
    /// When a failed AP is tried again (`HH:MM:SS` UTC).
    pub next_retry: Option<String>,
    /// Retries so far.
    pub retry_count: u32,
    /// How the image travels (`CAPWAP`).
    pub method: Option<String>,
    /// Seconds left, while transferring.
    pub eta_s: Option<u64>,
    /// Percent done, while transferring (100 when complete).
    pub percent: Option<u8>,
}

impl ApImageRow {
    /// A joined AP with nothing under way: its versions, over CAPWAP.
    pub fn new(name: &str, family: &str, primary: &str, backup: &str) -> ApImageRow {
        ApImageRow {
            name: name.to_owned(),
            family: family.to_owned(),
            primary: primary.to_owned(),
            backup: backup.to_owned(),
            download: DownloadState::None,
            predownload: PredownloadState::None,
            predownload_version: None,
            next_retry: None,
            retry_count: 0,
            method: Some("CAPWAP".to_owned()),
            eta_s: None,
            percent: None,
        }
    }
}

/// The counters at the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counters {
    /// Total number of APs.
    pub total: usize,
    /// Initiated (download or predownload asked, not started).
    pub initiated: usize,
    /// Downloading (at join).
    pub downloading: usize,
    /// Predownloading.
    pub predownloading: usize,
    /// Completed downloading.
    pub completed_downloading: usize,
    /// Completed predownloading.
    pub completed_predownloading: usize,
    /// Not Supported (no image for the family).
    pub not_supported: usize,
    /// Failed to Predownload.
    pub failed_to_predownload: usize,
    /// Predownload in progress.
    pub predownload_in_progress: bool,
}

/// The whole `show ap image` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApImageReport {
    /// Counters.
    pub counters: Counters,
    /// One row per AP, by name.
    pub aps: Vec<ApImageRow>,
}

impl ApImageReport {
    /// The report of `rows` (sorted by AP name; counters derived from them).
    pub fn new(mut rows: Vec<ApImageRow>) -> ApImageReport {
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let mut c = Counters {
            total: rows.len(),
            ..Counters::default()
        };
        for r in &rows {
            let initiated = r.download == DownloadState::Initiated
                || r.predownload == PredownloadState::Initiated;
            c.initiated += usize::from(initiated);
            c.downloading += usize::from(r.download == DownloadState::Downloading);
            c.predownloading += usize::from(r.predownload == PredownloadState::Predownloading);
            c.completed_downloading += usize::from(r.download == DownloadState::Completed);
            c.completed_predownloading += usize::from(r.predownload == PredownloadState::Complete);
            c.not_supported += usize::from(
                r.download == DownloadState::NotSupported
                    || r.predownload == PredownloadState::NotSupported,
            );
            c.failed_to_predownload += usize::from(r.predownload == PredownloadState::Failed);
        }
        c.predownload_in_progress = rows.iter().any(|r| {
            matches!(
                r.predownload,
                PredownloadState::Initiated | PredownloadState::Predownloading
            )
        });
        ApImageReport {
            counters: c,
            aps: rows,
        }
    }
}

fn or_na(v: Option<&str>) -> &str {
    v.unwrap_or("NA")
}

impl fmt::Display for ApImageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        writeln!(f, "Total number of APs : {}", c.total)?;
        writeln!(f)?;
        writeln!(f, "Number of APs")?;
        let counters: [(&str, String); 9] = [
            ("Initiated", c.initiated.to_string()),
            ("Downloading", c.downloading.to_string()),
            ("Predownloading", c.predownloading.to_string()),
            ("Completed downloading", c.completed_downloading.to_string()),
            (
                "Completed predownloading",
                c.completed_predownloading.to_string(),
            ),
            ("Not Supported", c.not_supported.to_string()),
            ("Failed to Predownload", c.failed_to_predownload.to_string()),
            (
                "Predownload in progress",
                if c.predownload_in_progress {
                    "Yes"
                } else {
                    "No"
                }
                .to_owned(),
            ),
            ("", String::new()),
        ];
        for (label, value) in counters.iter().filter(|(l, _)| !l.is_empty()) {
            writeln!(f, "        {label:<30}: {value}")?;
        }
        writeln!(f)?;
        let header = [
            "AP Name",
            "Primary Image",
            "Backup Image",
            "Predownload Status",
            "Predownload Version",
            "Next Retry Time",
            "Retry Count",
            "Method",
            "ETA / %",
        ];
        let rows: Vec<[String; 9]> = self
            .aps
            .iter()
            .map(|r| {
                let progress = match (r.eta_s, r.percent) {
                    (Some(eta), Some(p)) => format!("{eta} s / {p}%"),
                    (None, Some(p)) => format!("{p}%"),
                    _ => "NA".to_owned(),
                };
                [
                    r.name.clone(),
                    r.primary.clone(),
                    r.backup.clone(),
                    r.predownload.as_str().to_owned(),
                    or_na(r.predownload_version.as_deref()).to_owned(),
                    or_na(r.next_retry.as_deref()).to_owned(),
                    r.retry_count.to_string(),
                    or_na(r.method.as_deref()).to_owned(),
                    progress,
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[&str]| -> fmt::Result {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<w$}  "));
                }
            }
            writeln!(f, "{}", out.trim_end())
        };
        line(f, &header)?;
        writeln!(f, "{}", "-".repeat(widths.iter().sum::<usize>() + 2 * 8))?;
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(f, &cells)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, download: DownloadState, predownload: PredownloadState) -> ApImageRow {
        ApImageRow {
            download,
            predownload,
            ..ApImageRow::new(name, "ap1g8", "17.3.3.26", "8.10.130.0")
        }
    }

    #[test]
    fn counters_come_from_the_rows() {
        let mut downloading = row("AP-3", DownloadState::Downloading, PredownloadState::None);
        downloading.eta_s = Some(41);
        downloading.percent = Some(37);
        let mut predl = row(
            "AP-1",
            DownloadState::None,
            PredownloadState::Predownloading,
        );
        predl.predownload_version = Some("17.9.4.27".into());
        let mut failed = row("AP-2", DownloadState::None, PredownloadState::Failed);
        failed.next_retry = Some("20:30:14".into());
        failed.retry_count = 2;
        let report = ApImageReport::new(vec![
            downloading,
            predl,
            failed,
            row("AP-4", DownloadState::Completed, PredownloadState::None),
            row("AP-5", DownloadState::NotSupported, PredownloadState::None),
        ]);
        let c = report.counters;
        assert_eq!(
            (
                c.total,
                c.downloading,
                c.predownloading,
                c.completed_downloading
            ),
            (5, 1, 1, 1)
        );
        assert_eq!((c.not_supported, c.failed_to_predownload), (1, 1));
        assert!(c.predownload_in_progress);
        let text = report.to_string();
        assert!(
            text.starts_with("Total number of APs : 5\n\nNumber of APs\n"),
            "{text}"
        );
        assert!(
            text.contains("        Predownload in progress       : Yes\n"),
            "{text}"
        );
        assert!(
            text.contains("        Completed downloading         : 1\n"),
            "{text}"
        );
        // Rows by name, columns aligned, NA where nothing applies.
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("AP Name"))
            .unwrap_or(usize::MAX);
        assert!(lines[header + 2].starts_with("AP-1 "), "{text}");
        assert!(lines[header + 2].contains("Predownloading"), "{text}");
        assert!(lines[header + 3].contains("20:30:14"), "{text}");
        assert!(lines[header + 4].ends_with("41 s / 37%"), "{text}");
        let col = lines[header].find("Primary Image").unwrap_or(0);
        assert!(
            lines[header + 2..]
                .iter()
                .all(|l| &l[col..col + 9] == "17.3.3.26")
        );
        let Ok(json) = serde_json::to_string(&report) else {
            panic!("json")
        };
        assert!(
            json.contains("\"predownload\":\"predownloading\""),
            "{json}"
        );
        assert!(json.contains("\"completed_downloading\":1"), "{json}");
    }
}
