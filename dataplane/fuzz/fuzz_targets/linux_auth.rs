//! linux_auth's native part (OpenSSH's failed, accepted, invalid-user and connection lines,
//! sudo's command lines): any text under any of the programs below decodes without a panic;
//! only sshd's and sudo's ASCII lines without the separators Python's `\s` reads differently
//! are claimed, with an address only when it is a plain dotted quad. A claimed
//! `Accepted`/`Failed` line carries what the reference's `_SSH_RESULT` pattern reads from it,
//! a sudo line what `_SUDO_HEAD` reads, and a connection line (`Received disconnect from`,
//! `Connection closed by`) what `_FROM_IP_PORT` reads (the native side matches all three by
//! hand).
//!
//! Input layout as `tests/fuzz/targets/syslog_vendors.py` (one selector byte, then the text),
//! so its seeds and crash inputs work here unchanged; the byte picks the program.
#![no_main]

use std::sync::LazyLock;

use _dataplane::decoders::Value;
use _dataplane::linux_auth::{decode, Auth};
use libfuzzer_sys::fuzz_target;
use regex::Regex;

static SSH_RESULT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(Accepted|Failed) (\S+) for (?:invalid user )?(.*?) from (\S+) port (\d+)")
        .expect("a valid pattern")
});

static SUDO_HEAD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(\S+) : (?:(.*?) ; )?TTY=").expect("a valid pattern"));

static FROM_IP_PORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:from|by) (?:(?:authenticating|invalid) user (\S+) )?([0-9a-fA-F.:]+)(?: port (\d+))?",
    )
    .expect("a valid pattern")
});

/// The text of field `key`, if set.
fn field_text<'a>(fields: &'a [(&str, Value<'_>)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| match v {
            Value::Text(t) => t.as_ref(),
            _ => panic!("{key} is text"),
        })
}

const PROGRAMS: [&str; 6] = [
    "sshd",
    "sshd-session",
    "sshd(pam_unix)",
    "sudo",
    "",
    "sshd(x",
];

fuzz_target!(|data: &[u8]| {
    let Some((first, line)) = data.split_first() else {
        return;
    };
    let program = PROGRAMS[usize::from(*first) % PROGRAMS.len()];
    let text = String::from_utf8_lossy(line);
    if let Auth::Fields(fields) = decode(program, &text) {
        assert!((program.starts_with("sshd") || program == "sudo") && !program.contains("(pam"));
        assert!(text.is_ascii() && !text.bytes().any(|b| (0x1c..=0x1f).contains(&b)));
        let sshd = program.starts_with("sshd");
        if sshd && (text.starts_with("Accepted") || text.starts_with("Failed ")) {
            match SSH_RESULT.captures(&text) {
                None => assert!(fields.is_empty(), "{text:?}: {fields:?}"),
                Some(m) => {
                    assert_eq!(field_text(&fields, "user_agent.original"), Some(&m[2]));
                    let user = Some(&m[3]).filter(|u| !u.is_empty());
                    assert_eq!(field_text(&fields, "user.name"), user);
                    assert_eq!(field_text(&fields, "source.ip"), Some(&m[4]));
                }
            }
        }
        if program == "sudo" {
            match SUDO_HEAD.captures(&text) {
                None => assert!(fields.is_empty(), "{text:?}: {fields:?}"),
                Some(m) => {
                    assert_eq!(field_text(&fields, "user.name"), Some(&m[1]));
                    let problem = m.get(2).map(|g| g.as_str()).filter(|p| !p.is_empty());
                    assert_eq!(field_text(&fields, "event.reason"), problem);
                }
            }
        }
        let connection = ["Received", "Connecti"].iter().any(|p| text.starts_with(p));
        if sshd && connection && field_text(&fields, "event.action").is_some() {
            let m = FROM_IP_PORT
                .captures(&text)
                .expect("a connection line with fields reads");
            let user = m.get(1).map(|g| g.as_str());
            assert_eq!(field_text(&fields, "user.name"), user, "{text:?}");
            let ip = Some(&m[2]).filter(|ip| !ip.is_empty());
            assert_eq!(field_text(&fields, "source.ip"), ip, "{text:?}");
        } else if sshd && connection {
            assert!(
                FROM_IP_PORT.captures(&text).is_none(),
                "{text:?}: {fields:?}"
            );
        }
        for (key, value) in &fields {
            if *key == "source.ip" {
                let Value::Text(ip) = value else {
                    panic!("source.ip is text");
                };
                assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");
            }
        }
    };
});
