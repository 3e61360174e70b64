//! OpenSSH's most frequent lines, as `vendors/linux_auth.py` decodes them: `Failed` /
//! `Accepted` authentications and `Invalid user` probes, which are most of what a box
//! exposed to the internet logs. Every other line of `linux_auth` (PAM, sudo, su, dropbear,
//! sshd's other messages) is left to the Python decoder, which stays the reference; so is
//! any text where Python's regular expressions could read differently (non-ASCII, the
//! `\x1c`-`\x1f` separators Python's `\s` counts as space), and any address that is not a
//! plain dotted quad (the reference canonicalizes those with `ipaddress`).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use crate::decoders::{as_int, is_plain_ipv4, Value};

/// `_SSH_RESULT` of the reference (matched at the start of the text).
static SSH_RESULT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(Accepted|Failed) (\S+) for (?:invalid user )?(.*?) from (\S+) port (\d+)")
        .expect("a valid pattern")
});

/// `_SSH_INVALID` of the reference (searched anywhere in the text).
static SSH_INVALID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[Ii]nvalid user (.*?) from (\S+)(?: port (\d+))?").expect("a valid pattern")
});

/// Every field this sets, in the order it sets them.
pub const FIELDS: [&str; 8] = [
    "event.category",
    "event.type",
    "event.action",
    "event.outcome",
    "user.name",
    "user_agent.original",
    "source.ip",
    "source.port",
];

/// What the fast path made of a line.
#[derive(Debug, PartialEq)]
pub enum Auth<'a> {
    /// Claimed: the fields to set, in the reference's order (possibly none).
    Fields(Vec<(&'static str, Value<'a>)>),
    /// Only the Python decoder decides this line.
    Defer,
}

/// The line of syslog program `app` (the APP-NAME / TAG), whose message is `text`.
pub fn decode<'a>(app: &str, text: &'a str) -> Auth<'a> {
    let (program, module) = match app.split_once('(') {
        Some((program, module)) => (program, Some(module)),
        None => (app, None),
    };
    if module.is_some_and(|m| m.starts_with("pam"))
        || !matches!(program, "sshd" | "sshd-session")
        || !text.is_ascii()
        || text.bytes().any(|b| (0x1c..=0x1f).contains(&b))
    {
        return Auth::Defer;
    }
    let first = &text[..text.len().min(8)];
    if first.starts_with("Accepted") || first.starts_with("Failed ") {
        let Some(m) = SSH_RESULT.captures(text) else {
            return Auth::Fields(Vec::new()); // claimed (sshd owns its lines), nothing read
        };
        let ok = &m[1] == "Accepted";
        let mut out = authentication(if ok { "success" } else { "failure" }, m.get(3));
        out.push(("user_agent.original", text_of(m.get(2))));
        if !source(&mut out, m.get(4).map(|g| g.as_str()), m.get(5)) {
            return Auth::Defer;
        }
        return Auth::Fields(out);
    }
    if first.starts_with("Invalid ") || first.starts_with("input_us") {
        let Some(m) = SSH_INVALID.captures(text) else {
            return Auth::Fields(authentication("failure", None));
        };
        let mut out = authentication("failure", m.get(1));
        if !source(&mut out, m.get(2).map(|g| g.as_str()), m.get(3)) {
            return Auth::Defer;
        }
        return Auth::Fields(out);
    }
    Auth::Defer
}

fn text_of<'a>(g: Option<regex::Match<'a>>) -> Value<'a> {
    Value::Text(Cow::Borrowed(g.map_or("", |g| g.as_str())))
}

/// `base.authentication(fields, "ssh_login", outcome, user)`.
fn authentication<'a>(
    outcome: &'static str,
    user: Option<regex::Match<'a>>,
) -> Vec<(&'static str, Value<'a>)> {
    let mut out = vec![
        ("event.category", Value::Texts(vec!["authentication"])),
        ("event.type", Value::Texts(vec!["start"])),
        ("event.action", Value::Text(Cow::Borrowed("ssh_login"))),
        ("event.outcome", Value::Text(Cow::Borrowed(outcome))),
    ];
    if let Some(user) = user.filter(|u| !u.as_str().is_empty()) {
        out.push(("user.name", Value::Text(Cow::Borrowed(user.as_str()))));
    }
    out
}

/// `set_ip(fields, "source.ip", ip)` and `set_int(fields, "source.port", port)`; `false`
/// when the address is one only the reference can canonicalize.
fn source<'a>(
    out: &mut Vec<(&'static str, Value<'a>)>,
    ip: Option<&'a str>,
    port: Option<regex::Match<'a>>,
) -> bool {
    if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
        if !is_plain_ipv4(ip) {
            return false;
        }
        out.push(("source.ip", Value::Text(Cow::Borrowed(ip))));
    }
    if let Some(n) = port.and_then(|p| as_int(p.as_str())) {
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
            Auth::Defer => panic!("deferred: {text}"),
        }
    }

    #[test]
    fn failed_password_for_an_invalid_user_names_user_address_and_port() {
        let f = fields(
            "sshd",
            "Failed password for invalid user admin from 203.0.113.9 port 4022 ssh2",
        );
        let keys: Vec<_> = f.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, FIELDS);
        assert_eq!(f[3].1, Value::Text(Cow::Borrowed("failure")));
        assert_eq!(f[4].1, Value::Text(Cow::Borrowed("admin")));
        assert_eq!(f[7].1, Value::Int(4022));
    }

    #[test]
    fn other_programs_pam_tags_and_other_sshd_lines_are_left_to_the_reference() {
        assert_eq!(
            decode("sudo", "Failed password for a from 1.2.3.4 port 1"),
            Auth::Defer
        );
        assert_eq!(decode("sshd(pam_unix)", "Failed password"), Auth::Defer);
        assert_eq!(
            decode("sshd", "Connection closed by 1.2.3.4 port 22"),
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
}
