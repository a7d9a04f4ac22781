//! Filename remapping for `-m FILE` / `--map-file FILE`, compatible with tftpd-hpa 5.2
//! (`in.tftpd` as shipped in Debian 12, package 5.2+20150808).
//!
//! # File format (tftpd(8), section "FILENAME REMAPPING")
//!
//! Each non-comment line holds `<operation> <regex> [<replacement pattern>]`. Fields are
//! separated by whitespace; a backslash makes the next character part of the field (so
//! `\ ` is a space inside a field), and an unescaped `#` ends the field and the line (a
//! comment). Blank lines are ignored. The regex is an `egrep`-style POSIX extended
//! regular expression. Rules are processed from the top down and, by default, *all*
//! rules are processed even after one matched.
//!
//! Operation letters: `r` replace the matched part of the name by the replacement,
//! `g` repeat the rule until it no longer matches (only meaningful with `r`), `i` match
//! case-insensitively, `e` end processing if the rule matched, `s` start processing over
//! if the rule matched, `a` refuse the request (TFTP ERROR 2) if the rule matched, `G`
//! only for GET (RRQ), `P` only for PUT (WRQ), `4` only for IPv4 clients, `6` only for
//! IPv6 clients, `~` invert the sense of the match (cannot be combined with `r`).
//!
//! Replacement escapes: `\0` the whole match, `\1`..`\9` the parenthesised groups (a group
//! that did not take part in the match expands to nothing), `\i` the client address as
//! text (`192.0.2.169`, `2001:db8::1`), `\x` the client address as upper-case hex
//! (`C00002A9`, 32 digits for IPv6), `\\` a backslash, `\` + whitespace that whitespace,
//! `\#` a hash mark, `\U` / `\L` upper/lower-case everything that follows until `\E`.
//!
//! # Behaviour taken from the 5.2 source (facts, not documented in the man page)
//!
//! Read from upstream `tftpd/remap.c` and `tftpd/tftpd.c` as of 2014 (Debian's
//! 5.2+20150808 is a later snapshot of the same tree); no code was copied.
//!
//! * Rules are numbered by their position among the *rules* (comments and blank lines do
//!   not count), from 0; that number appears in the `remap: rule N: …` trace lines.
//! * An escape that is not listed above expands to the escaped character itself (`\n` is
//!   an `n`); a lone backslash at the very end of a replacement is a literal backslash.
//!   A backslash that ends a line escapes the line's newline, which then becomes part of
//!   the field. A field glued to a `#` ends there (`r a#b c` has the regex `a` and no
//!   replacement); fields after the third are ignored.
//! * `r` without a replacement is accepted and deletes the matched part.
//! * `g` repeats the *whole* rule on the rewritten name, each time from its start (not
//!   sed's "continue after the previous match").
//! * `G` and `P` are one setting: the last of them in a rule wins. `4` together with `6`
//!   makes a rule that never applies. `g` without `r` is ignored.
//! * When several of `a`, `r`, `e`, `s` are given, `a` wins over everything, then the
//!   rewrite happens, then `e` wins over `s`.
//! * `a` with a replacement pattern sends that pattern, expanded like a rewrite of the
//!   current name (text before the match + expansion + text after it), as the ERROR 2
//!   message instead of "Access denied" ([`RemapOutcome::DeniedWithMessage`]).
//! * `s` does **not** re-run rule 0: 5.2 resets its rule pointer to the first rule and
//!   then its loop advances it, so processing resumes at rule 1. Its trace line prints the
//!   first rule's number (`remap: rule 0: restart`). Both are reproduced here.
//! * `e` traces `remap: rule N: exit` and ends *without* a `remap: done` line.
//! * A dead-man counter allows 1024 visits of applicable rules per request
//!   ([`MAX_RULE_VISITS`]); the next one fails the request with ERROR 2
//!   "Remap table failure" after the warning `remap: Breaking loop, input = …, last = …`.
//!   5.2 has no bound on `g` repetitions nor on the length of the name (a rule such as
//!   `rg x x` hangs it); here those are bounded by [`MAX_GLOBAL_REPEATS`] and
//!   [`MAX_NAME_LEN`] and end the same way ([`RemapOutcome::LoopLimit`]).
//! * A rule file without rules means no remapping at all: no trace lines are produced.
//!
//! # Regular-expression dialect
//!
//! tftpd-hpa compiles the regex with glibc `regcomp(REG_EXTENDED [| REG_ICASE])` in the C
//! locale. The pattern is translated here into the `regex` crate's syntax so that the
//! POSIX/GNU constructs keep their meaning: bracket expressions (`[]a]`, `[^]a]`, a
//! backslash is literal inside brackets, `[:class:]`, `[=c=]`, `[.c.]`, ranges with
//! glibc's errors), `\w \W \s \S \b \B \< \>` and the buffer anchors (backslash +
//! backtick, backslash + quote), ASCII-only as in the C locale; every other escaped
//! character is that literal character (`\n` is `n`), `.` and `[^…]` also
//! match a newline, an unmatched `)` is literal, `{,n}` means `{0,n}`, stacked repetitions
//! such as `a+?` mean `(a+)?` (not a lazy `+`), case-insensitivity folds ASCII letters
//! only, and regcomp's error texts are used for the errors found while translating. The
//! remaining differences:
//!
//! * **Match selection.** POSIX picks the leftmost-*longest* match; the `regex` crate picks
//!   the leftmost-*first* one (alternatives are tried in order). Both agree on where a
//!   match starts, and they agree on its end for patterns without alternations whose
//!   branches can match different lengths at the same place: `a|ab` on `ab` matches `ab`
//!   in tftpd-hpa but `a` here; write `ab|a` for the same result in both. Group contents
//!   can likewise differ for such patterns.
//! * **Back-references** (`\1`..`\9` inside the regex, a GNU extension glibc accepts) are
//!   not supported: such a rule is a parse error.
//! * **Non-ASCII names.** glibc works on bytes in the C locale; here `.` and `[^…]` match
//!   one Unicode character, not one byte of its UTF-8 encoding. Names are `&str`.
//! * Patterns that exceed the `regex` crate's size or nesting limits are parse errors.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv6Addr};

use regex::{Captures, Regex, RegexBuilder};

/// Applicable-rule visits allowed for one request, like tftpd-hpa 5.2's
/// `DEADMAN_MAX_STEPS`; the visit after the last allowed one fails the request.
pub const MAX_RULE_VISITS: usize = 1024;

/// Extra rounds that all `g` rules of one request may run together (tftpd-hpa 5.2 has no
/// bound and loops forever on e.g. `rg x x`).
pub const MAX_GLOBAL_REPEATS: usize = 4096;

/// Longest name (in bytes) a rewrite or a custom refusal message may produce; longer is
/// treated as a runaway rule set. No TFTP request or usable path comes close.
pub const MAX_NAME_LEN: usize = 65_535;

/// The TFTP ERROR 2 text tftpd-hpa sends when the rule set does not terminate.
pub const LOOP_LIMIT_MESSAGE: &str = "Remap table failure";

/// The TFTP ERROR 2 text tftpd-hpa sends when an `a` rule without a pattern matches.
pub const ACCESS_DENIED_MESSAGE: &str = "Access denied";

/// The kind of request whose filename is being remapped (selects `G` / `P` rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// A read request (RRQ, "GET").
    Read,
    /// A write request (WRQ, "PUT").
    Write,
}

/// What the rules may look at besides the filename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemapContext {
    /// Read or write request.
    pub kind: RequestKind,
    /// The client's address. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as seen on a
    /// dual-stack socket) is treated as the IPv4 address it maps, as tftpd-hpa (which uses
    /// separate IPv4 and IPv6-only sockets) would see it.
    pub client: IpAddr,
}

/// Result of [`RemapRules::apply`]. Every refusal is sent as TFTP ERROR 2
/// (`EACCESS`) with the text from [`RemapOutcome::error_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemapOutcome {
    /// The name to use; it may equal the input.
    Mapped(String),
    /// An `a` rule without a replacement pattern matched: ERROR 2 "Access denied".
    Denied,
    /// An `a` rule with a replacement pattern matched; tftpd-hpa sends its expansion
    /// (the current name with the matched part replaced) as the ERROR 2 message.
    DeniedWithMessage(String),
    /// The rules did not terminate within [`MAX_RULE_VISITS`] / [`MAX_GLOBAL_REPEATS`] /
    /// [`MAX_NAME_LEN`]: ERROR 2 "Remap table failure". A [`RemapTrace::LoopBroken`]
    /// event, to be logged as a warning whatever the verbosity, precedes it.
    LoopLimit,
}

impl RemapOutcome {
    /// The ERROR 2 message tftpd-hpa sends for a refusal, `None` for [`Self::Mapped`].
    #[must_use]
    pub fn error_message(&self) -> Option<&str> {
        match self {
            Self::Mapped(_) => None,
            Self::Denied => Some(ACCESS_DENIED_MESSAGE),
            Self::DeniedWithMessage(message) => Some(message),
            Self::LoopLimit => Some(LOOP_LIMIT_MESSAGE),
        }
    }
}

/// One step of rule processing, for the `-vvv` log. `Display` gives tftpd-hpa 5.2's exact
/// line (without the syslog prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemapTrace {
    /// `remap: input: %s`, before the first rule.
    Input(String),
    /// `remap: rule %d: rewrite: %s`, after each rewrite (each round of a `g` rule).
    Rewrite {
        /// 0-based index of the rule among the rules.
        rule: usize,
        /// The whole name after the rewrite.
        result: String,
    },
    /// `remap: rule %d: abort: %s`, when an `a` rule matched.
    Abort {
        /// 0-based index of the rule among the rules.
        rule: usize,
        /// The name at that point.
        input: String,
    },
    /// `remap: rule %d: exit`, when an `e` rule matched (no [`RemapTrace::Done`] follows).
    Exit {
        /// 0-based index of the rule among the rules.
        rule: usize,
    },
    /// An `s` rule matched. tftpd-hpa 5.2 prints the *first* rule's number here, so the
    /// line is always `remap: rule 0: restart`; `rule` is the rule that matched.
    Restart {
        /// 0-based index of the rule that matched.
        rule: usize,
    },
    /// `remap: done`, when the last rule has been processed.
    Done,
    /// `remap: Breaking loop, input = %s, last = %s`: the rules did not terminate.
    /// tftpd-hpa logs this at `LOG_WARNING` whatever the verbosity.
    LoopBroken {
        /// The original name.
        input: String,
        /// The name when processing was stopped.
        last: String,
    },
}

impl RemapTrace {
    /// Lowest `-v` count at which tftpd-hpa logs this event: 3, or 0 for
    /// [`RemapTrace::LoopBroken`].
    #[must_use]
    pub fn min_verbosity(&self) -> u32 {
        if self.is_warning() { 0 } else { 3 }
    }

    /// True when tftpd-hpa logs this event at `LOG_WARNING` rather than `LOG_INFO`.
    #[must_use]
    pub fn is_warning(&self) -> bool {
        matches!(self, Self::LoopBroken { .. })
    }
}

impl fmt::Display for RemapTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Input(input) => write!(f, "remap: input: {input}"),
            Self::Rewrite { rule, result } => write!(f, "remap: rule {rule}: rewrite: {result}"),
            Self::Abort { rule, input } => write!(f, "remap: rule {rule}: abort: {input}"),
            Self::Exit { rule } => write!(f, "remap: rule {rule}: exit"),
            Self::Restart { .. } => f.write_str("remap: rule 0: restart"),
            Self::Done => f.write_str("remap: done"),
            Self::LoopBroken { input, last } => {
                write!(f, "remap: Breaking loop, input = {input}, last = {last}")
            }
        }
    }
}

/// A rule file that tftpd-hpa would refuse to start with (it logs the error and exits
/// with `EX_CONFIG`). Line numbers are 1-based lines of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemapParseError {
    /// The operation field has a character that is not one of `rgiesaGP46~`.
    #[error("remap rule contains invalid flag '{flag}', line {line}")]
    InvalidFlag {
        /// 1-based line number.
        line: usize,
        /// The offending character.
        flag: char,
    },
    /// A rule has both `r` and `~`.
    #[error("r rules cannot be inverted, line {line}: {text}")]
    InvertedRewrite {
        /// 1-based line number.
        line: usize,
        /// The rest of the line after the operation field.
        text: String,
    },
    /// An operation field with nothing after it (before a comment).
    #[error("no regex on remap, line {line}: {text}")]
    NoRegex {
        /// 1-based line number.
        line: usize,
        /// The rest of the line after the operation field (empty or a comment).
        text: String,
    },
    /// The regex does not compile (glibc's `regerror` text where the translation found the
    /// error, otherwise the `regex` crate's), or uses a back-reference.
    #[error("bad regex in remap, line {line}: {message}")]
    BadRegex {
        /// 1-based line number.
        line: usize,
        /// Why.
        message: String,
    },
}

impl RemapParseError {
    /// The 1-based line number of the offending line.
    #[must_use]
    pub fn line(&self) -> usize {
        match self {
            Self::InvalidFlag { line, .. }
            | Self::InvertedRewrite { line, .. }
            | Self::NoRegex { line, .. }
            | Self::BadRegex { line, .. } => *line,
        }
    }
}

/// A parsed rule file (`-m FILE`), ready to apply to request filenames.
#[derive(Debug, Clone)]
pub struct RemapRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    flags: RuleFlags,
    regex: Regex,
    /// The replacement pattern, split into its pieces; empty when the rule has none.
    replacement: Vec<Piece>,
}

#[derive(Debug, Clone, Copy, Default)]
struct RuleFlags {
    rewrite: bool,
    global: bool,
    exit: bool,
    restart: bool,
    abort: bool,
    inverse: bool,
    icase: bool,
    ipv4_only: bool,
    ipv6_only: bool,
    /// `G` (Read) or `P` (Write); the last one given wins.
    kind_only: Option<RequestKind>,
}

impl RuleFlags {
    fn applies_to(&self, kind: RequestKind, is_ipv4: bool) -> bool {
        if self.kind_only.is_some_and(|only| only != kind) {
            return false;
        }
        if self.ipv4_only && !is_ipv4 {
            return false;
        }
        !(self.ipv6_only && is_ipv4)
    }
}

/// One element of a replacement pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Literal(char),
    Group(usize),
    ClientText,
    ClientHex,
    Upper,
    Lower,
    EndCase,
}

impl RemapRules {
    /// Parses the text of a rule file.
    ///
    /// # Errors
    ///
    /// The first line that tftpd-hpa would refuse (it logs every bad line, then exits).
    pub fn parse(text: &str) -> Result<RemapRules, RemapParseError> {
        let mut rules = Vec::new();
        for (index, raw_line) in text.split_inclusive('\n').enumerate() {
            // fgets() keeps the newline (it can be escaped); C stops at a NUL byte.
            let line = raw_line.split('\0').next().unwrap_or_default();
            if let Some(rule) = parse_line(line, index + 1)? {
                rules.push(rule);
            }
        }
        Ok(RemapRules { rules })
    }

    /// True when the file holds no rule (only comments and blank lines): no remapping.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of rules.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Applies the rules to a request's filename. `trace` receives each trace event;
    /// log them at verbosity >= [`RemapTrace::min_verbosity`] (3, except the loop-break
    /// warning). An empty rule set maps the name to itself without any event.
    pub fn apply(
        &self,
        input: &str,
        ctx: &RemapContext,
        trace: &mut dyn FnMut(&RemapTrace),
    ) -> RemapOutcome {
        if self.rules.is_empty() {
            return RemapOutcome::Mapped(input.to_owned());
        }
        let client = ClientAddr::new(ctx.client);
        let mut current = input.to_owned();
        trace(&RemapTrace::Input(current.clone()));

        let mut visits_left = MAX_RULE_VISITS;
        let mut repeats_left = MAX_GLOBAL_REPEATS;
        let mut index = 0;
        while let Some(rule) = self.rules.get(index) {
            let flags = rule.flags;
            if !flags.applies_to(ctx.kind, client.is_ipv4) {
                index += 1;
                continue;
            }
            if visits_left == 0 {
                return loop_broken(input, current, trace);
            }
            visits_left -= 1;

            let mut was_match = false;
            loop {
                let captures = rule.regex.captures(&current);
                if captures.is_some() == flags.inverse {
                    break;
                }
                was_match = true;
                // The inverse of a match has no groups.
                let captures = if flags.inverse { None } else { captures };

                if flags.abort {
                    trace(&RemapTrace::Abort {
                        rule: index,
                        input: current.clone(),
                    });
                    if rule.replacement.is_empty() {
                        return RemapOutcome::Denied;
                    }
                    return match substitute(&current, captures.as_ref(), rule, &client) {
                        Some(message) => RemapOutcome::DeniedWithMessage(message),
                        None => loop_broken(input, current, trace),
                    };
                }

                if flags.rewrite {
                    let Some(next) = substitute(&current, captures.as_ref(), rule, &client) else {
                        return loop_broken(input, current, trace);
                    };
                    current = next;
                    trace(&RemapTrace::Rewrite {
                        rule: index,
                        result: current.clone(),
                    });
                }

                if !flags.global {
                    break;
                }
                if repeats_left == 0 {
                    return loop_broken(input, current, trace);
                }
                repeats_left -= 1;
            }

            if was_match {
                if flags.exit {
                    trace(&RemapTrace::Exit { rule: index });
                    return RemapOutcome::Mapped(current);
                }
                if flags.restart {
                    trace(&RemapTrace::Restart { rule: index });
                    // 5.2 quirk: processing resumes at the second rule (see module docs).
                    index = 1;
                    continue;
                }
            }
            index += 1;
        }
        trace(&RemapTrace::Done);
        RemapOutcome::Mapped(current)
    }
}

fn loop_broken(input: &str, last: String, trace: &mut dyn FnMut(&RemapTrace)) -> RemapOutcome {
    trace(&RemapTrace::LoopBroken {
        input: input.to_owned(),
        last,
    });
    RemapOutcome::LoopLimit
}

/// The client address as the `\i` and `\x` escapes show it.
#[derive(Debug)]
struct ClientAddr {
    is_ipv4: bool,
    text: String,
    hex: String,
}

impl ClientAddr {
    fn new(addr: IpAddr) -> Self {
        match addr.to_canonical() {
            IpAddr::V4(v4) => ClientAddr {
                is_ipv4: true,
                text: v4.to_string(),
                hex: format!("{:08X}", u32::from(v4)),
            },
            IpAddr::V6(v6) => ClientAddr {
                is_ipv4: false,
                text: inet_ntop6(v6),
                hex: v6
                    .octets()
                    .iter()
                    .fold(String::with_capacity(32), |mut hex, b| {
                        let _ = write!(hex, "{b:02X}");
                        hex
                    }),
            },
        }
    }
}

/// glibc `inet_ntop(AF_INET6)`: like Rust's `Display` (RFC 5952 style), except that the
/// deprecated IPv4-compatible form `::a.b.c.d` is printed with a dotted quad.
fn inet_ntop6(addr: Ipv6Addr) -> String {
    let segments = addr.segments();
    if let [0, 0, 0, 0, 0, 0, high, _] = segments
        && high != 0
    {
        let [.., a, b, c, d] = addr.octets();
        return format!("::{a}.{b}.{c}.{d}");
    }
    addr.to_string()
}

/// `current` with its match replaced by the expanded replacement pattern (only the
/// expansion when there is no match, i.e. for an inverted rule). `None` when the result
/// would exceed [`MAX_NAME_LEN`].
fn substitute(
    current: &str,
    captures: Option<&Captures<'_>>,
    rule: &Rule,
    client: &ClientAddr,
) -> Option<String> {
    let whole = captures.and_then(|c| c.get(0));
    let (before, after) = match whole {
        Some(m) => (
            current.get(..m.start()).unwrap_or_default(),
            current.get(m.end()..).unwrap_or_default(),
        ),
        None => ("", ""),
    };
    let mut out = String::with_capacity(current.len() + 16);
    out.push_str(before);
    let mut case = CaseChange::None;
    for piece in &rule.replacement {
        match *piece {
            Piece::Literal(c) => out.push(case.apply(c)),
            Piece::Group(n) => {
                if let Some(group) = captures.and_then(|c| c.get(n)) {
                    out.extend(group.as_str().chars().map(|c| case.apply(c)));
                }
            }
            Piece::ClientText => out.extend(client.text.chars().map(|c| case.apply(c))),
            Piece::ClientHex => out.extend(client.hex.chars().map(|c| case.apply(c))),
            Piece::Upper => case = CaseChange::Upper,
            Piece::Lower => case = CaseChange::Lower,
            Piece::EndCase => case = CaseChange::None,
        }
        if out.len() > MAX_NAME_LEN {
            return None;
        }
    }
    out.push_str(after);
    (out.len() <= MAX_NAME_LEN).then_some(out)
}

/// `\U` / `\L` state; like `toupper`/`tolower` in the C locale, ASCII letters only.
#[derive(Debug, Clone, Copy)]
enum CaseChange {
    None,
    Upper,
    Lower,
}

impl CaseChange {
    fn apply(self, c: char) -> char {
        match self {
            CaseChange::None => c,
            CaseChange::Upper => c.to_ascii_uppercase(),
            CaseChange::Lower => c.to_ascii_lowercase(),
        }
    }
}

/// `isspace()` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Reads one field: skips leading whitespace, then takes characters up to an unescaped
/// whitespace or `#`. Backslashes stay in the field. Returns the field and the rest.
fn read_field(text: &str) -> (&str, &str) {
    let text = text.trim_start_matches(is_c_space);
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        if !escaped && (is_c_space(c) || c == '#') {
            return text.split_at_checked(at).unwrap_or((text, ""));
        }
        // Two backslashes leave the escape state off again.
        escaped = !escaped && c == '\\';
    }
    (text, "")
}

fn parse_line(line: &str, line_no: usize) -> Result<Option<Rule>, RemapParseError> {
    let (operation, rest) = read_field(line);
    if operation.is_empty() {
        return Ok(None);
    }

    let mut flags = RuleFlags::default();
    for c in operation.chars() {
        match c {
            'r' => flags.rewrite = true,
            'g' => flags.global = true,
            'e' => flags.exit = true,
            's' => flags.restart = true,
            'a' => flags.abort = true,
            'i' => flags.icase = true,
            '~' => flags.inverse = true,
            '4' => flags.ipv4_only = true,
            '6' => flags.ipv6_only = true,
            'G' => flags.kind_only = Some(RequestKind::Read),
            'P' => flags.kind_only = Some(RequestKind::Write),
            flag => {
                return Err(RemapParseError::InvalidFlag {
                    line: line_no,
                    flag,
                });
            }
        }
    }
    if !flags.rewrite {
        flags.global = false;
    }
    if flags.rewrite && flags.inverse {
        return Err(RemapParseError::InvertedRewrite {
            line: line_no,
            text: rest.trim_matches(is_c_space).to_owned(),
        });
    }

    let (pattern, rest_after_regex) = read_field(rest);
    if pattern.is_empty() {
        return Err(RemapParseError::NoRegex {
            line: line_no,
            text: rest.trim_matches(is_c_space).to_owned(),
        });
    }
    let regex = compile_ere(pattern, flags.icase).map_err(|message| RemapParseError::BadRegex {
        line: line_no,
        message,
    })?;

    let (replacement, _ignored) = read_field(rest_after_regex);
    Ok(Some(Rule {
        flags,
        regex,
        replacement: parse_replacement(replacement),
    }))
}

fn parse_replacement(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            pieces.push(Piece::Literal(c));
            continue;
        }
        let piece = match chars.next() {
            // A backslash at the very end is literal.
            None => Piece::Literal('\\'),
            Some(digit @ '0'..='9') => Piece::Group(digit.to_digit(10).map_or(0, |d| d as usize)),
            Some('U') => Piece::Upper,
            Some('L') => Piece::Lower,
            Some('E') => Piece::EndCase,
            Some('i') => Piece::ClientText,
            Some('x') => Piece::ClientHex,
            Some(other) => Piece::Literal(other),
        };
        pieces.push(piece);
    }
    pieces
}

// ---------------------------------------------------------------------------------------
// POSIX ERE (glibc flavour) -> `regex` crate syntax.

/// glibc `regerror` texts, for the errors detected during translation.
mod regerror {
    pub(super) const ECOLLATE: &str = "Invalid collation character";
    pub(super) const ECTYPE: &str = "Invalid character class name";
    pub(super) const EESCAPE: &str = "Trailing backslash";
    pub(super) const EBRACK: &str = "Unmatched [, [^, [:, [., or [=";
    pub(super) const EPAREN: &str = "Unmatched ( or \\(";
    pub(super) const EBRACE: &str = "Unmatched \\{";
    pub(super) const BADBR: &str = "Invalid content of \\{\\}";
    pub(super) const ERANGE: &str = "Invalid range end";
    pub(super) const BADRPT: &str = "Invalid preceding regular expression";
    pub(super) const ESIZE: &str = "Regular expression too big";
}

/// glibc's `RE_DUP_MAX`.
const RE_DUP_MAX: u32 = 0x7fff;

/// Longest `[:name:]`, `[=c=]` or `[.c.]` name glibc reads.
const BRACKET_NAME_MAX: usize = 32;

const CHAR_CLASSES: [&str; 12] = [
    "alpha", "upper", "lower", "digit", "xdigit", "space", "print", "punct", "graph", "cntrl",
    "blank", "alnum",
];

fn compile_ere(pattern: &str, icase: bool) -> Result<Regex, String> {
    let translated = translate_ere(pattern, icase)?;
    RegexBuilder::new(&translated)
        // Byte-oriented, ASCII classes and ASCII case folding, as glibc in the C locale;
        // constructs that must match a whole character are wrapped in `(?u:…)`.
        .unicode(false)
        .case_insensitive(icase)
        // No REG_NEWLINE: `.` matches a newline, `^`/`$` only at the ends.
        .dot_matches_new_line(true)
        .build()
        .map_err(|e| regex_error_text(&e))
}

/// The `regex` crate's error as one line.
fn regex_error_text(error: &regex::Error) -> String {
    let text = error.to_string();
    match text.rsplit_once("error: ") {
        Some((_, reason)) => reason.trim().to_owned(),
        None => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// What the translator emitted last, for the placement rules of repetition operators.
#[derive(Debug, Clone, Copy)]
enum Last {
    /// Start of the pattern, of a group or of an alternative.
    Nothing,
    /// `^`, `$` or a word/buffer assertion: glibc refuses a repetition after these.
    Anchor,
    /// Something repeatable, starting at this byte of the output.
    Atom { start: usize, repeated: bool },
}

fn translate_ere(pattern: &str, icase: bool) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2 + 8);
    let mut open_groups: Vec<usize> = Vec::new();
    let mut last = Last::Nothing;
    let mut pos = 0;

    while let Some(&c) = chars.get(pos) {
        pos += 1;
        match c {
            '\\' => {
                let Some(&escaped) = chars.get(pos) else {
                    return Err(regerror::EESCAPE.to_owned());
                };
                pos += 1;
                match escaped {
                    '1'..='9' => {
                        return Err(format!("back-references (\\{escaped}) are not supported"));
                    }
                    'w' => push_atom(&mut out, &mut last, "[0-9A-Za-z_]"),
                    'W' => push_atom(&mut out, &mut last, "(?u:[^0-9A-Za-z_])"),
                    's' => push_atom(&mut out, &mut last, "[[:space:]]"),
                    'S' => push_atom(&mut out, &mut last, "(?u:[^[:space:]])"),
                    'b' => push_anchor(&mut out, &mut last, r"\b"),
                    'B' => push_anchor(&mut out, &mut last, r"\B"),
                    '<' => push_anchor(&mut out, &mut last, r"\b{start}"),
                    '>' => push_anchor(&mut out, &mut last, r"\b{end}"),
                    '`' => push_anchor(&mut out, &mut last, r"\A"),
                    '\'' => push_anchor(&mut out, &mut last, r"\z"),
                    other => push_literal(&mut out, &mut last, other),
                }
            }
            '.' => push_atom(&mut out, &mut last, "(?u:.)"),
            '[' => {
                let (class, next) = translate_bracket(&chars, pos, icase)?;
                pos = next;
                push_atom(&mut out, &mut last, &class);
            }
            '(' => {
                open_groups.push(out.len());
                out.push('(');
                last = Last::Nothing;
            }
            ')' => match open_groups.pop() {
                Some(start) => {
                    out.push(')');
                    last = Last::Atom {
                        start,
                        repeated: false,
                    };
                }
                // RE_UNMATCHED_RIGHT_PAREN_ORD: a stray `)` is an ordinary character.
                None => push_literal(&mut out, &mut last, ')'),
            },
            '|' => {
                out.push('|');
                last = Last::Nothing;
            }
            '^' => push_anchor(&mut out, &mut last, "^"),
            '$' => push_anchor(&mut out, &mut last, "$"),
            '*' => push_repeat(&mut out, &mut last, "*")?,
            '+' => push_repeat(&mut out, &mut last, "+")?,
            '?' => push_repeat(&mut out, &mut last, "?")?,
            '{' => {
                if !matches!(last, Last::Atom { .. }) {
                    return Err(regerror::BADRPT.to_owned());
                }
                let (op, next) = translate_interval(&chars, pos)?;
                pos = next;
                push_repeat(&mut out, &mut last, &op)?;
            }
            other => push_literal(&mut out, &mut last, other),
        }
    }
    if !open_groups.is_empty() {
        return Err(regerror::EPAREN.to_owned());
    }
    Ok(out)
}

fn push_atom(out: &mut String, last: &mut Last, atom: &str) {
    *last = Last::Atom {
        start: out.len(),
        repeated: false,
    };
    out.push_str(atom);
}

fn push_anchor(out: &mut String, last: &mut Last, anchor: &str) {
    out.push_str(anchor);
    *last = Last::Anchor;
}

fn push_literal(out: &mut String, last: &mut Last, c: char) {
    *last = Last::Atom {
        start: out.len(),
        repeated: false,
    };
    push_escaped(out, c);
}

/// A character that matches itself in the `regex` crate's syntax, inside or outside a
/// class: ASCII punctuation, spaces and controls as `\x{..}`, other characters as is.
fn push_escaped(out: &mut String, c: char) {
    if c.is_ascii() && !c.is_ascii_alphanumeric() {
        let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
    } else {
        out.push(c);
    }
}

fn push_repeat(out: &mut String, last: &mut Last, op: &str) -> Result<(), String> {
    let Last::Atom { start, repeated } = *last else {
        return Err(regerror::BADRPT.to_owned());
    };
    if repeated {
        // POSIX `a+?` is `(a+)?`, not a lazy `+`; `a**` is `(a*)*`.
        if !out.is_char_boundary(start) {
            return Err(regerror::BADRPT.to_owned());
        }
        out.insert_str(start, "(?:");
        out.push(')');
    }
    out.push_str(op);
    *last = Last::Atom {
        start,
        repeated: true,
    };
    Ok(())
}

/// A number inside `{…}` as glibc's `fetch_number` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntervalNumber {
    Absent,
    Value(u32),
    Invalid,
}

/// Reads up to the next `}` or `,`; returns the number, that terminator and the position
/// after it.
fn fetch_interval_number(
    chars: &[char],
    mut pos: usize,
) -> Result<(IntervalNumber, char, usize), String> {
    let mut number = IntervalNumber::Absent;
    loop {
        let Some(&c) = chars.get(pos) else {
            return Err(regerror::EBRACE.to_owned());
        };
        pos += 1;
        if c == '}' || c == ',' {
            return Ok((number, c, pos));
        }
        number = match (number, c.to_digit(10)) {
            (IntervalNumber::Invalid, _) | (_, None) => IntervalNumber::Invalid,
            (IntervalNumber::Absent, Some(d)) => IntervalNumber::Value(d),
            (IntervalNumber::Value(n), Some(d)) => {
                IntervalNumber::Value((n * 10 + d).min(RE_DUP_MAX + 1))
            }
        };
    }
}

/// Translates the interval whose `{` was just read; returns the `regex` crate operator and
/// the position after the `}`.
fn translate_interval(chars: &[char], pos: usize) -> Result<(String, usize), String> {
    let (first, terminator, pos) = fetch_interval_number(chars, pos)?;
    let (min, max, pos) = match (first, terminator) {
        (IntervalNumber::Value(n), '}') => (n, Some(n), pos),
        (IntervalNumber::Value(_) | IntervalNumber::Absent, ',') => {
            let min = match first {
                IntervalNumber::Value(n) => n,
                _ => 0,
            };
            let (second, terminator, pos) = fetch_interval_number(chars, pos)?;
            let max = match second {
                IntervalNumber::Absent => None,
                IntervalNumber::Value(m) => Some(m),
                IntervalNumber::Invalid => return Err(regerror::BADBR.to_owned()),
            };
            if terminator != '}' {
                return Err(regerror::BADBR.to_owned());
            }
            (min, max, pos)
        }
        _ => return Err(regerror::BADBR.to_owned()),
    };
    if max.is_some_and(|max| min > max) {
        return Err(regerror::BADBR.to_owned());
    }
    if max.unwrap_or(min) > RE_DUP_MAX {
        return Err(regerror::ESIZE.to_owned());
    }
    let op = match max {
        Some(max) if max == min => format!("{{{min}}}"),
        Some(max) => format!("{{{min},{max}}}"),
        None => format!("{{{min},}}"),
    };
    Ok((op, pos))
}

/// One element of a bracket expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BracketElement {
    /// A plain character or a one-character `[.c.]`.
    Char(char),
    /// `[=c=]` (in the C locale: just that character; cannot start a range).
    Equivalence(char),
    /// `[:name:]`.
    Class(String),
}

/// Reads one bracket element at `pos`; `accept_hyphen` says whether a `-` may stand here
/// other than right before the closing `]`.
fn read_bracket_element(
    chars: &[char],
    pos: usize,
    accept_hyphen: bool,
    icase: bool,
) -> Result<(BracketElement, usize), String> {
    // With REG_ICASE glibc lower-cases the pattern's bracket contents.
    let fold = |c: char| if icase { c.to_ascii_lowercase() } else { c };
    let Some(&c) = chars.get(pos) else {
        return Err(regerror::EBRACK.to_owned());
    };
    if c == '['
        && let Some(&delimiter @ (':' | '=' | '.')) = chars.get(pos + 1)
    {
        let mut name = String::new();
        let mut at = pos + 2;
        loop {
            if name.chars().count() >= BRACKET_NAME_MAX {
                return Err(regerror::EBRACK.to_owned());
            }
            let Some(&ch) = chars.get(at) else {
                return Err(regerror::EBRACK.to_owned());
            };
            at += 1;
            if ch == delimiter && chars.get(at) == Some(&']') {
                at += 1;
                break;
            }
            name.push(ch);
        }
        let mut name_chars = name.chars();
        let single = match (name_chars.next(), name_chars.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        };
        let element = match delimiter {
            ':' if CHAR_CLASSES.contains(&name.as_str()) => BracketElement::Class(name),
            ':' => return Err(regerror::ECTYPE.to_owned()),
            '=' => BracketElement::Equivalence(fold(single.ok_or(regerror::ECOLLATE)?)),
            _ => BracketElement::Char(fold(single.ok_or(regerror::ECOLLATE)?)),
        };
        return Ok((element, at));
    }
    if c == '-' && !accept_hyphen && chars.get(pos + 1) != Some(&']') {
        return Err(regerror::ERANGE.to_owned());
    }
    Ok((BracketElement::Char(fold(c)), pos + 1))
}

/// Translates the bracket expression whose `[` was just read; returns a `regex` crate
/// class and the position after the closing `]`.
fn translate_bracket(
    chars: &[char],
    mut pos: usize,
    icase: bool,
) -> Result<(String, usize), String> {
    let negated = chars.get(pos) == Some(&'^');
    if negated {
        pos += 1;
    }
    let mut items = String::new();
    let mut non_ascii = false;
    let mut first = true;
    loop {
        let Some(&c) = chars.get(pos) else {
            return Err(regerror::EBRACK.to_owned());
        };
        if c == ']' && !first {
            pos += 1;
            break;
        }
        let (start, next) = read_bracket_element(chars, pos, first, icase)?;
        pos = next;
        first = false;

        let mut is_range = false;
        if !matches!(
            start,
            BracketElement::Class(_) | BracketElement::Equivalence(_)
        ) {
            match (chars.get(pos), chars.get(pos + 1)) {
                (None, _) | (Some('-'), None) => return Err(regerror::EBRACK.to_owned()),
                (Some('-'), Some(']')) => {} // a final `-` is literal, read next round
                (Some('-'), Some(_)) => is_range = true,
                _ => {}
            }
        }

        if is_range {
            let (end, next) = read_bracket_element(chars, pos + 1, true, icase)?;
            pos = next;
            let (BracketElement::Char(low), BracketElement::Char(high)) = (&start, &end) else {
                return Err(regerror::ERANGE.to_owned());
            };
            if low > high {
                return Err(regerror::ERANGE.to_owned());
            }
            non_ascii |= !low.is_ascii() || !high.is_ascii();
            push_escaped(&mut items, *low);
            items.push('-');
            push_escaped(&mut items, *high);
            continue;
        }
        match start {
            BracketElement::Char(ch) | BracketElement::Equivalence(ch) => {
                non_ascii |= !ch.is_ascii();
                push_escaped(&mut items, ch);
            }
            BracketElement::Class(name) => {
                items.push_str("[:");
                items.push_str(&name);
                items.push_str(":]");
            }
        }
    }
    let class = format!("[{}{items}]", if negated { "^" } else { "" });
    // A negated or non-ASCII class must match whole characters, not bytes.
    if negated || non_ascii {
        Ok((format!("(?u:{class})"), pos))
    } else {
        Ok((class, pos))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const REFERENCE_RULES: &str =
        "rg \\\\ /\nri ^/?ewc/ EWC/\na ^secret\nr ^(EWC/17_9_4a/)AP1G8$ \\1ap1g8\n";

    fn v4() -> RemapContext {
        RemapContext {
            kind: RequestKind::Read,
            client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 169)),
        }
    }

    fn v6() -> RemapContext {
        RemapContext {
            kind: RequestKind::Read,
            client: IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap()),
        }
    }

    fn write_v4() -> RemapContext {
        RemapContext {
            kind: RequestKind::Write,
            ..v4()
        }
    }

    fn rules(text: &str) -> RemapRules {
        RemapRules::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// Applies and returns the outcome and the trace lines as tftpd-hpa prints them.
    fn run(text: &str, input: &str, ctx: &RemapContext) -> (RemapOutcome, Vec<String>) {
        let mut lines = Vec::new();
        let outcome = rules(text).apply(input, ctx, &mut |t| lines.push(t.to_string()));
        (outcome, lines)
    }

    fn map(text: &str, input: &str) -> RemapOutcome {
        run(text, input, &v4()).0
    }

    fn mapped(s: &str) -> RemapOutcome {
        RemapOutcome::Mapped(s.to_owned())
    }

    fn parse_err(text: &str) -> RemapParseError {
        RemapRules::parse(text).expect_err(text)
    }

    // --- the rules tested against tftpd-hpa on Debian 12 (reference 1.5/1.6) ---------

    #[test]
    fn reference_rules_remap_ewc_path() {
        let (outcome, trace) = run(REFERENCE_RULES, "ewc/17_9_4a/AP1G8", &v4());
        assert_eq!(outcome, mapped("EWC/17_9_4a/ap1g8"));
        assert_eq!(
            trace,
            [
                "remap: input: ewc/17_9_4a/AP1G8",
                "remap: rule 1: rewrite: EWC/17_9_4a/AP1G8",
                "remap: rule 3: rewrite: EWC/17_9_4a/ap1g8",
                "remap: done",
            ]
        );
    }

    #[test]
    fn reference_rules_refuse_secret_with_rule_2() {
        let (outcome, trace) = run(REFERENCE_RULES, "secretfile", &v4());
        assert_eq!(outcome, RemapOutcome::Denied);
        assert_eq!(outcome.error_message(), Some("Access denied"));
        assert_eq!(
            trace,
            [
                "remap: input: secretfile",
                "remap: rule 2: abort: secretfile"
            ]
        );
    }

    #[test]
    fn reference_rules_backslashes_become_slashes() {
        let (outcome, trace) = run(REFERENCE_RULES, "a\\b\\c", &v4());
        assert_eq!(outcome, mapped("a/b/c"));
        assert_eq!(
            trace,
            [
                "remap: input: a\\b\\c",
                "remap: rule 0: rewrite: a/b\\c",
                "remap: rule 0: rewrite: a/b/c",
                "remap: done",
            ]
        );
    }

    #[test]
    fn reference_rules_leave_other_names_alone() {
        let (outcome, trace) = run(REFERENCE_RULES, "nonexist", &v4());
        assert_eq!(outcome, mapped("nonexist"));
        assert_eq!(trace, ["remap: input: nonexist", "remap: done"]);
        assert_eq!(
            map(REFERENCE_RULES, "/ewc/x"),
            mapped("EWC/x"),
            "the optional leading slash is eaten too"
        );
    }

    #[test]
    fn rule_numbers_count_rules_not_lines() {
        let text = "# header\n\n   # indented comment\nr ^a b\n\n# more\nr ^b c\n";
        let (outcome, trace) = run(text, "a", &v4());
        assert_eq!(outcome, mapped("c"));
        assert_eq!(
            trace,
            [
                "remap: input: a",
                "remap: rule 0: rewrite: b",
                "remap: rule 1: rewrite: c",
                "remap: done",
            ]
        );
        assert_eq!(rules(text).len(), 2);
    }

    // --- flags ---------------------------------------------------------------------------

    #[test]
    fn flag_r_replaces_only_the_matched_part() {
        assert_eq!(map("r o 0", "foo/boot"), mapped("f0o/boot"));
        assert_eq!(map("r o+ 0", "foo/boot"), mapped("f0/boot"));
    }

    #[test]
    fn flag_r_without_replacement_deletes_the_match() {
        assert_eq!(map("r ^/+", "//boot/x"), mapped("boot/x"));
    }

    #[test]
    fn flag_g_repeats_from_the_start_until_no_match() {
        assert_eq!(map("rg o 0", "foo/boot"), mapped("f00/b00t"));
        // Each round starts again at the beginning of the new name.
        assert_eq!(map("rg ^/ ", "///x"), mapped("x"));
        assert_eq!(map("rg ab a", "aabbb"), mapped("aa"));
    }

    #[test]
    fn flag_g_without_r_is_ignored() {
        let (outcome, trace) = run("ge ^x", "xx", &v4());
        assert_eq!(outcome, mapped("xx"));
        assert_eq!(trace, ["remap: input: xx", "remap: rule 0: exit"]);
    }

    #[test]
    fn flag_i_matches_case_insensitively() {
        assert_eq!(map("ri ^boot/ BOOT/", "BoOt/x"), mapped("BOOT/x"));
        assert_eq!(map("r ^boot/ BOOT/", "BoOt/x"), mapped("BoOt/x"));
        // Bracket contents and ranges fold too.
        assert_eq!(map("ri [A-C]+ X", "zbcaz"), mapped("zXz"));
        assert_eq!(map("ri [^a] X", "A"), mapped("A"));
    }

    #[test]
    fn flag_e_ends_processing_without_done() {
        let text = "re ^a b\nr ^b c\n";
        let (outcome, trace) = run(text, "a", &v4());
        assert_eq!(outcome, mapped("b"));
        assert_eq!(
            trace,
            [
                "remap: input: a",
                "remap: rule 0: rewrite: b",
                "remap: rule 0: exit"
            ]
        );
        // No match: processing goes on.
        assert_eq!(map(text, "b"), mapped("c"));
    }

    #[test]
    fn flag_s_restarts_at_rule_1_like_tftpd_hpa_5_2() {
        let text = "r ^x X\nrs ^a x\nr ^b c\n";
        let (outcome, trace) = run(text, "a", &v4());
        // Rule 0 (`^x`) is not run again after the restart: 5.2 resumes at rule 1.
        assert_eq!(outcome, mapped("x"));
        assert_eq!(
            trace,
            [
                "remap: input: a",
                "remap: rule 1: rewrite: x",
                "remap: rule 0: restart",
                "remap: done",
            ]
        );
    }

    #[test]
    fn flag_s_reruns_following_rules() {
        let text = "r ^c d\nr ^b c\nrs ^a b\n";
        let (outcome, trace) = run(text, "a", &v4());
        assert_eq!(outcome, mapped("c"));
        assert_eq!(
            trace,
            [
                "remap: input: a",
                "remap: rule 2: rewrite: b",
                "remap: rule 0: restart",
                "remap: rule 1: rewrite: c",
                "remap: done",
            ]
        );
    }

    #[test]
    fn restart_trace_keeps_the_matching_rule() {
        let mut events = Vec::new();
        let outcome = rules("r ^q q\nrs ^a b\n").apply("a", &v4(), &mut |t| events.push(t.clone()));
        assert_eq!(outcome, mapped("b"));
        assert!(events.contains(&RemapTrace::Restart { rule: 1 }));
    }

    #[test]
    fn flag_a_refuses() {
        assert_eq!(map("a \\.\\.", "../etc/passwd"), RemapOutcome::Denied);
        assert_eq!(map("a \\.\\.", "etc/passwd"), mapped("etc/passwd"));
    }

    #[test]
    fn flag_a_with_pattern_gives_custom_message_like_a_rewrite() {
        let outcome = map("a ^secret No\\ secrets:\\ ", "secretfile");
        assert_eq!(
            outcome,
            RemapOutcome::DeniedWithMessage("No secrets: file".to_owned())
        );
        assert_eq!(outcome.error_message(), Some("No secrets: file"));
    }

    #[test]
    fn flag_a_wins_over_r_and_e() {
        let (outcome, trace) = run("rae ^a b", "a", &v4());
        assert_eq!(outcome, RemapOutcome::DeniedWithMessage("b".to_owned()));
        assert_eq!(trace, ["remap: input: a", "remap: rule 0: abort: a"]);
    }

    #[test]
    fn flags_g_and_p_select_request_kind() {
        let text = "rG ^f read\nrP ^f write\n";
        assert_eq!(run(text, "f", &v4()).0, mapped("read"));
        assert_eq!(run(text, "f", &write_v4()).0, mapped("write"));
        // The last of G/P wins.
        assert_eq!(run("rGP ^f w", "f", &v4()).0, mapped("f"));
        assert_eq!(run("rGP ^f w", "f", &write_v4()).0, mapped("w"));
    }

    #[test]
    fn flags_4_and_6_select_address_family() {
        let text = "r4 ^f four\nr6 ^f six\n";
        assert_eq!(run(text, "f", &v4()).0, mapped("four"));
        assert_eq!(run(text, "f", &v6()).0, mapped("six"));
        assert_eq!(run("r46 ^f x", "f", &v4()).0, mapped("f"));
        assert_eq!(run("r46 ^f x", "f", &v6()).0, mapped("f"));
    }

    #[test]
    fn v4_mapped_client_counts_as_ipv4() {
        let ctx = RemapContext {
            kind: RequestKind::Read,
            client: IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()),
        };
        assert_eq!(
            run("r4 ^f \\i-\\x", "f", &ctx).0,
            mapped("10.1.2.3-0A010203")
        );
    }

    #[test]
    fn skipped_rules_keep_their_number() {
        let (_, trace) = run("rP ^a w\nr ^a b\n", "a", &v4());
        assert_eq!(
            trace,
            [
                "remap: input: a",
                "remap: rule 1: rewrite: b",
                "remap: done"
            ]
        );
    }

    #[test]
    fn flag_tilde_inverts_the_match() {
        assert_eq!(map("a~ ^pxe/", "etc/passwd"), RemapOutcome::Denied);
        assert_eq!(map("a~ ^pxe/", "pxe/boot"), mapped("pxe/boot"));
        let (outcome, trace) = run("e~ ^a\nr ^ x", "b", &v4());
        assert_eq!(outcome, mapped("b"));
        assert_eq!(trace, ["remap: input: b", "remap: rule 0: exit"]);
        // An inverted `a` message has no match to rewrite: just the expansion.
        assert_eq!(
            map("a~ ^ok bad:\\0\\1.", "x"),
            RemapOutcome::DeniedWithMessage("bad:.".to_owned())
        );
    }

    // --- replacement escapes ---------------------------------------------------------------

    #[test]
    fn escape_groups_and_whole_match() {
        assert_eq!(
            map("r ([a-z]+)-([0-9]+) \\2-\\1[\\0]", "x/abc-42.bin"),
            mapped("x/42-abc[abc-42].bin")
        );
        assert_eq!(
            map(
                "r (a)(b)(c)(d)(e)(f)(g)(h)(i) \\9\\8\\7\\6\\5\\4\\3\\2\\1",
                "abcdefghi"
            ),
            mapped("ihgfedcba")
        );
    }

    #[test]
    fn escape_unmatched_or_missing_group_is_empty() {
        assert_eq!(map("r ^(a)|(b) [\\1][\\2][\\7]", "b"), mapped("[][b][]"));
    }

    #[test]
    fn escape_client_ip_text() {
        assert_eq!(run("r ^ \\i/", "f", &v4()).0, mapped("192.0.2.169/f"));
        assert_eq!(run("r ^ \\i/", "f", &v6()).0, mapped("2001:db8::1/f"));
    }

    #[test]
    fn escape_client_ip_hex() {
        assert_eq!(run("r ^ \\x/", "f", &v4()).0, mapped("C00002A9/f"));
        assert_eq!(
            run("r ^ \\x/", "f", &v6()).0,
            mapped("20010DB8000000000000000000000001/f")
        );
        assert_eq!(run("r ^ \\L\\x/", "f", &v4()).0, mapped("c00002a9/f"));
    }

    #[test]
    fn ipv6_text_matches_inet_ntop() {
        let text = |s: &str| ClientAddr::new(IpAddr::V6(s.parse().unwrap())).text;
        assert_eq!(text("::1"), "::1");
        assert_eq!(text("::"), "::");
        assert_eq!(text("fe80::1:0:0:1"), "fe80::1:0:0:1");
        assert_eq!(text("2001:db8:0:1:0:0:0:1"), "2001:db8:0:1::1");
        assert_eq!(text("::1.2.3.4"), "::1.2.3.4");
        assert_eq!(text("::2"), "::2");
    }

    #[test]
    fn escape_backslash_space_and_hash() {
        assert_eq!(map("r x a\\\\b", "x"), mapped("a\\b"));
        assert_eq!(map("r x a\\ b", "x"), mapped("a b"));
        assert_eq!(map("r x a\\#b # comment", "x"), mapped("a#b"));
        // Escaped space and hash in the regex too.
        assert_eq!(map("r a\\ b\\# X", "za b#z"), mapped("zXz"));
    }

    #[test]
    fn escape_case_changes() {
        assert_eq!(
            map("r ^([a-z]+)/(.*)$ \\U\\1\\E/\\2", "boot/File"),
            mapped("BOOT/File")
        );
        assert_eq!(map("r ^(.*)$ \\L\\1", "PXE/Linux.0"), mapped("pxe/linux.0"));
        assert_eq!(map("r ^(.*)$ \\Ux\\1\\Ly", "aB"), mapped("XABy"));
        // ASCII only, like toupper() in the C locale.
        assert_eq!(map("r ^(.*)$ \\U\\1", "é-a"), mapped("é-A"));
    }

    #[test]
    fn escape_unknown_is_the_character_and_final_backslash_is_literal() {
        assert_eq!(map("r x \\n\\q", "x"), mapped("nq"));
        assert_eq!(map("r x a\\", "x"), mapped("a\\"));
        // A backslash at the end of a line escapes the newline.
        assert_eq!(map("r x a\\\nr y z\n", "x"), mapped("a\n"));
    }

    // --- file syntax ---------------------------------------------------------------------

    #[test]
    fn comments_blank_lines_and_extra_fields() {
        let text = "# comment\n\n \t \nr a b # trailing\nr c#d e\nr f g h i\n";
        let r = rules(text);
        assert_eq!(r.len(), 3);
        assert_eq!(map(text, "a"), mapped("b"));
        assert_eq!(
            map(text, "c"),
            mapped(""),
            "`#` ends the regex field; no replacement"
        );
        assert_eq!(map(text, "f"), mapped("g"), "a fourth field is ignored");
        assert!(rules("# only comments\n\n").is_empty());
        assert!(rules("").is_empty());
    }

    #[test]
    fn crlf_and_missing_final_newline() {
        let text = "r ^a b\r\nr ^b c";
        assert_eq!(map(text, "a"), mapped("c"));
    }

    #[test]
    fn empty_rule_set_maps_without_trace() {
        let (outcome, trace) = run("# nothing\n", "x", &v4());
        assert_eq!(outcome, mapped("x"));
        assert!(trace.is_empty());
    }

    // --- parse errors --------------------------------------------------------------------

    #[test]
    fn parse_error_invalid_flag() {
        let err = parse_err("r a b\n\nrq x y\n");
        assert_eq!(err, RemapParseError::InvalidFlag { line: 3, flag: 'q' });
        assert_eq!(
            err.to_string(),
            "remap rule contains invalid flag 'q', line 3"
        );
        assert_eq!(err.line(), 3);
        assert_eq!(
            parse_err("^foo bar").to_string(),
            "remap rule contains invalid flag '^', line 1"
        );
    }

    #[test]
    fn parse_error_no_regex() {
        let err = parse_err("# c\nrg # nothing\n");
        assert_eq!(err.to_string(), "no regex on remap, line 2: # nothing");
        assert_eq!(parse_err("a\n").to_string(), "no regex on remap, line 1: ");
    }

    #[test]
    fn parse_error_inverted_rewrite() {
        let err = parse_err("r a b\nr~ ^x y\n");
        assert_eq!(err.to_string(), "r rules cannot be inverted, line 2: ^x y");
        assert_eq!(err.line(), 2);
    }

    #[test]
    fn parse_error_bad_regex_with_glibc_texts() {
        let cases = [
            ("r (a b", "Unmatched ( or \\("),
            ("r [a b", "Unmatched [, [^, [:, [., or [="),
            ("r *a b", "Invalid preceding regular expression"),
            ("r a|+ b", "Invalid preceding regular expression"),
            ("r ^* b", "Invalid preceding regular expression"),
            ("r [z-a] b", "Invalid range end"),
            ("r [a-c-e] b", "Invalid range end"),
            ("r [[:nope:]] b", "Invalid character class name"),
            ("r [[.ab.]] b", "Invalid collation character"),
            ("r a{2,1} b", "Invalid content of \\{\\}"),
            ("r a{} b", "Invalid content of \\{\\}"),
            ("r a{1x} b", "Invalid content of \\{\\}"),
            ("r a{1", "Unmatched \\{"),
            ("r a{99999} b", "Regular expression too big"),
        ];
        for (text, message) in cases {
            let err = parse_err(&format!("# x\n{text}\n"));
            assert_eq!(
                err,
                RemapParseError::BadRegex {
                    line: 2,
                    message: message.to_owned()
                },
                "{text}"
            );
        }
        assert_eq!(
            parse_err("r [ b").to_string(),
            "bad regex in remap, line 1: Unmatched [, [^, [:, [., or [="
        );
    }

    #[test]
    fn parse_error_trailing_backslash_only_at_end_of_file() {
        assert_eq!(
            parse_err("r a\\").to_string(),
            "bad regex in remap, line 1: Trailing backslash"
        );
        // Before a newline the backslash escapes it: the regex is `a` + newline.
        assert_eq!(map("r a\\\n", "xa\n"), mapped("x"));
    }

    #[test]
    fn parse_error_back_reference() {
        assert_eq!(
            parse_err("r (a)\\1 b").to_string(),
            "bad regex in remap, line 1: back-references (\\1) are not supported"
        );
    }

    // --- regex dialect -------------------------------------------------------------------

    #[test]
    fn ere_brackets_follow_posix() {
        assert_eq!(map("rg []] X", "a]b]"), mapped("aXbX"));
        assert_eq!(map("rg [^]a] a", "a]bc"), mapped("a]aa"));
        assert_eq!(
            map("rg [\\] X", "a\\b"),
            mapped("aXb"),
            "backslash is literal in brackets"
        );
        assert_eq!(map("rg [a-] X", "b-a"), mapped("bXX"));
        assert_eq!(map("rg [[:digit:][:upper:]] _", "aB3c"), mapped("a__c"));
        assert_eq!(map("rg [[=a=][.b.]] _", "abc"), mapped("__c"));
        assert_eq!(map("rg [[] _", "a[b"), mapped("a_b"));
        assert_eq!(map("rg [é] e", "café"), mapped("cafe"));
    }

    #[test]
    fn ere_escapes_follow_glibc() {
        assert_eq!(
            map("r \\n N", "an\n"),
            mapped("aN\n"),
            "`\\n` is the letter n"
        );
        assert_eq!(map("rg \\w -", "a-b"), mapped("---"));
        assert_eq!(map("rg \\W _", "a-b"), mapped("a_b"));
        assert_eq!(map("rg \\s _", "a\tb"), mapped("a_b"));
        assert_eq!(map("r \\<b X", "ab b"), mapped("ab X"));
        assert_eq!(map("r a\\> X", "aa a"), mapped("aX a"));
        assert_eq!(map("r \\bx X", "éx"), mapped("éX"), "ASCII word characters");
        assert_eq!(map("r \\`a X", "aa"), mapped("Xa"));
        assert_eq!(map("r a\\' X", "aa"), mapped("aX"));
        assert_eq!(map("r \\(\\) X", "f()"), mapped("fX"));
    }

    #[test]
    fn ere_operators_follow_glibc() {
        assert_eq!(map("r a) X", "ba)"), mapped("bX"), "unmatched ) is literal");
        assert_eq!(map("r ^a{,2} X", "aaa"), mapped("Xa"));
        assert_eq!(map("r ^a{2,} X", "aaab"), mapped("Xb"));
        assert_eq!(map("r ^a{2} X", "aaab"), mapped("Xab"));
        assert_eq!(
            map("r ^a+? X", "aaab"),
            mapped("Xb"),
            "a+? is (a+)?, greedy"
        );
        assert_eq!(map("r ^(ab)* X", "ababc"), mapped("Xc"));
        assert_eq!(map("r a.b X", "a\nb"), mapped("X"), "dot matches newline");
        assert_eq!(map("r ^$ empty", ""), mapped("empty"));
        assert_eq!(map("r x}y X", "x}y"), mapped("X"));
    }

    #[test]
    fn ere_case_folding_is_ascii_only() {
        // KELVIN SIGN folds to k in Unicode, not in the C locale.
        assert_eq!(map("ri k X", "\u{212A}"), mapped("\u{212A}"));
        assert_eq!(map("ri é X", "É"), mapped("É"));
        assert_eq!(map("ri K X", "k"), mapped("X"));
    }

    #[test]
    fn leftmost_first_differs_from_posix_longest() {
        // Documented difference: glibc would give "X" (longest), the regex crate "Xb".
        assert_eq!(map("r a|ab X", "ab"), mapped("Xb"));
        assert_eq!(map("r ab|a X", "ab"), mapped("X"));
    }

    // --- loop guard ----------------------------------------------------------------------

    #[test]
    fn restart_loop_hits_the_dead_man() {
        let (outcome, trace) = run("r ^q q\nrs ^a a\n", "a", &v4());
        assert_eq!(outcome, RemapOutcome::LoopLimit);
        assert_eq!(outcome.error_message(), Some("Remap table failure"));
        // Rule 0 is visited once and rule 1 1023 times; the next visit fails.
        let rewrites = trace
            .iter()
            .filter(|l| l.as_str() == "remap: rule 1: rewrite: a")
            .count();
        assert_eq!(rewrites, MAX_RULE_VISITS - 1);
        assert_eq!(
            trace.last().map(String::as_str),
            Some("remap: Breaking loop, input = a, last = a")
        );
    }

    #[test]
    fn dead_man_counts_rule_visits_like_5_2() {
        let text = "r ^zz z\n".repeat(MAX_RULE_VISITS);
        assert_eq!(map(&text, "a"), mapped("a"));
        let text = "r ^zz z\n".repeat(MAX_RULE_VISITS + 1);
        assert_eq!(map(&text, "a"), RemapOutcome::LoopLimit);
        // Rules excluded by G/P/4/6 are not counted.
        let text = format!(
            "{}{}",
            "rP ^zz z\n".repeat(10),
            "r ^zz z\n".repeat(MAX_RULE_VISITS)
        );
        assert_eq!(map(&text, "a"), mapped("a"));
    }

    #[test]
    fn endless_global_rule_is_stopped() {
        let mut events = Vec::new();
        let outcome = rules("rg x x").apply("x", &v4(), &mut |t| events.push(t.clone()));
        assert_eq!(outcome, RemapOutcome::LoopLimit);
        assert_eq!(events.len(), 1 + MAX_GLOBAL_REPEATS + 1 + 1);
        let last = events.last().unwrap();
        assert!(last.is_warning());
        assert_eq!(last.min_verbosity(), 0);
        assert_eq!(RemapTrace::Done.min_verbosity(), 3);
        assert_eq!(
            map("rg x* y", "abc"),
            RemapOutcome::LoopLimit,
            "empty match repeats"
        );
    }

    #[test]
    fn growing_name_is_stopped() {
        assert_eq!(map("rg ^(.*)$ \\1\\1", "ab"), RemapOutcome::LoopLimit);
        assert_eq!(
            map("rs ^(.*)$ \\1\\1\nrs ^(.*)$ \\1\\1", "ab"),
            RemapOutcome::LoopLimit
        );
        let long = "\\0".repeat(100);
        assert_eq!(
            map(&format!("r .* {long}"), &"x".repeat(1000)),
            RemapOutcome::LoopLimit
        );
    }

    // --- never panics ----------------------------------------------------------------------

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn contexts() -> impl Strategy<Value = RemapContext> {
            (any::<bool>(), any::<bool>(), any::<[u8; 16]>()).prop_map(|(write, six, bytes)| {
                let client = if six {
                    IpAddr::V6(Ipv6Addr::from(bytes))
                } else {
                    IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
                };
                let kind = if write {
                    RequestKind::Write
                } else {
                    RequestKind::Read
                };
                RemapContext { kind, client }
            })
        }

        const RULE_ALPHABET: &str =
            "[rgiesaGP46~xq \t\n\\\\#\\[\\](){}|*+?.^$:=,\\-a-c0-9`'<>wWsSbBULEé]{0,60}";

        proptest! {
            #[test]
            fn parse_never_panics(text in any::<String>()) {
                let _ = RemapRules::parse(&text);
            }

            #[test]
            fn parse_and_apply_never_panic(
                text in RULE_ALPHABET,
                input in "[a-c/\\\\.é\n]{0,20}",
                ctx in contexts(),
            ) {
                if let Ok(rules) = RemapRules::parse(&text) {
                    let mut count = 0usize;
                    let _ = rules.apply(&input, &ctx, &mut |_| count += 1);
                }
            }

            #[test]
            fn well_formed_rules_never_panic(
                flags in "[rgiesaGP46]{1,4}",
                regex in "[a-c.*+?|()\\[\\]^$\\\\]{1,12}",
                replacement in "[a-c\\\\0-9ixULE ]{0,12}",
                input in any::<String>(),
                ctx in contexts(),
            ) {
                let text = format!("{flags} {regex} {replacement}");
                if let Ok(rules) = RemapRules::parse(&text) {
                    let _ = rules.apply(&input, &ctx, &mut |_| {});
                }
            }
        }
    }
}
