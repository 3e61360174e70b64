//! A UDP socket read on its own thread: `recvmmsg` into Rust-owned buffers, a bounded backlog
//! of raw datagrams (payload and sender), and an eventfd that wakes the event loop when the
//! backlog goes non-empty.
//!
//! Why: read on the event loop (`UdpBatchReader`), the socket is emptied only between two
//! decode slices, and the kernel's copy of each datagram runs on the loop's own thread. When
//! the loop is busy for longer than the kernel buffer lasts (`net.core.rmem_max` caps it: 4
//! MiB is ~40 ms at 100k msg/s), the kernel drops. Here a thread that holds no Python object
//! and never takes the GIL keeps the socket empty; the loop takes slices of what it read.
//!
//! The backlog is bounded by `backlog_bytes` of payload as the Python reader's is: past it the
//! thread stops reading (counted in `full`) until the loop has taken it below half, and the
//! kernel buffer and its drop counter take over, counted by the caller as they are today.
//!
//! The socket is the caller's (a `dup` of it): it must be in blocking mode with a receive
//! timeout (`SO_RCVTIMEO`), so that the thread sleeps in `recvmmsg` while the socket is quiet
//! and still sees the stop flag within that timeout.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

/// How a receiver reads.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The longest datagram kept whole; a longer one arrives cut to `max_bytes + 1`, so the
    /// consumer still sees that it was too long (and counts it), as with the Python reader.
    pub max_bytes: usize,
    /// Payload bytes held before reading pauses.
    pub backlog_bytes: usize,
    /// Datagrams per `recvmmsg`.
    pub batch: usize,
}

/// The datagrams of one `recvmmsg`, their payloads back to back (one allocation a call).
#[derive(Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    items: Vec<Item>,
    /// Items before this one were taken already (a slice ended inside the batch).
    first: usize,
}

#[derive(Clone, Copy, Debug)]
struct Item {
    start: usize,
    len: usize,
    from: SocketAddr,
}

impl Batch {
    /// The datagrams not taken yet: payload and sender, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        self.items[self.first..]
            .iter()
            .map(|it| (&self.data[it.start..it.start + it.len], it.from))
    }

    pub fn len(&self) -> usize {
        self.items.len() - self.first
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bytes(&self) -> usize {
        self.items[self.first..].iter().map(|it| it.len).sum()
    }

    fn push(&mut self, payload: &[u8], from: SocketAddr) {
        self.items.push(Item {
            start: self.data.len(),
            len: payload.len(),
            from,
        });
        self.data.extend_from_slice(payload);
    }

    /// The next `n` datagrams as a batch of their own (copied), the rest left here.
    fn split_front(&mut self, n: usize) -> Batch {
        let mut out = Batch::default();
        for it in &self.items[self.first..self.first + n] {
            out.push(&self.data[it.start..it.start + it.len], it.from);
        }
        self.first += n;
        out
    }
}

/// Counts the thread keeps (read by the consumer at any time).
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams read from the socket (each is in the backlog or was taken from it).
    pub received: AtomicU64,
    /// Times the backlog reached `backlog_bytes` and reading paused.
    pub full: AtomicU64,
    /// `recvmmsg` errors other than "nothing yet" (an ICMP error queued on the socket, ...).
    pub errors: AtomicU64,
    /// Panics caught on the thread (the batch being read is lost, the thread goes on).
    pub panics: AtomicU64,
}

#[derive(Default)]
struct Backlog {
    queue: VecDeque<Batch>,
    /// Datagrams in `queue`.
    count: usize,
    /// Payload bytes in `queue`.
    held: usize,
}

struct Shared {
    backlog: Mutex<Backlog>,
    /// Signalled when the consumer took the backlog below half of `backlog_bytes`, or at stop.
    room: Condvar,
    stop: AtomicBool,
    wake: EventFd,
    stats: Stats,
    cfg: Config,
    /// Tests: the next read panics on the thread.
    panic_next: AtomicBool,
    /// The process-wide count of caught panics this one also goes to.
    panics: &'static AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        // Nothing panics while holding the lock; if something ever did, the backlog is
        // still consistent (every update is a single push or pop).
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait while the backlog is full; `false` once asked to stop.
    fn wait_for_room(&self) -> bool {
        let limit = self.cfg.backlog_bytes;
        let mut b = self.lock();
        if b.held >= limit {
            self.stats.full.fetch_add(1, Ordering::Relaxed);
            while b.held >= self.resume_below() && !self.stop.load(Ordering::Acquire) {
                b = self
                    .room
                    .wait_timeout(b, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        !self.stop.load(Ordering::Acquire)
    }

    /// Held bytes below which a paused thread reads again: half the bound (all of it taken,
    /// for a bound too small to halve).
    fn resume_below(&self) -> usize {
        (self.cfg.backlog_bytes / 2).max(1)
    }

    fn push(&self, batch: Batch) {
        let (n, bytes) = (batch.len(), batch.bytes());
        if n == 0 {
            return;
        }
        let was_empty = {
            let mut b = self.lock();
            let was_empty = b.count == 0;
            b.count += n;
            b.held += bytes;
            b.queue.push_back(batch);
            was_empty
        };
        self.stats.received.fetch_add(n as u64, Ordering::Relaxed);
        if was_empty {
            // Only on the edge: a loop that has not drained yet is already woken. A failed
            // write means the counter is at its maximum, i.e. a wake-up is pending anyway.
            let _ = self.wake.write(1);
        }
    }
}

/// A socket read on its own thread. Dropping it stops and joins the thread.
pub struct Receiver {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Receiver {
    /// Start reading `fd` (the receiver does not close it: the caller does, after `close`).
    /// `panics` is where caught panics are counted besides the receiver's own stats.
    pub fn start(fd: RawFd, cfg: Config, panics: &'static AtomicU64) -> std::io::Result<Self> {
        let cfg = Config {
            max_bytes: cfg.max_bytes.min(1 << 20),
            batch: cfg.batch.clamp(1, 1024),
            ..cfg
        };
        let wake =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        let shared = Arc::new(Shared {
            backlog: Mutex::new(Backlog::default()),
            room: Condvar::new(),
            stop: AtomicBool::new(false),
            wake,
            stats: Stats::default(),
            cfg,
            panic_next: AtomicBool::new(false),
            panics,
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("udp-receiver".into())
            .spawn(move || read_loop(&theirs, fd))?;
        Ok(Receiver {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The eventfd the event loop watches: readable once the backlog went non-empty.
    pub fn wake_fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    /// Reset the wake-up (the loop calls this when woken, before it takes).
    pub fn ack(&self) {
        let _ = self.shared.wake.read();
    }

    /// Up to `n` datagrams from the front of the backlog, in arrival order; they no longer
    /// count as held. Wakes the thread when that made room.
    pub fn take(&self, n: usize) -> Vec<Batch> {
        let mut out = Vec::new();
        let mut left = n;
        let (held, resume_below) = {
            let mut b = self.shared.lock();
            while left > 0 {
                let Some(front) = b.queue.front_mut() else {
                    break;
                };
                let batch = if front.len() <= left {
                    b.queue.pop_front().expect("a front batch")
                } else {
                    front.split_front(left)
                };
                left -= batch.len();
                b.count -= batch.len();
                b.held -= batch.bytes();
                out.push(batch);
            }
            (b.held, self.shared.resume_below())
        };
        if held < resume_below {
            self.shared.room.notify_one();
        }
        out
    }

    /// Datagrams in the backlog.
    pub fn pending(&self) -> usize {
        self.shared.lock().count
    }

    /// Payload bytes in the backlog.
    pub fn held(&self) -> usize {
        self.shared.lock().held
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Whether the thread is still reading.
    pub fn alive(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Stop reading and join the thread (within the socket's receive timeout). What it read
    /// stays in the backlog for `take`.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.room.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                // read_loop catches its panics; this is only for one outside of it.
                self.shared.panics.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Tests: make the thread's next read panic.
    pub fn inject_panic(&self) {
        self.shared.panic_next.store(true, Ordering::Relaxed);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.close();
    }
}

/// How long the thread waits after a short read before reading again.
const GATHER: Duration = Duration::from_millis(2);

fn read_loop(shared: &Shared, fd: RawFd) {
    let cfg = shared.cfg;
    let size = cfg.max_bytes + 1;
    // Zeroed by the allocator's fresh pages: only the slots that datagrams reach get touched.
    let mut slots = vec![0u8; cfg.batch * size];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(cfg.batch, None);
    while shared.wait_for_room() {
        let got = catch_unwind(AssertUnwindSafe(|| {
            if shared.panic_next.swap(false, Ordering::Relaxed) {
                panic!("injected by a test");
            }
            read_batch(fd, &mut slots, size, &mut headers)
        }));
        match got {
            Ok(Ok(batch)) => {
                let short = batch.len() < cfg.batch / 4;
                shared.push(batch);
                if short {
                    // A trickle: let datagrams gather in the kernel's buffer for a moment, so
                    // that this thread and the event loop wake once per few dozen datagrams
                    // rather than once per datagram (~200 datagrams, ~250 KiB of kernel buffer at 100k msg/s).
                    std::thread::sleep(GATHER);
                }
            }
            // The receive timeout passed with nothing, or a signal: look at the flag again.
            // (A non-blocking socket lands here at once: the short sleep keeps that cheap.)
            Ok(Err(Errno::EAGAIN | Errno::EINTR)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(Err(Errno::EBADF | Errno::ENOTSOCK)) => {
                shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                break; // the descriptor is gone: nothing more will come
            }
            Ok(Err(_)) => {
                shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                shared.stats.panics.fetch_add(1, Ordering::Relaxed);
                shared.panics.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One `recvmmsg` (blocking for the first datagram, as many more as are there at once).
fn read_batch(
    fd: RawFd,
    slots: &mut [u8],
    size: usize,
    headers: &mut MultiHeaders<SockaddrStorage>,
) -> nix::Result<Batch> {
    let mut got: Vec<(usize, SocketAddr)> = Vec::new();
    {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = slots
            .chunks_mut(size)
            .map(|slot| [IoSliceMut::new(slot)])
            .collect();
        let msgs = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None)?;
        for msg in msgs {
            got.push((msg.bytes, msg.address.map_or(UNKNOWN, socket_addr)));
        }
    }
    let total = got.iter().map(|(len, _)| len).sum();
    let mut batch = Batch {
        data: Vec::with_capacity(total),
        items: Vec::with_capacity(got.len()),
        first: 0,
    };
    for (i, (len, from)) in got.into_iter().enumerate() {
        let start = i * size;
        batch.push(&slots[start..start + len.min(size)], from);
    }
    Ok(batch)
}

const UNKNOWN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

fn socket_addr(addr: SockaddrStorage) -> SocketAddr {
    if let Some(v4) = addr.as_sockaddr_in() {
        return SocketAddr::from(*v4);
    }
    if let Some(v6) = addr.as_sockaddr_in6() {
        return SocketAddr::from(*v6);
    }
    UNKNOWN
}

/// An address as `socket.inet_ntop` (glibc) writes it, which the Python reader's senders are
/// keyed by: Rust's `Display` agrees except for the deprecated IPv4-compatible form
/// (`::a.b.c.d`, where glibc writes the dotted quad and Rust hex groups).
pub fn ip_text(ip: IpAddr) -> String {
    if let IpAddr::V6(v6) = ip {
        let s = v6.segments();
        if s[..6] == [0; 6] && s[6] != 0 {
            let [a, b, c, d] = v6.octets()[12..] else {
                unreachable!()
            };
            return format!("::{a}.{b}.{c}.{d}");
        }
    }
    ip.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Instant;

    static PANICS: AtomicU64 = AtomicU64::new(0);

    fn pair(v6: bool) -> (UdpSocket, UdpSocket) {
        let host = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
        let rx = UdpSocket::bind(host).expect("bind");
        rx.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let tx = UdpSocket::bind(host).expect("bind");
        (rx, tx)
    }

    fn cfg(max_bytes: usize, backlog_bytes: usize) -> Config {
        Config {
            max_bytes,
            backlog_bytes,
            batch: 16,
        }
    }

    fn wait(what: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < end, "timed out");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn all(rx: &Receiver) -> Vec<(Vec<u8>, SocketAddr)> {
        rx.take(usize::MAX)
            .iter()
            .flat_map(|b| b.iter().map(|(d, a)| (d.to_vec(), a)).collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn datagrams_arrive_in_order_with_their_sender() {
        let (sock, tx) = pair(false);
        let rx = Receiver::start(sock.as_raw_fd(), cfg(100, 1 << 20), &PANICS).expect("start");
        for i in 0..100u8 {
            tx.send_to(&[b'a', i], sock.local_addr().unwrap()).unwrap();
        }
        wait(|| rx.pending() == 100);
        assert_eq!(rx.held(), 200);
        let got = all(&rx);
        assert_eq!(got.len(), 100);
        for (i, (data, from)) in got.iter().enumerate() {
            assert_eq!(data, &vec![b'a', i as u8]);
            assert_eq!(*from, tx.local_addr().unwrap());
        }
        assert_eq!((rx.pending(), rx.held()), (0, 0));
        rx.close();
        assert!(!rx.alive());
    }

    #[test]
    fn a_take_that_ends_inside_a_batch_leaves_the_rest_in_order() {
        let (sock, tx) = pair(false);
        let rx = Receiver::start(sock.as_raw_fd(), cfg(100, 1 << 20), &PANICS).expect("start");
        rx.close(); // read nothing yet: fill the socket, then read it in one go
        for i in 0..10u8 {
            tx.send_to(&[i], sock.local_addr().unwrap()).unwrap();
        }
        let rx = Receiver::start(sock.as_raw_fd(), cfg(100, 1 << 20), &PANICS).expect("start");
        wait(|| rx.pending() == 10);
        let first: Vec<u8> = rx
            .take(3)
            .iter()
            .flat_map(|b| b.iter().map(|(d, _)| d[0]).collect::<Vec<_>>())
            .collect();
        let rest: Vec<u8> = all(&rx).iter().map(|(d, _)| d[0]).collect();
        assert_eq!(first, vec![0, 1, 2]);
        assert_eq!(rest, (3..10).collect::<Vec<u8>>());
    }

    #[test]
    fn a_longer_datagram_arrives_one_byte_over_the_limit() {
        let (sock, tx) = pair(true);
        let rx = Receiver::start(sock.as_raw_fd(), cfg(10, 1 << 20), &PANICS).expect("start");
        tx.send_to(&[b'y'; 100], sock.local_addr().unwrap())
            .unwrap();
        tx.send_to(b"", sock.local_addr().unwrap()).unwrap();
        wait(|| rx.pending() == 2);
        let got = all(&rx);
        assert_eq!(got[0].0, vec![b'y'; 11]);
        assert_eq!(got[1].0, Vec::<u8>::new());
        assert_eq!(ip_text(got[0].1.ip()), "::1");
    }

    #[test]
    fn past_backlog_bytes_reading_pauses_until_half_is_taken() {
        let (sock, tx) = pair(false);
        let rx = Receiver::start(sock.as_raw_fd(), cfg(100, 1000), &PANICS).expect("start");
        for _ in 0..50 {
            tx.send_to(&[0u8; 100], sock.local_addr().unwrap()).unwrap();
        }
        wait(|| rx.stats().full.load(Ordering::Relaxed) == 1);
        std::thread::sleep(Duration::from_millis(30));
        let held = rx.pending();
        assert!((10..=10 + 16).contains(&held), "{held}"); // stopped within a batch of the limit
        rx.take(usize::MAX);
        wait(|| rx.stats().received.load(Ordering::Relaxed) >= 20);
    }

    #[test]
    fn a_bound_smaller_than_a_datagram_still_reads_once_the_backlog_is_taken() {
        let (sock, tx) = pair(false);
        let rx = Receiver::start(sock.as_raw_fd(), cfg(100, 1), &PANICS).expect("start");
        tx.send_to(b"one", sock.local_addr().unwrap()).unwrap();
        wait(|| rx.pending() == 1);
        rx.take(1);
        tx.send_to(b"two", sock.local_addr().unwrap()).unwrap();
        wait(|| rx.pending() == 1);
        assert_eq!(all(&rx)[0].0, b"two".to_vec());
    }

    #[test]
    fn a_panic_on_the_thread_is_counted_and_reading_goes_on() {
        let (sock, tx) = pair(false);
        let rx = Receiver::start(sock.as_raw_fd(), cfg(100, 1 << 20), &PANICS).expect("start");
        rx.inject_panic();
        wait(|| rx.stats().panics.load(Ordering::Relaxed) == 1);
        tx.send_to(b"after", sock.local_addr().unwrap()).unwrap();
        wait(|| rx.pending() == 1);
        assert!(rx.alive());
    }

    #[test]
    fn ip_text_is_what_inet_ntop_writes() {
        for (ip, text) in [
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            ("::", "::"),
            ("::ffff:10.1.2.3", "::ffff:10.1.2.3"),
            ("::10.1.2.3", "::10.1.2.3"),
            ("2001:db8::1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("fe80::1", "fe80::1"),
        ] {
            assert_eq!(ip_text(ip.parse().unwrap()), text);
        }
    }
}
