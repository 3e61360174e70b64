//! The search index of one event segment: a Bloom filter of the tokens its events' fields hold
//! and of the trigrams of their messages (see `appliance/store/segindex.py`, the reference this
//! module is held to byte for byte, and the query side that probes it).
//!
//! Why a token Bloom filter over the stored JSON text, not parsed fields: the segment's lines
//! are already in hand as bytes when it is written, so one pass over them (no JSON parsing, no
//! allocation per value) costs a fraction of a microsecond per event, and a value's escaped
//! JSON form split at the same delimiters gives the same tokens on the query side.

/// Format version, the first byte of every filter.
pub const VERSION: u8 = 1;
/// Bit positions set per term.
pub const K: u32 = 7;
/// Filter size in bits: a power of two of at least `BITS_PER_TERM` per distinct term,
/// between 2^`MIN_LOG2` and 2^`MAX_LOG2` (the bound on a filter's size: 128 KiB).
pub const BITS_PER_TERM: usize = 10;
pub const MIN_LOG2: u32 = 9;
pub const MAX_LOG2: u32 = 20;

const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
const MUL: u64 = 0xFF51_AFD7_ED55_8CCD;
const TRIGRAM_SEED: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// Bytes that end a token: JSON structure, the escape character and ASCII whitespace.
#[inline]
pub const fn is_delim(b: u8) -> bool {
    matches!(
        b,
        b'"' | b',' | b':' | b'[' | b']' | b'{' | b'}' | b'\\' | b' ' | b'\t' | b'\n' | b'\r'
    )
}

#[inline]
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// The term hash of a whole token (8 bytes at a time, little-endian, the tail zero-padded).
#[inline]
pub fn token_hash(token: &[u8]) -> u64 {
    let mut h = SEED ^ (token.len() as u64);
    let mut chunks = token.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(MUL).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(buf))
            .wrapping_mul(MUL)
            .rotate_left(29);
    }
    fmix(h)
}

/// The term hash of three bytes of a message token.
#[inline]
pub fn trigram_hash(t: &[u8]) -> u64 {
    fmix(TRIGRAM_SEED ^ (t[0] as u64 | (t[1] as u64) << 8 | (t[2] as u64) << 16))
}

/// Every distinct term of a segment body (JSON lines `[ts,created,"module",{fields},raw]`),
/// sorted: the tokens of the module and of the fields' values (keys, timestamps and the raw
/// text are left out: no filter looks for them), and the trigrams of the tokens of `message`.
pub fn terms(body: &[u8]) -> Vec<u64> {
    let mut t = Terms {
        out: Vec::with_capacity(body.len() / 32),
        seen: vec![0; 1 << SEEN_LOG2],
        seen_message: vec![0; 1 << SEEN_LOG2],
    };
    // memchr (SIMD) finds the line ends: a line's raw text, most of its bytes, is never
    // scanned (splitting byte by byte measured 40 % of the builder's instructions).
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', body) {
        scan_line(&body[start..end], &mut t);
        start = end + 1;
    }
    scan_line(&body[start..], &mut t);
    let mut out = t.out;
    out.sort_unstable();
    out.dedup();
    out
}

/// Slots of the recently-seen caches (4096 x 8 bytes each: within L1/L2, and small enough
/// that allocating them maps no fresh pages).
const SEEN_LOG2: u32 = 12;

/// Terms collected so far. Most tokens repeat from line to line (hosts, levels, the
/// dataset): a direct-mapped cache of the last hash per slot drops most repeats with one load,
/// where a hash set measured twice the CPU; what it lets through twice is removed by the final
/// sort, so the terms are exactly the distinct ones either way.
struct Terms {
    out: Vec<u64>,
    seen: Vec<u64>,
    seen_message: Vec<u64>,
}

impl Terms {
    #[inline]
    fn add(&mut self, h: u64) {
        let slot = (h >> (64 - SEEN_LOG2)) as usize;
        if self.seen[slot] != h || h == 0 {
            self.seen[slot] = h;
            self.out.push(h);
        }
    }
}

fn emit(token: &[u8], message: bool, t: &mut Terms) {
    if token.is_empty() {
        return;
    }
    let h = token_hash(token);
    t.add(h);
    if message && token.len() >= 3 {
        let slot = (h >> (64 - SEEN_LOG2)) as usize;
        if t.seen_message[slot] != h || h == 0 {
            t.seen_message[slot] = h;
            for g in token.windows(3) {
                t.add(trigram_hash(g));
            }
        }
    }
}

/// `DELIM[b]`: whether byte `b` ends a token (a table: the scan's inner loops test one load).
static DELIM: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = is_delim(b as u8);
        b += 1;
    }
    t
};

/// The end of the token starting at `i` (the first delimiter at or after it, or `n`).
#[inline]
fn token_end(line: &[u8], mut i: usize) -> usize {
    while i < line.len() && !DELIM[line[i] as usize] {
        i += 1;
    }
    i
}

fn scan_line(line: &[u8], t: &mut Terms) {
    // Skip the two timestamps: terms start at the module's opening quote.
    let Some(mut i) = memchr::memchr(b'"', line) else {
        return;
    };
    let n = line.len();
    let mut depth: u32 = 1;
    let mut expect_key = false; // at depth 2, the next string is a key of the fields object
    let mut last_key_message = false;
    while i < n {
        let b = line[i];
        if !DELIM[b as usize] {
            // a bare token: a number, true, false or null
            let end = token_end(line, i);
            emit(&line[i..end], false, t);
            i = end;
            continue;
        }
        i += 1;
        match b {
            b'"' => {
                let is_key = depth == 2 && expect_key;
                if is_key {
                    expect_key = false;
                }
                let message = !is_key && depth == 2 && last_key_message;
                let start = i;
                if is_key {
                    // No terms in a key: only its end matters, found by SIMD search.
                    let mut closed = false;
                    while let Some(j) = memchr::memchr2(b'"', b'\\', &line[i..]) {
                        i += j + 1;
                        if line[i - 1] == b'"' {
                            last_key_message = &line[start..i - 1] == b"message";
                            closed = true;
                            break;
                        }
                        if i < n && DELIM[line[i] as usize] {
                            i += 1; // an escaped quote or backslash
                        }
                    }
                    if !closed {
                        return; // the line ends inside a key
                    }
                    continue;
                }
                while i < n {
                    let c = line[i];
                    if !DELIM[c as usize] {
                        let end = token_end(line, i);
                        if !is_key {
                            emit(&line[i..end], message, t);
                        }
                        i = end;
                    } else if c == b'\\' {
                        // an escaped quote or backslash is a delimiter that does not end the
                        // string; any other escaped byte starts a token
                        i += 1;
                        if i < n && DELIM[line[i] as usize] {
                            i += 1;
                        }
                    } else if c == b'"' {
                        if is_key {
                            last_key_message = &line[start..i] == b"message";
                        }
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if b == b'{' && depth == 2 {
                    expect_key = true;
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth <= 1 && b == b'}' {
                    return; // the fields object ended; the raw text follows
                }
            }
            b',' if depth == 2 => expect_key = true,
            _ => {}
        }
    }
}

/// The filter's size (log2 of its bits) for `n` distinct terms.
pub fn log2_bits(n: usize) -> u32 {
    let want = n.saturating_mul(BITS_PER_TERM).max(1);
    let log2 = usize::BITS - (want - 1).leading_zeros();
    log2.clamp(MIN_LOG2, MAX_LOG2)
}

/// Set (or test) the bits of hash `h` in a filter of `2^log2` bits.
#[inline]
fn positions(h: u64, log2: u32) -> impl Iterator<Item = usize> {
    let mask = (1u32 << log2) - 1;
    let h1 = h as u32;
    let h2 = ((h >> 32) as u32) | 1;
    (0..K).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) & mask) as usize)
}

/// The filter of a segment body: `[VERSION, log2 bits, bits...]`.
pub fn bloom(body: &[u8]) -> Vec<u8> {
    let terms = terms(body);
    let log2 = log2_bits(terms.len());
    let mut out = vec![0u8; 2 + (1usize << log2) / 8];
    out[0] = VERSION;
    out[1] = log2 as u8;
    let bits = &mut out[2..];
    for &h in &terms {
        for p in positions(h, log2) {
            bits[p >> 3] |= 1 << (p & 7);
        }
    }
    out
}

/// Whether a filter may hold the term with hash `h` (false: it certainly does not).
pub fn may_hold(filter: &[u8], h: u64) -> bool {
    if filter.len() < 2 || filter[0] != VERSION {
        return true;
    }
    let log2 = filter[1] as u32;
    let bits = &filter[2..];
    if bits.len() != (1usize << log2) / 8 {
        return true;
    }
    positions(h, log2).all(|p| bits[p >> 3] & (1 << (p & 7)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &[u8] = br#"[1.5,1.5,"syslog",{"user.name":"alice","event.type":["start","end"],"source.port":443,"message":"Failed \"pw\" for bob","x":{"k":"v"}},"raw text rawonly"]"#;

    fn has(body: &[u8], token: &[u8]) -> bool {
        terms(body).binary_search(&token_hash(token)).is_ok()
    }

    #[test]
    fn values_module_and_list_items_are_terms() {
        for t in [
            &b"alice"[..],
            b"start",
            b"end",
            b"443",
            b"syslog",
            b"Failed",
            b"pw",
            b"bob",
        ] {
            assert!(has(LINE, t), "{}", String::from_utf8_lossy(t));
        }
    }

    #[test]
    fn keys_timestamps_and_raw_are_not_terms() {
        for t in [&b"user.name"[..], b"1.5", b"rawonly", b"message"] {
            assert!(!has(LINE, t), "{}", String::from_utf8_lossy(t));
        }
    }

    #[test]
    fn message_tokens_give_trigrams_and_other_fields_do_not() {
        let t = terms(LINE);
        for g in [&b"Fai"[..], b"led", b"bob"] {
            assert!(t.binary_search(&trigram_hash(g)).is_ok());
        }
        assert!(t.binary_search(&trigram_hash(b"ali")).is_err());
    }

    #[test]
    fn a_filter_holds_every_term_it_was_built_from() {
        let body = [LINE, LINE].join(&b'\n');
        let f = bloom(&body);
        for h in terms(&body) {
            assert!(may_hold(&f, h));
        }
        assert_eq!(f.len(), 2 + (1 << MIN_LOG2) / 8);
    }

    #[test]
    fn filter_size_is_bounded() {
        assert_eq!(log2_bits(0), MIN_LOG2);
        assert_eq!(log2_bits(10_000_000), MAX_LOG2);
        assert_eq!(log2_bits(1000), 14);
    }

    #[test]
    fn truncated_or_odd_lines_do_not_panic() {
        for cut in 0..LINE.len() {
            let _ = terms(&LINE[..cut]);
        }
        let _ = terms(b"\n\n[[[[{{{\"\\");
    }
}
