//! OpenSSH's most frequent lines, as `vendors/linux_auth.py` decodes them: `Failed` /
//! `Accepted` authentications, `Invalid user` probes and the connection lines around them
//! (`Received disconnect`, `Connection closed by`, `Disconnected from`, `Did not receive
//! identification`), which are most of what a box exposed to the internet logs, and sudo's
//! command lines; a PAM user's (cron's, login's) line that cannot be PAM's is not the
//! decoder's. Every other line of `linux_auth` (PAM, su, dropbear, sshd's other messages) is
//! left to the Python decoder, which stays the reference; so is
//! any text where Python's regular expressions could read differently (non-ASCII, the
//! `\x1c`-`\x1f` separators Python's `\s` counts as space), and any address that is not a
//! plain dotted quad (the reference canonicalizes those with `ipaddress`).

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem;
use regex::Regex;
use smallvec::smallvec;

use crate::decoders::{as_int, is_plain_ipv4, Value};

/// `_SSH_RESULT` of the reference (matched at the start of the text), kept as the oracle of
/// [`ssh_result`], which reads the same groups without it.
#[cfg(test)]
static SSH_RESULT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(Accepted|Failed) (\S+) for (?:invalid user )?(.*?) from (\S+) port (\d+)")
        .expect("a valid pattern")
});

/// The groups of `_SSH_RESULT` on one line: `Accepted`/`Failed`, the method, the user, the
/// address and the port.
#[derive(Debug, PartialEq)]
struct SshResult<'a> {
    accepted: bool,
    method: &'a str,
    user: &'a str,
    ip: &'a str,
    port: &'a str,
}

/// `_SSH_RESULT` matched by hand, with the regex's leftmost-first reading: its lazy user
/// group sent the `regex` crate to its bounded backtracker, 6,400 instructions a failed-
/// password line (13 % of the line's whole intake); this is a few hundred. Only for the
/// text `decode` lets through (ASCII without `\x1c`-`\x1f`), where `\s` is the six ASCII
/// spaces for both Python and the crate. The two greedy `\S+` groups can only end where a
/// space follows (a shorter run leaves a non-space before the space the pattern needs), so
/// only the user group ever backtracks: to the next ` from ` whose tail reads, never past a
/// line feed (`.`), first with the optional `invalid user ` taken, then without it.
fn ssh_result(text: &str) -> Option<SshResult<'_>> {
    let (accepted, at) = if text.starts_with("Accepted ") {
        (true, 9)
    } else if text.starts_with("Failed ") {
        (false, 7)
    } else {
        return None;
    };
    let end = non_space_run(text, at);
    if end == at || !text[end..].starts_with(" for ") {
        return None;
    }
    let method = &text[at..end];
    let user_at = end + 5;
    let invalid = text[user_at..]
        .starts_with("invalid user ")
        .then(|| user_and_source(text, user_at + 13))
        .flatten();
    let (user, ip, port) = invalid.or_else(|| user_and_source(text, user_at))?;
    Some(SshResult {
        accepted,
        method,
        user,
        ip,
        port,
    })
}

/// ` from `, the user group's only way out.
static FROM: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(" from "));

/// `(.*?) from (\S+) port (\d+)` from `at`: the shortest user the rest reads after.
fn user_and_source(text: &str, at: usize) -> Option<(&str, &str, &str)> {
    let bytes = text.as_bytes();
    let line_end = memchr::memchr(b'\n', &bytes[at..]).map_or(text.len(), |i| at + i);
    let mut from = at;
    while let Some(i) = FROM.find(&bytes[from..line_end]) {
        let user_end = from + i;
        let ip_at = user_end + 6;
        let ip_end = non_space_run(text, ip_at);
        if ip_end > ip_at && text[ip_end..].starts_with(" port ") {
            let port_at = ip_end + 6;
            let digits = text[port_at..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits > 0 {
                let port = &text[port_at..port_at + digits];
                return Some((&text[at..user_end], &text[ip_at..ip_end], port));
            }
        }
        from = user_end + 1;
    }
    None
}

/// `\s` on ASCII text.
fn is_space(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The end of the run of non-space bytes from `at` (`\S+` on ASCII text).
fn non_space_run(text: &str, at: usize) -> usize {
    let run = text.as_bytes()[at..]
        .iter()
        .take_while(|b| !is_space(b))
        .count();
    at + run
}

/// `_SSH_INVALID` of the reference (searched anywhere in the text).
static SSH_INVALID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[Ii]nvalid user (.*?) from (\S+)(?: port (\d+))?").expect("a valid pattern")
});

/// `_FROM_IP_PORT` of the reference (searched anywhere in the text): the peer of a
/// connection line, with the user it names. Kept as the oracle of [`from_ip_port`].
#[cfg(test)]
static FROM_IP_PORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:from|by) (?:(?:authenticating|invalid) user (\S+) )?([0-9a-fA-F.:]+)(?: port (\d+))?",
    )
    .expect("a valid pattern")
});

/// The groups of `_FROM_IP_PORT` on one line: the user, the address and the port.
#[derive(Debug, PartialEq)]
struct Peer<'a> {
    user: Option<&'a str>,
    ip: &'a str,
    port: Option<&'a str>,
}

static FROM_KW: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("from "));
static BY_KW: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("by "));

/// `[0-9a-fA-F.:]`, the address class of `_FROM_IP_PORT`.
fn is_address_byte(b: &u8) -> bool {
    b.is_ascii_hexdigit() || matches!(b, b'.' | b':')
}

/// `_FROM_IP_PORT` searched by hand, with the regex's leftmost-first reading, on the text
/// `decode` lets through (ASCII): its optional user clause sent the `regex` crate to its
/// bounded backtracker, ~4,800 instructions a connection line (`Received disconnect from`,
/// `Connection closed by`). The match starts at the first `from ` or `by ` that reads; there
/// the user clause is tried first (its `\S+` is the whole run of non-spaces, as a shorter
/// one leaves a non-space where the space must be), then the address straight after the
/// keyword; the address and the port are whole runs of their classes (the optional port
/// needs a space right after the address).
fn from_ip_port(text: &str) -> Option<Peer<'_>> {
    let bytes = text.as_bytes();
    let run = |at: usize, class: fn(&u8) -> bool| {
        at + bytes[at..].iter().take_while(|b| class(b)).count()
    };
    // Each keyword's next place, searched again only once the match has passed it: the
    // text is read once a keyword (searching both again from each failed place read it
    // once a failure: quadratic on a hostile line of many `by `).
    let next = |kw: &memmem::Finder<'_>, from: usize| kw.find(&bytes[from..]).map(|i| from + i);
    let (mut from_at, mut by_at) = (next(&FROM_KW, 0), next(&BY_KW, 0));
    loop {
        let (at, len) = match (from_at, by_at) {
            (Some(f), Some(b)) if f < b => (f, 5),
            (Some(f), None) => (f, 5),
            (_, Some(b)) => (b, 3),
            (None, None) => return None,
        };
        let after = at + len;
        let clause = ["authenticating user ", "invalid user "]
            .iter()
            .find(|c| text[after..].starts_with(**c))
            .and_then(|c| {
                let user_at = after + c.len();
                let user_end = non_space_run(text, user_at);
                let ip_at = user_end + 1;
                let read = user_end > user_at
                    && bytes.get(user_end) == Some(&b' ')
                    && bytes.get(ip_at).is_some_and(is_address_byte);
                read.then_some((Some(&text[user_at..user_end]), ip_at))
            });
        let read = clause.or_else(|| {
            bytes
                .get(after)
                .is_some_and(is_address_byte)
                .then_some((None, after))
        });
        if let Some((user, ip_at)) = read {
            let ip_end = run(ip_at, is_address_byte);
            let port = text[ip_end..].starts_with(" port ").then(|| {
                let port_at = ip_end + 6;
                &text[port_at..run(port_at, u8::is_ascii_digit)]
            });
            return Some(Peer {
                user,
                ip: &text[ip_at..ip_end],
                port: port.filter(|p| !p.is_empty()),
            });
        }
        match len {
            5 => from_at = next(&FROM_KW, at + 1),
            _ => by_at = next(&BY_KW, at + 1),
        }
    }
}

/// Every field this sets, in the order it sets them.
pub const FIELDS: [&str; 12] = [
    "event.category",
    "event.type",
    "event.action",
    "event.outcome",
    "user.name",
    "user_agent.original",
    "source.ip",
    "source.port",
    // sudo's
    "event.reason",
    "user.target.name",
    "process.command_line",
    "process.working_directory",
];

/// `_SUDO_HEAD` of the reference (matched at the start of the text), kept as the oracle of
/// [`sudo_head`], which reads the same groups without it.
#[cfg(test)]
static SUDO_HEAD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(\S+) : (?:(.*?) ; )?TTY=").expect("a valid pattern"));

/// The groups of `_SUDO_HEAD` on one line: the user, the problem (the optional group, as it
/// read), and where `TTY=` starts.
#[derive(Debug, PartialEq)]
struct SudoHead<'a> {
    user: &'a str,
    problem: Option<&'a str>,
    tty_at: usize,
}

/// ` ; TTY=`, the problem group's only way out.
static SEMI_TTY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(" ; TTY="));

/// `_SUDO_HEAD` matched by hand, with the regex's leftmost-first reading, on the text
/// `decode` lets through (ASCII without `\x1c`-`\x1f`, where `\s` is the six ASCII spaces):
/// its lazy problem group sent the `regex` crate to its bounded backtracker, ~5,000
/// instructions a sudo line. The user is the whole run of non-spaces after the leading
/// spaces (a shorter run leaves a non-space where ` : ` must start); the optional group is
/// tried first, and its shortest reading ends at the first ` ; TTY=` before a line feed
/// (`.`); without it, `TTY=` must follow ` : ` at once.
fn sudo_head(text: &str) -> Option<SudoHead<'_>> {
    let bytes = text.as_bytes();
    let user_at = bytes.iter().take_while(|b| is_space(b)).count();
    let user_end = non_space_run(text, user_at);
    if user_end == user_at || !text[user_end..].starts_with(" : ") {
        return None;
    }
    let rest = user_end + 3;
    let line_end = memchr::memchr(b'\n', &bytes[rest..]).map_or(text.len(), |i| rest + i);
    let (problem, tty_at) = match SEMI_TTY.find(&bytes[rest..line_end]) {
        Some(i) => (Some(&text[rest..rest + i]), rest + i + 3),
        None if text[rest..].starts_with("TTY=") => (None, rest),
        None => return None,
    };
    Some(SudoHead {
        user: &text[user_at..user_end],
        problem,
        tty_at,
    })
}

/// What the fast path made of a line.
#[derive(Debug, PartialEq)]
pub enum Auth<'a> {
    /// Claimed: the fields to set, in the reference's order (possibly none).
    Fields(Vec<(&'static str, Value<'a>)>),
    /// Only the Python decoder decides this line.
    Defer,
    /// Not this decoder's line (the reference leaves it, untouched, to the next decoder).
    NotMine,
}

/// The line of syslog program `app` (the APP-NAME / TAG), whose message is `text`.
pub fn decode<'a>(app: &str, text: &'a str) -> Auth<'a> {
    // a byte scan: the program names are a few bytes, shorter than `split_once(char)`'s
    // searcher spends setting up
    let (program, module) = match app.bytes().position(|b| b == b'(') {
        Some(i) => (&app[..i], Some(&app[i + 1..])),
        None => (app, None),
    };
    if module.is_some_and(|m| m.starts_with("pam"))
        || !text.is_ascii()
        || text.bytes().any(|b| (0x1c..=0x1f).contains(&b))
    {
        return Auth::Defer;
    }
    // `decode`'s dispatch: the programs it owns, then every other one as a PAM user
    match program {
        "sshd" | "sshd-session" => sshd(text),
        "sudo" => sudo(text),
        "dropbear" | "su" => Auth::Defer,
        _ => pam_user(text),
    }
}

/// `_generic_pam` for a line that cannot be PAM's: not this decoder's. The rest (a PAM
/// line, a `PAM N more` or `N more authentication failures` count) is the reference's.
fn pam_user(text: &str) -> Auth<'_> {
    let pam = [
        "pam_",
        "authentication failure;",
        "check pass;",
        "session ",
        "PAM ",
    ]
    .iter()
    .any(|p| text.starts_with(p))
        || text.starts_with(|c: char| c.is_ascii_digit());
    if pam {
        Auth::Defer
    } else {
        Auth::NotMine
    }
}

/// `_sudo`: the command line's user, problem and `KEY=value` parts; a PAM line is the
/// reference's.
fn sudo(text: &str) -> Auth<'_> {
    if text[..text.len().min(6)].contains("pam_") {
        return Auth::Defer;
    }
    let Some(head) = sudo_head(text) else {
        return Auth::Fields(Vec::new()); // claimed (sudo's lines are), nothing read
    };
    let problem = head.problem.filter(|p| !p.is_empty());
    let tail = &text[head.tty_at..];
    // `kv[key.strip()] = value` per ` ; ` part: the last of a key stands
    let space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let kv: Vec<(&str, &str)> = tail
        .split(" ; ")
        .map(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            (key.trim_matches(space), value)
        })
        .collect();
    let get = |key: &str| {
        kv.iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_empty())
    };
    let outcome = if problem.is_some() {
        "failure"
    } else {
        "success"
    };
    let mut out = authentication("sudo", outcome, Some(head.user), "info");
    for (key, value) in [
        ("event.reason", problem),
        ("user.target.name", get("USER")),
        ("process.command_line", get("COMMAND")),
        ("process.working_directory", get("PWD")),
    ] {
        if let Some(v) = value {
            out.push((key, Value::Text(Cow::Borrowed(v))));
        }
    }
    Auth::Fields(out)
}

/// `_sshd` for the lines it takes.
fn sshd(text: &str) -> Auth<'_> {
    let first = &text[..text.len().min(8)];
    if first.starts_with("Accepted") || first.starts_with("Failed ") {
        let Some(m) = ssh_result(text) else {
            return Auth::Fields(Vec::new()); // claimed (sshd owns its lines), nothing read
        };
        let outcome = if m.accepted { "success" } else { "failure" };
        let mut out = authentication("ssh_login", outcome, Some(m.user), "start");
        out.push(("user_agent.original", Value::Text(Cow::Borrowed(m.method))));
        if !source(&mut out, Some(m.ip), Some(m.port)) {
            return Auth::Defer;
        }
        return Auth::Fields(out);
    }
    if first.starts_with("Invalid ") || first.starts_with("input_us") {
        let Some(m) = SSH_INVALID.captures(text) else {
            return Auth::Fields(authentication("ssh_login", "failure", None, "start"));
        };
        let user = m.get(1).map(|g| g.as_str());
        let mut out = authentication("ssh_login", "failure", user, "start");
        let port = m.get(3).map(|g| g.as_str());
        if !source(&mut out, m.get(2).map(|g| g.as_str()), port) {
            return Auth::Defer;
        }
        return Auth::Fields(out);
    }
    // The reference's `_sshd` reaches its connection branch for these first words (none of
    // its earlier tests can hold for them), except a `Disconnecting: Too many ...` line.
    let connection = ["Received", "Connecti", "Did not ", "error: R"]
        .iter()
        .any(|p| first.starts_with(p))
        || (first.starts_with("Disconne") && !text.contains("Too many"));
    if connection {
        let Some(m) = from_ip_port(text) else {
            return Auth::Fields(Vec::new()); // claimed, nothing read
        };
        let action = if text.contains("isconnect") {
            "ssh_disconnect"
        } else {
            "ssh_connection"
        };
        let mut out = Vec::with_capacity(ITEMS);
        out.extend([
            ("event.category", Value::Texts(smallvec!["authentication"])),
            ("event.type", Value::Texts(smallvec!["info"])),
            ("event.action", Value::Text(Cow::Borrowed(action))),
        ]);
        if let Some(user) = m.user {
            out.push(("user.name", Value::Text(Cow::Borrowed(user))));
        }
        if !source(&mut out, Some(m.ip), m.port) {
            return Auth::Defer;
        }
        return Auth::Fields(out);
    }
    Auth::Defer
}

/// Items an sshd line sets at most (authentication's four, the user, the source's address
/// and port, the client's method): its list is made at that size once (a sudo line's may
/// grow once more). Grown from the `vec!` of the first four, it was a `malloc` and a
/// `realloc` a line.
const ITEMS: usize = 8;

/// `base.authentication(fields, action, outcome, user, kind)`.
fn authentication<'a>(
    action: &'static str,
    outcome: &'static str,
    user: Option<&'a str>,
    kind: &'static str,
) -> Vec<(&'static str, Value<'a>)> {
    let mut out = Vec::with_capacity(ITEMS);
    out.extend([
        ("event.category", Value::Texts(smallvec!["authentication"])),
        ("event.type", Value::Texts(smallvec![kind])),
        ("event.action", Value::Text(Cow::Borrowed(action))),
        ("event.outcome", Value::Text(Cow::Borrowed(outcome))),
    ]);
    if let Some(user) = user.filter(|u| !u.is_empty()) {
        out.push(("user.name", Value::Text(Cow::Borrowed(user))));
    }
    out
}

/// `set_ip(fields, "source.ip", ip)` and `set_int(fields, "source.port", port)`; `false`
/// when the address is one only the reference can canonicalize.
fn source<'a>(
    out: &mut Vec<(&'static str, Value<'a>)>,
    ip: Option<&'a str>,
    port: Option<&'a str>,
) -> bool {
    if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
        if !is_plain_ipv4(ip) {
            return false;
        }
        out.push(("source.ip", Value::Text(Cow::Borrowed(ip))));
    }
    if let Some(n) = port.and_then(as_int) {
        out.push(("source.port", Value::Int(n)));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(app: &str, text: &'static str) -> Vec<(&'static str, Value<'static>)> {
        match decode(app, text) {
            Auth::Fields(f) => f,
            other => panic!("{other:?}: {text}"),
        }
    }

    #[test]
    fn failed_password_for_an_invalid_user_names_user_address_and_port() {
        let f = fields(
            "sshd",
            "Failed password for invalid user admin from 203.0.113.9 port 4022 ssh2",
        );
        let keys: Vec<_> = f.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, FIELDS[..8]);
        assert_eq!(f[3].1, Value::Text(Cow::Borrowed("failure")));
        assert_eq!(f[4].1, Value::Text(Cow::Borrowed("admin")));
        assert_eq!(f[7].1, Value::Int(4022));
    }

    #[test]
    fn connection_lines_name_the_peer_and_the_user_it_names() {
        let f = fields(
            "sshd",
            "Connection closed by authenticating user root 203.0.113.9 port 4022 [preauth]",
        );
        let keys: Vec<_> = f.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "event.category",
                "event.type",
                "event.action",
                "user.name",
                "source.ip",
                "source.port"
            ]
        );
        assert_eq!(f[2].1, Value::Text(Cow::Borrowed("ssh_connection")));
        assert_eq!(f[3].1, Value::Text(Cow::Borrowed("root")));
        let f = fields(
            "sshd",
            "Received disconnect from 192.0.2.44 port 3000:11: Bye Bye [preauth]",
        );
        assert_eq!(f[2].1, Value::Text(Cow::Borrowed("ssh_disconnect")));
        assert_eq!(f[3].1, Value::Text(Cow::Borrowed("192.0.2.44")));
        assert_eq!(f[4].1, Value::Int(3000));
        // sshd owns its lines: claimed with nothing read when no peer is named
        assert_eq!(fields("sshd", "Received signal 15; terminating."), []);
    }

    #[test]
    fn sudo_lines_name_user_target_command_and_problem() {
        let f = fields(
            "sudo",
            "   alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/alice ; \
             USER=root ; COMMAND=/bin/ls -l",
        );
        let keys: Vec<_> = f.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "event.category",
                "event.type",
                "event.action",
                "event.outcome",
                "user.name",
                "event.reason",
                "user.target.name",
                "process.command_line",
                "process.working_directory"
            ]
        );
        assert_eq!(f[3].1, Value::Text(Cow::Borrowed("failure")));
        assert_eq!(f[7].1, Value::Text(Cow::Borrowed("/bin/ls -l")));
        assert_eq!(decode("sudo", "pam_unix(sudo:session): x"), Auth::Defer);
    }

    #[test]
    fn a_pam_users_other_lines_are_not_the_decoders() {
        assert_eq!(
            decode("CRON", "(root) CMD (run-parts /etc/cron.hourly)"),
            Auth::NotMine
        );
        assert_eq!(decode("CRON", "pam_unix(cron:session): x"), Auth::Defer);
        assert_eq!(
            decode("login", "3 more authentication failures;"),
            Auth::Defer
        );
    }

    #[test]
    fn other_programs_pam_tags_and_other_sshd_lines_are_left_to_the_reference() {
        assert_eq!(
            decode("dropbear", "Failed password for a from 1.2.3.4 port 1"),
            Auth::Defer
        );
        assert_eq!(decode("sshd(pam_unix)", "Failed password"), Auth::Defer);
        assert_eq!(
            decode(
                "sshd",
                "Disconnecting: Too many authentication failures [preauth]"
            ),
            Auth::Defer
        );
        assert_eq!(
            decode("sshd", "Server listening on 0.0.0.0 port 22."),
            Auth::Defer
        );
        assert_eq!(
            decode("sshd", "Connection closed by 2001:db8::1 port 22"),
            Auth::Defer
        );
        assert_eq!(
            decode("sshd", "Failed password for é from 1.2.3.4 port 1"),
            Auth::Defer
        );
        assert_eq!(
            decode("sshd", "Failed password for a from ::1 port 1"),
            Auth::Defer
        );
        assert_eq!(
            decode("sshd", "Failed password for a\x1c from 1.2.3.4 port 1"),
            Auth::Defer
        );
    }

    #[test]
    fn an_accepted_line_the_pattern_does_not_read_is_claimed_without_fields() {
        assert_eq!(decode("sshd-session", "Accepted"), Auth::Fields(Vec::new()));
    }

    /// What the pattern reads, as [`SshResult`], for comparing with the hand matcher.
    fn by_regex(text: &str) -> Option<SshResult<'_>> {
        let m = SSH_RESULT.captures(text)?;
        Some(SshResult {
            accepted: &m[1] == "Accepted",
            method: m.get(2).map_or("", |g| g.as_str()),
            user: m.get(3).map_or("", |g| g.as_str()),
            ip: m.get(4).map_or("", |g| g.as_str()),
            port: m.get(5).map_or("", |g| g.as_str()),
        })
    }

    #[test]
    fn the_hand_matcher_reads_the_lines_the_pattern_reads_as_it_does() {
        for text in [
            "Failed password for invalid user admin from 203.0.113.9 port 4022 ssh2",
            "Accepted publickey for root from 10.0.0.1 port 22 ssh2: RSA SHA256:x",
            "Failed password for invalid user  from 1.2.3.4 port 5",
            "Failed password for invalid user from 1.2.3.4 port 5",
            "Failed password for a from b from 1.2.3.4 port 5",
            "Failed password for a from b port x from 1.2.3.4 port 5",
            "Failed password for a from  port 5 from 1.2.3.4 port 6",
            "Failed password for invalid user x from y\nfrom 1.2.3.4 port 5",
            "Failed password for x\n from 1.2.3.4 port 5",
            "Failed password for from 1.2.3.4 port 5",
            "Failed  password for a from 1.2.3.4 port 5",
            "Failed password\tfor a from 1.2.3.4 port 5",
            "Failed password for a from 1.2.3.4\tport 5",
            "Failed password for a from 1.2.3.4 port ",
            "Failed password for a from 1.2.3.4 port 12345678901234567890",
            "Failed password for invalid user invalid user a from 1.2.3.4 port 1",
            "Accepted  for a from 1.2.3.4 port 1",
            "Accepted",
            "Failed ",
        ] {
            assert_eq!(ssh_result(text), by_regex(text), "{text:?}");
        }
    }

    /// What `_FROM_IP_PORT` reads, as [`Peer`], for comparing with the hand matcher.
    fn peer_by_regex(text: &str) -> Option<Peer<'_>> {
        let m = FROM_IP_PORT.captures(text)?;
        Some(Peer {
            user: m.get(1).map(|g| g.as_str()),
            ip: m.get(2).map_or("", |g| g.as_str()),
            port: m.get(3).map(|g| g.as_str()),
        })
    }

    #[test]
    fn the_peer_hand_matcher_reads_the_lines_the_pattern_reads_as_it_does() {
        for text in [
            "Received disconnect from 192.0.2.44 port 3000:11: Bye Bye [preauth]",
            "Connection closed by authenticating user root 203.0.113.9 port 4022 [preauth]",
            "Connection closed by invalid user admin 203.0.113.9 port 4022 [preauth]",
            "Disconnected from user alice 10.0.0.1 port 5",
            "Did not receive identification string from 198.51.100.7 port 1",
            "Connection closed by 2001:db8::1 port 22",
            "from authenticating user root port 22",
            "from authenticating user  1.2.3.4",
            "from invalid user x\n1.2.3.4",
            "standby 1.2.3.4 from 5.6.7.8",
            "from zz by 1.2.3.4 port 7",
            "from 1.2.3.4 port ",
            "from 1.2.3.4 port x",
            "from 1.2.3.4  port 5",
            "from",
            "from ",
            "by ",
            "xfrom fe80::1 port 99999999999999999999",
            "Received signal 15; terminating.",
            "by zz from yy by 1.2.3.4 port 5",
        ] {
            assert_eq!(from_ip_port(text), peer_by_regex(text), "{text:?}");
        }
        // a hostile line of failed places of both keywords, read once a keyword
        let many = format!("{}from 10.0.0.1 port 7", "by zz from yy ".repeat(600));
        assert_eq!(from_ip_port(&many), peer_by_regex(&many));
        assert_eq!(from_ip_port(&many).map(|p| p.ip), Some("10.0.0.1"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16384))]

        /// Connection lines made of the pattern's parts, well-formed and broken (a keyword
        /// inside a word, a user clause without an address, an address class run that
        /// starts with a word, a port without digits): the same groups as the pattern, or
        /// neither reads the line.
        #[test]
        fn the_peer_hand_matcher_agrees_with_the_pattern_on_generated_lines(
            parts in (
                proptest::sample::select(vec!["Received disconnect ", "Connection closed ", "x", ""]),
                proptest::sample::select(vec!["from ", "by ", "from", "standby ", "fromby ", "by by "]),
                proptest::sample::select(vec![
                    "", "authenticating user ", "invalid user ", "invalid user", "user ",
                ]),
                proptest::sample::select(vec!["root ", "", " ", "a\nb ", "root"]),
                proptest::sample::select(vec!["192.0.2.44", "", "fe80::1", "beef", "zz", "\n1.2"]),
                proptest::sample::select(vec![" port ", " port", "  port ", ""]),
                proptest::sample::select(vec!["22", "", "x", "3000:11: Bye Bye", " from 1.1.1.1 port 2"]),
            ),
        ) {
            let (a, b, c, d, e, f, g) = parts;
            let text = [a, b, c, d, e, f, g].concat();
            proptest::prop_assert_eq!(from_ip_port(&text), peer_by_regex(&text), "{:?}", text);
        }
    }

    /// What `_SUDO_HEAD` reads, as [`SudoHead`], for comparing with the hand matcher.
    fn sudo_by_regex(text: &str) -> Option<SudoHead<'_>> {
        let m = SUDO_HEAD.captures(text)?;
        Some(SudoHead {
            user: m.get(1).map_or("", |g| g.as_str()),
            problem: m.get(2).map(|g| g.as_str()),
            tty_at: m.get(0).map_or(0, |g| g.end()) - 4,
        })
    }

    #[test]
    fn the_sudo_hand_matcher_reads_the_lines_the_pattern_reads_as_it_does() {
        for text in [
            "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls",
            "alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/ ; USER=root",
            "alice : TTY=x ; TTY=y",
            "alice : a ; b ; TTY=x",
            "alice :  ; TTY=x",
            "alice : ; TTY=x",
            "alice : problem\n ; TTY=x",
            "alice : problem ; TTY",
            "alice :TTY=x",
            "alice  : TTY=x",
            "\t\n alice : TTY=x",
            " : TTY=x",
            "",
            "alice",
            "alice : ",
            "alice : TTY=",
            "a\rb : TTY=x",
            "alice : x ; TTY=\n ; TTY=y",
        ] {
            assert_eq!(sudo_head(text), sudo_by_regex(text), "{text:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16384))]

        /// sudo lines made of the pattern's parts, well-formed and broken (tabs for spaces,
        /// line feeds, a repeated ` ; TTY=`, a missing colon): the same groups as the
        /// pattern, or neither reads the line.
        #[test]
        fn the_sudo_hand_matcher_agrees_with_the_pattern_on_generated_lines(
            parts in (
                proptest::sample::select(vec!["", "   ", "\t", " \n ", "\r"]),
                proptest::sample::select(vec!["alice", "", "a:b", "x\ty", "root ;"]),
                proptest::sample::select(vec![" : ", " :", ": ", " :  ", "\t: ", " : : "]),
                proptest::sample::select(vec![
                    "", "3 incorrect password attempts", " ", "a ; b", "x\ny", "TTY=p ",
                ]),
                proptest::sample::select(vec![" ; ", " ;", "; ", "", " ;  ", "\n ; "]),
                proptest::sample::select(vec!["TTY=", "TTY", "tty=", "TTY=pts/0 ; TTY="]),
                proptest::sample::select(vec!["pts/0 ; PWD=/ ; USER=root", "", " ; TTY=x", "\n"]),
            ),
        ) {
            let (a, b, c, d, e, f, g) = parts;
            let text = [a, b, c, d, e, f, g].concat();
            proptest::prop_assert_eq!(sudo_head(&text), sudo_by_regex(&text), "{:?}", text);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16384))]

        /// Lines made of the pattern's parts, each drawn from well-formed and broken
        /// variants (spaces that are tabs, missing words, line feeds, repeated ` from `), so
        /// that one in fifty reads and the rest fail at every step: the same groups as the
        /// pattern, or neither reads the line.
        #[test]
        fn the_hand_matcher_agrees_with_the_pattern_on_generated_lines(
            parts in (
                proptest::sample::select(vec!["Accepted ", "Failed ", "Failed\t", "Accepted"]),
                proptest::sample::select(vec!["password", "publickey", "", "a b", "x\n"]),
                proptest::sample::select(vec![" for ", " for", "\tfor ", " for  "]),
                proptest::sample::select(vec!["", "invalid user ", "invalid user", "invalid "]),
                proptest::sample::select(vec![
                    "admin", "", " ", "a from b", "a from  port 1", "a\nb", "from", "x port 2",
                ]),
                proptest::sample::select(vec![" from ", " from", " from  ", "\tfrom "]),
                proptest::sample::select(vec!["1.2.3.4", "", "::1", "a\rb", "1.2.3.4 from 5.6.7.8"]),
                proptest::sample::select(vec![" port ", " port", "\tport ", " port  "]),
                proptest::sample::select(vec!["22", "", "x", "65535 ssh2", "1 from 2.2.2.2 port 3"]),
                proptest::sample::select(vec!["", " ssh2", "\n", "\nFailed x for y from 1.1.1.1 port 1"]),
            ),
        ) {
            let (a, b, c, d, e, f, g, h, i, j) = parts;
            let text = [a, b, c, d, e, f, g, h, i, j].concat();
            proptest::prop_assert_eq!(ssh_result(&text), by_regex(&text), "{:?}", text);
        }
    }
}
