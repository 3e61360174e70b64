//! linux_auth's native part (OpenSSH's failed, accepted and invalid-user lines): any text
//! under any of the programs below decodes without a panic; only sshd's ASCII lines without
//! the separators Python's `\s` reads differently are claimed, with an address only when it
//! is a plain dotted quad.
//!
//! Input layout as `tests/fuzz/targets/syslog_vendors.py` (one selector byte, then the text),
//! so its seeds and crash inputs work here unchanged; the byte picks the program.
#![no_main]

use _dataplane::decoders::Value;
use _dataplane::linux_auth::{decode, Auth};
use libfuzzer_sys::fuzz_target;

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
        assert!(program.starts_with("sshd") && !program.contains("(pam"));
        assert!(text.is_ascii() && !text.bytes().any(|b| (0x1c..=0x1f).contains(&b)));
        for (key, value) in &fields {
            if *key == "source.ip" {
                let Value::Text(ip) = value else {
                    panic!("source.ip is text");
                };
                assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");
            }
        }
    }
});
