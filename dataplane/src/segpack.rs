//! A segment's body packed for the disk: its JSON lines as one zstd frame (see
//! `appliance/store/segments.py`, which reads both forms and packs with the same library on the
//! Python backend).
//!
//! Why: a stored line is ~700-1,000 bytes of which most repeats from line to line (the ECS
//! keys, a sender's header values), and every byte is written twice (the WAL, then the
//! checkpoint's copy into the database). On syslog/UDP at 100,000 msg/s the SQLite writer and
//! checkpointer threads spent ~40 % of the appliance's CPU in the kernel's copy of those writes,
//! and an edge box's flash takes them as wear. Level 1 packs the rules bench's sshd segments
//! ~24x at ~1 GB/s, a fraction of what the copies cost.
//!
//! A plain body starts with `[` (a JSON array) or is empty; a packed one with zstd's magic
//! number, so the two forms tell themselves apart (the reader is Python's) and old segments
//! stay readable.

/// zstd's level: the fastest of its regular levels, ~24x on syslog segments.
pub const LEVEL: i32 = 1;

/// A compression context, made once for a batch of bodies.
pub struct Packer(zstd::bulk::Compressor<'static>);

impl Packer {
    /// `None` when libzstd cannot make a context (out of memory): the bodies stay plain.
    pub fn new() -> Option<Self> {
        let mut c = zstd::bulk::Compressor::new(LEVEL).ok()?;
        // A checksum of the content (4 bytes a frame): a bit flipped on the disk makes the
        // frame fail to unpack instead of reading back as other text.
        c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .ok()?;
        Some(Packer(c))
    }

    /// `body` as one zstd frame that records its size (the reader allocates once) and a
    /// checksum, or `None` when packing fails or would not make it smaller: the plain body
    /// is then stored.
    pub fn pack(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let packed = self.0.compress(body).ok()?;
        (packed.len() < body.len()).then_some(packed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pack(body: &[u8]) -> Option<Vec<u8>> {
        Packer::new().unwrap().pack(body)
    }

    /// Whether a stored body is a packed one: zstd's magic number (RFC 8878, 3.1.1), which
    /// the Python reader tests for (`ZSTD_MAGIC`).
    fn is_packed(body: &[u8]) -> bool {
        body.starts_with(&[0x28, 0xB5, 0x2F, 0xFD])
    }

    proptest! {
        /// Whatever the bytes, what is stored reads back as them: packed when smaller,
        /// else the body itself.
        #[test]
        fn what_is_stored_reads_back_as_the_body(
            body in proptest::collection::vec(any::<u8>(), 0..4096),
            repeat in 1usize..64,
        ) {
            let body = body.repeat(repeat);
            match pack(&body) {
                Some(packed) => {
                    prop_assert!(is_packed(&packed) && packed.len() < body.len());
                    prop_assert_eq!(zstd::bulk::decompress(&packed, body.len()).unwrap(), body);
                }
                None => prop_assert!(body.len() < 256 || repeat == 1),
            }
        }
    }

    fn lines(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!(r#"[1.0,1.0,"syslog",{{"message":"line {i}","k":"v"}},"raw {i}"]"#))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    }

    #[test]
    fn a_packed_body_unpacks_to_the_same_lines() {
        let body = lines(1024);
        let packed = pack(&body).expect("smaller");
        assert!(is_packed(&packed));
        assert!(
            packed.len() * 10 < body.len(),
            "{} of {}",
            packed.len(),
            body.len()
        );
        assert_eq!(zstd::bulk::decompress(&packed, body.len()).unwrap(), body);
    }

    #[test]
    fn the_frame_records_the_body_size() {
        let body = lines(37);
        let packed = pack(&body).unwrap();
        let size = zstd::zstd_safe::get_frame_content_size(&packed).unwrap();
        assert_eq!(size, Some(body.len() as u64));
    }

    #[test]
    fn a_flipped_bit_fails_the_frame_instead_of_reading_as_other_text() {
        let body = lines(200);
        let mut packed = pack(&body).unwrap();
        let middle = packed.len() / 2;
        packed[middle] ^= 0x10;
        assert!(zstd::bulk::decompress(&packed, body.len()).is_err());
    }

    #[test]
    fn a_body_that_does_not_shrink_stays_plain() {
        assert_eq!(pack(b""), None);
        assert_eq!(pack(b"[1]"), None);
        assert!(!is_packed(&lines(3)));
        assert!(!is_packed(b""));
    }
}
