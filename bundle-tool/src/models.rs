//! AP model → image family: which file of an AP bundle (`ap1g8`, `ap3g3`, ...) a given access
//! point needs.
//!
//! The facts are in `bundle-tool/data/models.tsv`, compiled in with `include_str!` and parsed
//! on first use. Each row carries its status (`verified` / `inferred` / `guess`, the tags of
//! `shared/reference/capwap-and-bundles.md` §3) and the source it comes from. The file's header
//! comment documents the columns.
//!
//! # Matching rule ([`which`])
//!
//! 1. The model number is the first run of **exactly four** ASCII digits in the input
//!    ([`model_number`]). Runs of other lengths are skipped, so `K9` in `AIR-AP1815I-E-K9` or
//!    a serial number never counts. Only digits matter, so case and surrounding whitespace
//!    don't: `C9105AXI-E`, `c9105`, `9105` and `" C9105AXI-E "` all give `9105`. No such run
//!    gives [`WhichError::NoModelNumber`].
//! 2. A row whose `series` equals the number wins ([`MatchKind::Exact`]).
//! 3. Otherwise the rows marked `match=series` ([`ModelRow::series_match`]) whose series shares
//!    the number's first three digits are the candidates. This covers Aironet part numbers with
//!    a variant last digit: 2802 → 2800, 1832 → 1830, 1562 → 1560. If all candidates name one
//!    family, the result is that row ([`MatchKind::Series`]). If they name several, the
//!    result is [`WhichError::Ambiguous`].
//! 4. Otherwise the result is [`WhichError::Unknown`]. Catalyst 91xx rows are `exact`, so
//!    9124/9136/9162/9164 stay unknown instead of borrowing a neighbour's family. 1810, 1815
//!    and 1800 are three separate exact rows. Wave-1 IOS APs such as the 3702 have no row and
//!    no `series` row near them, so they are unknown (unsupported by these bundles).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

/// The compiled-in table (`bundle-tool/data/models.tsv`).
const DATA: &str = include_str!("../data/models.tsv");

/// The column header line the table must start with (after comments).
const HEADER: [&str; 5] = ["series", "family", "match", "status", "source"];

/// One row of `models.tsv`: one model number and the image family it needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelRow {
    /// The 4-digit model number the row covers (`9105`, `2800`).
    pub series: String,
    /// The image family, i.e. the bundle member's file name (`ap1g8`).
    pub family: String,
    /// How sure the fact is.
    pub status: Status,
    /// Where the fact comes from (free text).
    pub source: String,
    /// 1-based line number in `models.tsv`.
    pub line: usize,
    /// `match` column is `series`: the row also covers model numbers that share the first
    /// three digits of [`series`](Self::series) (2802 in the 2800 series). `false` for
    /// `exact`.
    pub series_match: bool,
}

/// How sure a row is: the `[V]`/`[I]`/`[G]` tags of the reference notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Checked against a primary or implementation source.
    Verified,
    /// From secondary sources (third-party maps, quoted command output).
    Inferred,
    /// Unverified.
    Guess,
}

impl Status {
    /// The spelling used in `models.tsv` and in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Verified => "verified",
            Status::Inferred => "inferred",
            Status::Guess => "guess",
        }
    }

    fn parse(field: &str) -> Option<Self> {
        match field {
            "verified" => Some(Status::Verified),
            "inferred" => Some(Status::Inferred),
            "guess" => Some(Status::Guess),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a model number found its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// The row's series is the model number itself.
    Exact,
    /// The row is a `match=series` row sharing the number's first three digits.
    Series,
}

/// The answer of [`which`]: the row that decides, and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Match<'a> {
    /// The deciding row; `row.family` is the image family.
    pub row: &'a ModelRow,
    /// Exact or series match.
    pub how: MatchKind,
}

/// Why [`which`] has no family for a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhichError {
    /// The input has no run of exactly four digits.
    #[error(
        "no 4-digit model number found (expected something like C9105AXI-E or AIR-AP2802I-E-K9)"
    )]
    NoModelNumber,
    /// No row covers the number: an AP these bundles don't serve (e.g. Wave-1 IOS APs) or one
    /// whose family is not known yet.
    #[error("model number {number} is unknown or unsupported: no image family is known for it")]
    Unknown {
        /// The 4-digit model number found in the input.
        number: String,
    },
    /// Several `match=series` rows with different families cover the number.
    #[error("model number {number} is ambiguous: it could need any of {}", .families.join(", "))]
    Ambiguous {
        /// The 4-digit model number found in the input.
        number: String,
        /// The candidate families, sorted and deduplicated.
        families: Vec<String>,
    },
    /// The compiled-in table is malformed (a bug: a unit test rules it out).
    #[error(transparent)]
    Data(#[from] DataError),
}

/// A malformed line in `models.tsv`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("models.tsv line {line}: {problem}")]
pub struct DataError {
    /// 1-based line number (for problems about the whole file: the last line + 1).
    pub line: usize,
    /// What is wrong with it.
    pub problem: DataProblem,
}

/// What is wrong with a line of `models.tsv`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataProblem {
    /// The first non-comment line is not the column header.
    #[error("expected the header line `series<TAB>family<TAB>match<TAB>status<TAB>source`")]
    MissingHeader,
    /// Not exactly five TAB-separated fields.
    #[error("expected 5 TAB-separated fields, found {found}")]
    FieldCount {
        /// How many fields the line has.
        found: usize,
    },
    /// `series` is not four ASCII digits.
    #[error("series {0:?} is not a 4-digit model number")]
    BadSeries(String),
    /// `family` fails [`is_image_family_name`].
    #[error("family {0:?} is not an image family name (ap<digit>g<digits>[a-z])")]
    BadFamily(String),
    /// `match` is not `exact` or `series`.
    #[error("match {0:?} is not `exact` or `series`")]
    BadMatch(String),
    /// `status` is not `verified`, `inferred` or `guess`.
    #[error("status {0:?} is not `verified`, `inferred` or `guess`")]
    BadStatus(String),
    /// `source` is empty or has leading/trailing whitespace.
    #[error("source {0:?} is empty or has leading/trailing whitespace")]
    BadSource(String),
    /// The series already has a row.
    #[error("series {series} is already listed on line {first_line}")]
    DuplicateSeries {
        /// The repeated series.
        series: String,
        /// Where it first appears.
        first_line: usize,
    },
    /// The header is there but no rows follow.
    #[error("the table has no rows")]
    NoRows,
}

/// Parse the text of a `models.tsv` file: comments and blank lines skipped, header checked,
/// every row validated (see [`DataProblem`]). Never panics.
pub fn parse(text: &str) -> Result<Vec<ModelRow>, DataError> {
    let mut rows: Vec<ModelRow> = Vec::new();
    let mut seen_header = false;
    let mut last_line = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        last_line = line;
        let content = raw.strip_suffix('\r').unwrap_or(raw);
        if content.trim().is_empty() || content.starts_with('#') {
            continue;
        }
        let err = |problem| DataError { line, problem };
        let fields: Vec<&str> = content.split('\t').collect();
        if !seen_header {
            if fields != HEADER {
                return Err(err(DataProblem::MissingHeader));
            }
            seen_header = true;
            continue;
        }
        let [series, family, matching, status, source] = fields[..] else {
            return Err(err(DataProblem::FieldCount {
                found: fields.len(),
            }));
        };
        if series.len() != 4 || !series.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(DataProblem::BadSeries(series.to_owned())));
        }
        if !is_image_family_name(family) {
            return Err(err(DataProblem::BadFamily(family.to_owned())));
        }
        let series_match = match matching {
            "exact" => false,
            "series" => true,
            other => return Err(err(DataProblem::BadMatch(other.to_owned()))),
        };
        let Some(status) = Status::parse(status) else {
            return Err(err(DataProblem::BadStatus(status.to_owned())));
        };
        if source.is_empty() || source.trim() != source {
            return Err(err(DataProblem::BadSource(source.to_owned())));
        }
        if let Some(first) = rows.iter().find(|r| r.series == series) {
            return Err(err(DataProblem::DuplicateSeries {
                series: series.to_owned(),
                first_line: first.line,
            }));
        }
        rows.push(ModelRow {
            series: series.to_owned(),
            family: family.to_owned(),
            status,
            source: source.to_owned(),
            line,
            series_match,
        });
    }
    let problem = if !seen_header {
        DataProblem::MissingHeader
    } else if rows.is_empty() {
        DataProblem::NoRows
    } else {
        return Ok(rows);
    };
    Err(DataError {
        line: last_line + 1,
        problem,
    })
}

/// The compiled-in table, parsed once; the error if it is malformed.
pub fn try_rows() -> Result<&'static [ModelRow], DataError> {
    static TABLE: OnceLock<Result<Vec<ModelRow>, DataError>> = OnceLock::new();
    match TABLE.get_or_init(|| parse(DATA)) {
        Ok(rows) => Ok(rows),
        Err(e) => Err(e.clone()),
    }
}

/// All rows of the compiled-in table, in file order. Empty if the table is malformed (a unit
/// test rules that out); [`try_rows`] returns the error instead.
pub fn rows() -> &'static [ModelRow] {
    try_rows().unwrap_or(&[])
}

/// The model number in a user-typed model string: the first run of exactly four ASCII digits
/// (`AIR-AP2802I-E-K9` → `2802`, `ESW-6300-CON-E-K9` → `6300`), or `None`.
pub fn model_number(model: &str) -> Option<&str> {
    let bytes = model.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let run = bytes
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if run == 4 {
            // ASCII digits are char boundaries, so this `get` always succeeds.
            return model.get(start..start + 4);
        }
        start += run.max(1);
    }
    None
}

/// Which image family `model` (e.g. `C9105AXI-E`) needs, by the rule in the module doc.
pub fn which(model: &str) -> Result<Match<'static>, WhichError> {
    resolve(try_rows()?, model)
}

/// [`which`] against any table.
fn resolve<'a>(rows: &'a [ModelRow], model: &str) -> Result<Match<'a>, WhichError> {
    let number = model_number(model).ok_or(WhichError::NoModelNumber)?;
    let exact: Vec<&ModelRow> = rows.iter().filter(|r| r.series == number).collect();
    if let Some(found) = pick(number, &exact, MatchKind::Exact)? {
        return Ok(found);
    }
    let prefix = number.get(..3).unwrap_or(number);
    let series: Vec<&ModelRow> = rows
        .iter()
        .filter(|r| r.series_match && r.series.get(..3) == Some(prefix))
        .collect();
    pick(number, &series, MatchKind::Series)?.ok_or_else(|| WhichError::Unknown {
        number: number.to_owned(),
    })
}

/// The first candidate if all candidates agree on the family; `Ambiguous` if they don't.
fn pick<'a>(
    number: &str,
    candidates: &[&'a ModelRow],
    how: MatchKind,
) -> Result<Option<Match<'a>>, WhichError> {
    let Some(&row) = candidates.first() else {
        return Ok(None);
    };
    let families: BTreeSet<&str> = candidates.iter().map(|r| r.family.as_str()).collect();
    if families.len() > 1 {
        return Err(WhichError::Ambiguous {
            number: number.to_owned(),
            families: families.into_iter().map(str::to_owned).collect(),
        });
    }
    Ok(Some(Match { row, how }))
}

/// The image families named in the table, sorted and deduplicated.
pub fn known_families() -> Vec<&'static str> {
    let set: BTreeSet<&'static str> = rows().iter().map(|r| r.family.as_str()).collect();
    set.into_iter().collect()
}

/// Whether a file name looks like an AP image family: `ap`, one ASCII digit, `g`, one or more
/// ASCII digits, then at most one lower-case ASCII letter, and nothing else. Case-sensitive,
/// like the bundle's file names: `ap1g4`, `ap1g6a`, `ap3g3` and `ap1g10` match; `AP1G8`,
/// `ap1g8.bin`, `ap1g` and `version.info` don't.
pub fn is_image_family_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("ap") else {
        return false;
    };
    let [generation, b'g', tail @ ..] = rest.as_bytes() else {
        return false;
    };
    if !generation.is_ascii_digit() {
        return false;
    }
    let digits = tail.iter().take_while(|b| b.is_ascii_digit()).count();
    let (_, suffix) = tail.split_at(digits);
    digits > 0 && matches!(suffix, [] | [b'a'..=b'z'])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// `Ok((family, series of the deciding row, how))` or the expected error.
    type Expected = Result<(&'static str, &'static str, MatchKind), WhichError>;

    fn unknown(number: &str) -> Expected {
        Err(WhichError::Unknown {
            number: number.to_owned(),
        })
    }

    fn check(model: &str, expected: Expected) {
        let got = which(model).map(|m| (m.row.family.as_str(), m.row.series.as_str(), m.how));
        assert_eq!(got, expected, "which({model:?})");
    }

    #[test]
    fn issue_examples() {
        use MatchKind::{Exact, Series};
        let cases: &[(&str, Expected)] = &[
            ("C9105AXI-E", Ok(("ap1g8", "9105", Exact))),
            ("C9115AXIT-B", Ok(("ap1g7", "9115", Exact))),
            ("C9120AXE-A", Ok(("ap1g7", "9120", Exact))),
            ("C9130AXI-E", Ok(("ap1g6a", "9130", Exact))),
            ("AIR-AP1815I-E-K9", Ok(("ap1g5", "1815", Exact))),
            ("AIR-AP1832I-B-K9", Ok(("ap1g4", "1830", Series))),
            ("AIR-AP1852E-E-K9", Ok(("ap1g4", "1850", Series))),
            ("AIR-AP1810W-B-K9", Ok(("ap1g4", "1810", Exact))),
            ("AIR-AP1542D-E-K9", Ok(("ap1g5", "1540", Series))),
            ("AIR-AP2802I-E-K9", Ok(("ap3g3", "2800", Series))),
            ("AIR-AP3802I-B-K9", Ok(("ap3g3", "3800", Series))),
            ("AIR-AP4800-E-K9", Ok(("ap3g3", "4800", Exact))),
            ("AIR-AP1562E-E-K9", Ok(("ap3g3", "1560", Series))),
            ("ESW-6300-CON-E-K9", Ok(("ap3g3", "6300", Exact))),
            ("IW6300H-AC-E-K9", Ok(("ap3g3", "6300", Exact))),
            ("AIR-CAP3702I-E-K9", unknown("3702")),
            ("c9105", Ok(("ap1g8", "9105", Exact))),
            ("9105", Ok(("ap1g8", "9105", Exact))),
            (" C9105AXI-E ", Ok(("ap1g8", "9105", Exact))),
        ];
        for (model, expected) in cases {
            check(model, expected.clone());
        }
    }

    #[test]
    fn more_models() {
        use MatchKind::Exact;
        let cases: &[(&str, Expected)] = &[
            ("C9117AXI-E", Ok(("ap1g6", "9117", Exact))),
            ("AIR-AP1800I-E-K9", Ok(("ap1g5", "1800", Exact))),
            ("AIR-AP1800S-B-K9", Ok(("ap1g5", "1800", Exact))),
            ("CW9166I-E", Ok(("ap1g6a", "9166", Exact))),
            ("\tc9120axi-b\n", Ok(("ap1g7", "9120", Exact))),
            // 1810, 1815 and 1800 stay distinct; other 181x/180x numbers are not guessed.
            ("AIR-AP1812", unknown("1812")),
            ("AIR-AP1802", unknown("1802")),
            ("AIR-AP1840I-E-K9", unknown("1840")),
            // Catalyst neighbours without a source stay unknown.
            ("C9124AXI-B", unknown("9124")),
            ("C9136I-B", unknown("9136")),
            ("CW9162I-E", unknown("9162")),
            ("CW9164I-E", unknown("9164")),
            // Wave-1 IOS APs.
            ("AIR-CAP1602I-E-K9", unknown("1602")),
            ("AIR-CAP1702I-E-K9", unknown("1702")),
            ("AIR-CAP2602I-E-K9", unknown("2602")),
            ("AIR-CAP2702I-E-K9", unknown("2702")),
            ("AIR-CAP3602I-E-K9", unknown("3602")),
            ("AIR-AP3702I-UXK9", unknown("3702")),
            ("C9800-AP-iosxe-wlc.bin", unknown("9800")),
            ("", Err(WhichError::NoModelNumber)),
            ("   ", Err(WhichError::NoModelNumber)),
            ("AIR-AP", Err(WhichError::NoModelNumber)),
            ("C91-05", Err(WhichError::NoModelNumber)),
            ("910512", Err(WhichError::NoModelNumber)),
            ("ap1g8", Err(WhichError::NoModelNumber)),
        ];
        for (model, expected) in cases {
            check(model, expected.clone());
        }
    }

    #[test]
    fn model_number_takes_first_run_of_exactly_four_digits() {
        assert_eq!(model_number("AIR-AP1815I-E-K9"), Some("1815"));
        assert_eq!(model_number("K9 123456 C9105"), Some("9105"));
        assert_eq!(model_number("12345-2802"), Some("2802"));
        assert_eq!(model_number("é9105ü"), Some("9105"));
        assert_eq!(model_number("AIR-AP-K9"), None);
        assert_eq!(model_number("123"), None);
    }

    #[test]
    fn data_parses_cleanly() {
        let rows = try_rows().unwrap();
        assert!(!rows.is_empty());
        assert_eq!(rows, parse(DATA).unwrap().as_slice());
        let mut by_series: HashMap<&str, &str> = HashMap::new();
        let lines: Vec<&str> = DATA.lines().collect();
        for row in rows {
            assert!(is_image_family_name(&row.family), "{row:?}");
            if let Some(family) = by_series.insert(&row.series, &row.family) {
                panic!(
                    "series {} listed twice ({family}, {})",
                    row.series, row.family
                );
            }
            let text = lines[row.line - 1];
            assert!(text.starts_with(&format!("{}\t", row.series)), "{row:?}");
            assert!(!row.source.is_empty());
        }
    }

    #[test]
    fn every_row_resolves_to_itself() {
        for row in rows() {
            for model in [
                row.series.clone(),
                format!("C{}AXI-E", row.series),
                format!("AIR-AP{}I-E-K9", row.series),
            ] {
                let got = which(&model).unwrap();
                assert_eq!(got.row, row, "{model}");
                assert_eq!(got.how, MatchKind::Exact, "{model}");
            }
        }
    }

    #[test]
    fn series_rows_cover_their_variants() {
        for row in rows().iter().filter(|r| r.series_match) {
            let prefix = &row.series[..3];
            for last in '0'..='9' {
                let number = format!("{prefix}{last}");
                let got = which(&number).unwrap();
                assert_eq!(got.row.family, row.family, "{number}");
            }
        }
    }

    #[test]
    fn every_four_digit_number_is_unambiguous_and_consistent() {
        for n in 0..=9999u32 {
            let number = format!("{n:04}");
            match which(&number) {
                Ok(m) => {
                    match m.how {
                        MatchKind::Exact => assert_eq!(m.row.series, number),
                        MatchKind::Series => {
                            assert!(m.row.series_match);
                            assert_eq!(m.row.series[..3], number[..3]);
                            assert!(rows().iter().all(|r| r.series != number));
                        }
                    }
                    assert!(known_families().contains(&m.row.family.as_str()));
                }
                Err(WhichError::Unknown { number: got }) => assert_eq!(got, number),
                Err(e) => panic!("{number}: {e}"),
            }
        }
    }

    #[test]
    fn ambiguity_is_reported_not_guessed() {
        let text = "series\tfamily\tmatch\tstatus\tsource\n\
                    2800\tap3g3\tseries\tguess\ttest\n\
                    2801\tap1g4\tseries\tguess\ttest\n\
                    2809\tap3g3\texact\tguess\ttest\n";
        let rows = parse(text).unwrap();
        assert_eq!(
            resolve(&rows, "AIR-AP2805"),
            Err(WhichError::Ambiguous {
                number: "2805".to_owned(),
                families: vec!["ap1g4".to_owned(), "ap3g3".to_owned()],
            })
        );
        // An exact row still wins over the ambiguous series.
        assert_eq!(resolve(&rows, "2809").unwrap().row.series, "2809");
        assert_eq!(resolve(&rows, "2801").unwrap().row.family, "ap1g4");
        let msg = resolve(&rows, "2805").unwrap_err().to_string();
        assert!(msg.contains("ap1g4, ap3g3"), "{msg}");
    }

    #[test]
    fn known_families_sorted_and_deduplicated() {
        assert_eq!(
            known_families(),
            [
                "ap1g4", "ap1g5", "ap1g6", "ap1g6a", "ap1g7", "ap1g8", "ap3g3"
            ]
        );
    }

    #[test]
    fn image_family_names() {
        for yes in [
            "ap1g4", "ap1g5", "ap1g6a", "ap1g6b", "ap3g3", "ap1g10", "ap2g1z",
        ] {
            assert!(is_image_family_name(yes), "{yes}");
        }
        for no in [
            "",
            "ap",
            "ap1",
            "ap1g",
            "apg1",
            "ap1ga",
            "ap12g1",
            "ap1g6ab",
            "ap1g6A",
            "AP1G8",
            "Ap1g8",
            "ap1g8.bin",
            " ap1g8",
            "ap1g8 ",
            "ap1g८",
            "version.info",
            "controller_version.info",
            "readme.txt",
            "C9800-AP-iosxe-wlc.bin",
            "c1140",
        ] {
            assert!(!is_image_family_name(no), "{no:?}");
        }
    }

    #[test]
    fn malformed_tables_are_errors() {
        const H: &str = "series\tfamily\tmatch\tstatus\tsource\n";
        let bad = |body: &str| parse(&format!("# c\n{H}{body}")).unwrap_err();
        let at3 = |problem| DataError { line: 3, problem };
        assert_eq!(
            bad("9105\tap1g8\texact\tinferred\n"),
            at3(DataProblem::FieldCount { found: 4 })
        );
        assert_eq!(
            bad("9105\tap1g8\texact\tinferred\tx\textra\n"),
            at3(DataProblem::FieldCount { found: 6 })
        );
        assert_eq!(
            bad("9105 ap1g8 exact inferred x\n"),
            at3(DataProblem::FieldCount { found: 1 })
        );
        assert_eq!(
            bad("C9105\tap1g8\texact\tinferred\tx\n"),
            at3(DataProblem::BadSeries("C9105".to_owned()))
        );
        assert_eq!(
            bad("910\tap1g8\texact\tinferred\tx\n"),
            at3(DataProblem::BadSeries("910".to_owned()))
        );
        assert_eq!(
            bad("9105\tAP1G8\texact\tinferred\tx\n"),
            at3(DataProblem::BadFamily("AP1G8".to_owned()))
        );
        assert_eq!(
            bad("9105\tap1g8\tprefix\tinferred\tx\n"),
            at3(DataProblem::BadMatch("prefix".to_owned()))
        );
        assert_eq!(
            bad("9105\tap1g8\texact\t[I]\tx\n"),
            at3(DataProblem::BadStatus("[I]".to_owned()))
        );
        assert_eq!(
            bad("9105\tap1g8\texact\tinferred\t\n"),
            at3(DataProblem::BadSource(String::new()))
        );
        assert_eq!(
            bad("9105\tap1g8\texact\tinferred\tx \n"),
            at3(DataProblem::BadSource("x ".to_owned()))
        );
        assert_eq!(
            bad("9105\tap1g8\texact\tinferred\tx\n\n9105\tap1g7\texact\tguess\ty\n"),
            DataError {
                line: 5,
                problem: DataProblem::DuplicateSeries {
                    series: "9105".to_owned(),
                    first_line: 3,
                },
            }
        );
        assert_eq!(
            parse("# only a comment\n9105\tap1g8\texact\tinferred\tx\n").unwrap_err(),
            DataError {
                line: 2,
                problem: DataProblem::MissingHeader,
            }
        );
        assert_eq!(
            parse("# nothing\n").unwrap_err(),
            DataError {
                line: 2,
                problem: DataProblem::MissingHeader,
            }
        );
        assert_eq!(
            parse(H).unwrap_err(),
            DataError {
                line: 2,
                problem: DataProblem::NoRows,
            }
        );
        // CRLF line endings are accepted.
        let crlf =
            parse("series\tfamily\tmatch\tstatus\tsource\r\n9105\tap1g8\texact\tinferred\tx\r\n")
                .unwrap();
        assert_eq!(crlf[0].source, "x");
        assert_eq!(crlf[0].line, 2);
    }

    #[test]
    fn types_serialize() {
        fn serializable<T: serde::Serialize>() {}
        serializable::<ModelRow>();
        serializable::<Match<'static>>();
        serializable::<Status>();
        serializable::<MatchKind>();
        assert_eq!(Status::Inferred.to_string(), "inferred");
    }

    proptest! {
        #[test]
        fn which_never_panics(s in any::<String>()) {
            let _ = which(&s);
        }

        #[test]
        fn which_answers_consistently(s in "[A-Za-z0-9 -]{0,24}") {
            match which(&s) {
                Ok(m) => {
                    let number = model_number(&s).unwrap();
                    prop_assert_eq!(&m.row.series[..3], &number[..3]);
                    prop_assert!(is_image_family_name(&m.row.family));
                }
                Err(WhichError::NoModelNumber) => prop_assert!(model_number(&s).is_none()),
                Err(WhichError::Unknown { number }) => {
                    prop_assert_eq!(Some(number.as_str()), model_number(&s));
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_table_like_text(
            s in "(series\tfamily\tmatch\tstatus\tsource\n)?([0-9a-z# \t\r]{0,12}\n){0,6}"
        ) {
            let _ = parse(&s);
        }
    }
}
