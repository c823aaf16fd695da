//! Snapshots of a Redis node taken the way a replica takes them: a replication handshake
//! as a least-privilege ACL user (`-@all +psync +replconf +ping +role`), then the RDB
//! payload streamed in bounded chunks and verified on the fly (RDB magic, the trailing
//! CRC-64, the end-of-file opcode) before the caller may treat it as complete.
//!
//! The handshake is `AUTH`, `REPLCONF rdb-only 1` (Redis 7.0+: the node streams the RDB,
//! never the command stream that would follow, and closes the link), `REPLCONF capa eof`
//! (a node with `repl-diskless-sync yes` streams from its fork through a socket and writes
//! nothing to its disk) and `PSYNC ? -1`, as `redis-cli --rdb` does. Taken from a replica,
//! the primary's writes never pause and its disk is never touched; the replica forks once.
//!
//! While it prepares the snapshot (a fork, or a disk-based save it attaches to) the node
//! sends a newline about once a second as a keep-alive, so an I/O timeout of a few seconds
//! or more never fires on a healthy node; the default callers should use is 30 s.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tracing::Instrument;

/// Redis' CRC-64 (Jones polynomial, reflected), slicing-by-16 for speed on large files.
static CRC64: crc::Crc<u64, crc::Table<16>> = crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_REDIS);

/// `REDIS` followed by a 4-digit version (`REDIS0010` is Redis 7.0, `0011` Redis 7.2 and
/// Valkey 7.2–8.x, `0012` Redis 7.4/8.0).
const MAGIC: &[u8; 5] = b"REDIS";
const HEADER_LEN: usize = 9;
/// The RDB end-of-file opcode, right before the 8-byte checksum.
const RDB_OPCODE_EOF: u8 = 0xFF;
const CHECKSUM_LEN: usize = 8;
/// Length of the random end mark of a diskless (`$EOF:<mark>`) transfer.
const EOF_MARK_LEN: usize = 40;
/// A chunk is at least this big unless the payload ends first...
const MIN_CHUNK: usize = 64 * 1024;
/// ...and at most this big (plus at most [`EOF_MARK_LEN`] held-back bytes).
const MAX_CHUNK: usize = 256 * 1024;
/// The longest header line we accept from the node (replies, `$...` preambles).
const MAX_LINE: usize = 4096;

/// Why a snapshot failed. Messages are written for a Kubernetes Event: they name the
/// cause in the user's terms and never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum RdbError {
    #[error("could not connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("the CA bundle for TLS to the node is not usable: {0}")]
    InvalidCa(String),
    #[error("TLS to the node ({server_name}) failed: {message}")]
    Tls { server_name: String, message: String },
    #[error("the node refused the replication user: {0}")]
    Auth(String),
    #[error("the replication user may not run {command} on the node: {message}")]
    NoPermission { command: &'static str, message: String },
    #[error("the node does not support rdb-only snapshots (Redis 7.0 or newer needed): {0}")]
    RdbOnlyUnsupported(String),
    #[error("the node refused the snapshot ({command}): {message}")]
    Refused { command: &'static str, message: String },
    #[error("the node sent no data for {} while {phase}", secs(*.after))]
    Timeout { after: Duration, phase: &'static str },
    #[error("the node closed the connection while {phase}{detail}")]
    Closed { phase: &'static str, detail: String },
    #[error("unexpected reply from the node while {phase}: {message}")]
    Protocol { phase: &'static str, message: String },
    #[error("the snapshot is corrupt: {0}")]
    Corrupt(#[from] Corruption),
    #[error("network error while {phase}: {source}")]
    Io { phase: &'static str, source: std::io::Error },
    #[error("the snapshot stream already failed; start a new snapshot")]
    Failed,
}

impl RdbError {
    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RdbError::Connect { .. } => "connect",
            RdbError::InvalidCa(_) | RdbError::Tls { .. } => "tls",
            RdbError::Auth(_) => "auth",
            RdbError::NoPermission { .. } => "permission",
            RdbError::RdbOnlyUnsupported(_) => "unsupported",
            RdbError::Refused { .. } => "refused",
            RdbError::Timeout { .. } => "timeout",
            RdbError::Closed { .. } => "closed",
            RdbError::Protocol { .. } => "protocol",
            RdbError::Corrupt(_) => "corrupt",
            RdbError::Io { .. } => "io",
            RdbError::Failed => "failed",
        }
    }
}

/// What is wrong with an RDB payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("it is empty")]
    Empty,
    #[error("it does not start with an RDB header (REDIS and a 4-digit version); it starts with {found:?}")]
    BadMagic { found: String },
    #[error("{size} bytes are too few for an RDB file (truncated)")]
    TooShort { size: u64 },
    #[error(
        "no RDB end-of-file marker (0xFF) before the checksum (found 0x{found:02X}): truncated or not an RDB file"
    )]
    NoEofOpcode { found: u8 },
    #[error("checksum mismatch (stored 0x{stored:016X}, computed 0x{computed:016X})")]
    Checksum { stored: u64, computed: u64 },
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{:.1}s", d.as_secs_f64()) }
}

/// Streaming RDB verification in constant memory: feed the payload in order with
/// [`Verifier::update`], then [`Verifier::finish`].
///
/// Checks: the payload starts with `REDIS` and a 4-digit version; its last 8 bytes are
/// the little-endian CRC-64 (Redis' Jones polynomial) of everything before them; the
/// byte before them is the RDB end-of-file opcode `0xFF`. A stored checksum of 0 means
/// the node runs with `rdbchecksum no` (Redis writes 0 then and skips the check on load):
/// such a payload is accepted on the strength of its magic and its end-of-file opcode
/// alone, which catches truncation but not corrupted bytes in between.
pub struct Verifier {
    digest: crc::Digest<'static, u64, crc::Table<16>>,
    /// The first bytes, until the header is complete.
    header: Vec<u8>,
    /// The last (up to) 8 bytes seen, not yet fed to the digest: they may be the checksum.
    tail: [u8; CHECKSUM_LEN],
    tail_len: usize,
    /// The last byte fed to the digest (the one before `tail`).
    last_digested: Option<u8>,
    size: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").field("size", &self.size).finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new() -> Self {
        Self {
            digest: CRC64.digest(),
            header: Vec::with_capacity(HEADER_LEN),
            tail: [0; CHECKSUM_LEN],
            tail_len: 0,
            last_digested: None,
            size: 0,
        }
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RDB format version from the header, once 9 bytes were fed and they are valid.
    pub fn rdb_version(&self) -> Option<u16> {
        (self.header.len() == HEADER_LEN && header_ok(&self.header))
            .then(|| std::str::from_utf8(&self.header[5..]).ok()?.parse().ok())
            .flatten()
    }

    /// Feed the next bytes. Fails as soon as the header is known to be wrong, so a
    /// caller can stop streaming a payload that is not an RDB file at all.
    pub fn update(&mut self, data: &[u8]) -> Result<(), Corruption> {
        if data.is_empty() {
            return Ok(());
        }
        self.size += data.len() as u64;
        if self.header.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            if !header_prefix_ok(&self.header) {
                return Err(bad_magic(&self.header));
            }
        }
        // Keep the last 8 bytes out of the digest: digest what is pushed out of the tail.
        let total = self.tail_len + data.len();
        if total <= CHECKSUM_LEN {
            self.tail[self.tail_len..total].copy_from_slice(data);
            self.tail_len = total;
            return Ok(());
        }
        let spill = total - CHECKSUM_LEN; // bytes leaving the window, oldest first
        let from_tail = spill.min(self.tail_len);
        if from_tail > 0 {
            self.digest.update(&self.tail[..from_tail]);
            self.last_digested = Some(self.tail[from_tail - 1]);
        }
        let from_data = spill - from_tail;
        if from_data > 0 {
            self.digest.update(&data[..from_data]);
            self.last_digested = Some(data[from_data - 1]);
        }
        let mut window = [0u8; CHECKSUM_LEN];
        let kept_tail = self.tail_len - from_tail;
        window[..kept_tail].copy_from_slice(&self.tail[from_tail..self.tail_len]);
        window[kept_tail..].copy_from_slice(&data[from_data..]);
        self.tail = window;
        self.tail_len = CHECKSUM_LEN;
        Ok(())
    }

    /// Check the whole payload: its size on success.
    pub fn finish(self) -> Result<u64, Corruption> {
        if self.size == 0 {
            return Err(Corruption::Empty);
        }
        if self.header.len() < HEADER_LEN || !header_ok(&self.header) {
            if header_prefix_ok(&self.header) && self.size < (HEADER_LEN + 1 + CHECKSUM_LEN) as u64 {
                return Err(Corruption::TooShort { size: self.size });
            }
            return Err(bad_magic(&self.header));
        }
        if self.size < (HEADER_LEN + 1 + CHECKSUM_LEN) as u64 {
            return Err(Corruption::TooShort { size: self.size });
        }
        let eof = self.last_digested.unwrap_or(0);
        if eof != RDB_OPCODE_EOF {
            return Err(Corruption::NoEofOpcode { found: eof });
        }
        let stored = u64::from_le_bytes(self.tail);
        let computed = self.digest.finalize();
        if stored != 0 && stored != computed {
            return Err(Corruption::Checksum { stored, computed });
        }
        Ok(self.size)
    }
}

fn header_prefix_ok(h: &[u8]) -> bool {
    h.iter().enumerate().all(|(i, &b)| if i < MAGIC.len() { b == MAGIC[i] } else { b.is_ascii_digit() })
}

fn header_ok(h: &[u8]) -> bool {
    h.len() == HEADER_LEN && header_prefix_ok(h)
}

fn bad_magic(h: &[u8]) -> Corruption {
    Corruption::BadMagic { found: String::from_utf8_lossy(h).into_owned() }
}

/// Verify a whole RDB file in memory (see [`Verifier`] for what is checked).
pub fn verify(rdb: &[u8]) -> Result<(), RdbError> {
    let mut v = Verifier::new();
    v.update(rdb)?;
    v.finish()?;
    Ok(())
}

/// TLS to the node: its chain must lead to a certificate of `ca_pem` and its certificate
/// must name `server_name` (a DNS name or an IP), as [`crate::dial`] does for redis-rs.
#[derive(Clone, Copy)]
pub struct TlsTarget<'a> {
    pub ca_pem: &'a [u8],
    pub server_name: &'a str,
}

impl fmt::Debug for TlsTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTarget")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Where and how to take a snapshot. `io_timeout` bounds the connect, the TLS handshake
/// and every single read and write (a node that stops sending fails the snapshot after
/// that long; nodes send a keep-alive about once a second while they prepare it).
#[derive(Clone, Copy)]
pub struct SnapshotSource<'a> {
    pub addr: SocketAddr,
    /// ACL user (None: `AUTH password` as the `default` user). AUTH is sent only when a
    /// password is given, as redis-rs does.
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub tls: Option<TlsTarget<'a>>,
    pub io_timeout: Duration,
}

impl fmt::Debug for SnapshotSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotSource")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("io_timeout", &self.io_timeout)
            .finish()
    }
}

/// How the node framed the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// `$<len>\r\n` and `len` bytes: a disk-based sync (`repl-diskless-sync no`; the node
    /// wrote the RDB to its own disk first, then sent the file).
    Sized { len: u64 },
    /// `$EOF:<40 random chars>\r\n`, the bytes, then the same 40 chars: a diskless sync
    /// streamed from the node's fork through a socket (nothing written to its disk).
    EofMarked,
}

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

enum Framing {
    Sized { remaining: u64 },
    EofMarked { mark: [u8; EOF_MARK_LEN], held: BytesMut },
}

enum State {
    Streaming,
    Done,
    Failed,
}

/// One snapshot being streamed from a node.
///
/// **The point in time it stands for**: the source node's dataset at the moment it forked
/// to produce the snapshot, which is replication offset [`Snapshot::offset`] of the
/// replication history [`Snapshot::replid`]. Taken from a replica, that is every write the
/// replica had applied by then: every write its primary acknowledged after `WAIT` counted
/// that replica before [`Snapshot::open`] began is included, and no write past `offset()`
/// is. Writes acknowledged without such a `WAIT` may or may not be included (the replica
/// may not have received them yet). The snapshot never contains a partial write (Redis
/// applies each command, and each `MULTI`/`EXEC` or script, atomically before it forks).
///
/// Chunks come in order; [`Snapshot::next_chunk`] returns `Ok(None)` only after the whole
/// payload was received and verified, so a caller that uploads chunks as they come must
/// abort (not commit) the upload on any error.
pub struct Snapshot {
    conn: BufReader<Box<dyn Conn>>,
    replid: String,
    offset: u64,
    format: PayloadFormat,
    framing: Framing,
    verifier: Option<Verifier>,
    bytes_read: u64,
    io_timeout: Duration,
    state: State,
    started: Instant,
    span: tracing::Span,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("replid", &self.replid)
            .field("offset", &self.offset)
            .field("format", &self.format)
            .field("bytes_read", &self.bytes_read)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Connect, authenticate, ask for an rdb-only full sync and read up to the payload's
    /// preamble. The node has forked (or attached to a save) when this returns.
    pub async fn open(src: &SnapshotSource<'_>) -> Result<Snapshot, RdbError> {
        let span = tracing::info_span!(
            "rdb_snapshot",
            node = %src.addr,
            user = src.username.unwrap_or("default"),
            tls = src.tls.is_some(),
        );
        let started = Instant::now();
        let result = Self::open_inner(src, span.clone(), started).instrument(span.clone()).await;
        if let Err(e) = &result {
            span.in_scope(|| tracing::warn!(error = %e, kind = e.metric_label(), "snapshot failed to start"));
        }
        result
    }

    async fn open_inner(
        src: &SnapshotSource<'_>,
        span: tracing::Span,
        started: Instant,
    ) -> Result<Snapshot, RdbError> {
        let t = src.io_timeout;
        let tcp = match tokio::time::timeout(t, TcpStream::connect(src.addr)).await {
            Err(_) => return Err(RdbError::Timeout { after: t, phase: "connecting" }),
            Ok(Err(source)) => return Err(RdbError::Connect { addr: src.addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Conn> = match &src.tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(tls_connect(tcp, tls, t).await?),
        };
        let mut conn = BufReader::with_capacity(MAX_CHUNK, stream);

        if let Some(password) = src.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = src.username {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            send(&mut conn, &args, t, "authenticating").await?;
            let reply = read_line(&mut conn, t, "authenticating").await?;
            if let Some(err) = reply.strip_prefix('-') {
                return Err(RdbError::Auth(err.to_string()));
            }
            expect_ok(&reply, "authenticating")?;
        }

        send(&mut conn, &[b"REPLCONF", b"rdb-only", b"1"], t, "asking for an rdb-only snapshot").await?;
        let reply = read_line(&mut conn, t, "asking for an rdb-only snapshot").await?;
        if let Some(err) = reply.strip_prefix('-') {
            return Err(classify_error(err, "REPLCONF", true));
        }
        expect_ok(&reply, "asking for an rdb-only snapshot")?;

        send(&mut conn, &[b"REPLCONF", b"capa", b"eof"], t, "announcing the EOF capability").await?;
        let reply = read_line(&mut conn, t, "announcing the EOF capability").await?;
        if let Some(err) = reply.strip_prefix('-') {
            return Err(classify_error(err, "REPLCONF", false));
        }
        expect_ok(&reply, "announcing the EOF capability")?;

        send(&mut conn, &[b"PSYNC", b"?", b"-1"], t, "requesting the snapshot").await?;
        let phase = "waiting for the snapshot to start";
        let reply = read_line(&mut conn, t, phase).await?;
        if let Some(err) = reply.strip_prefix('-') {
            return Err(classify_error(err, "PSYNC", false));
        }
        let (replid, offset) = parse_fullresync(&reply)?;

        let preamble = read_line(&mut conn, t, phase).await?;
        if let Some(err) = preamble.strip_prefix('-') {
            return Err(classify_error(err, "PSYNC", false));
        }
        let Some(bulk) = preamble.strip_prefix('$') else {
            return Err(RdbError::Protocol {
                phase,
                message: format!("expected the payload's preamble, got {preamble:?}"),
            });
        };
        let (format, framing) = if let Some(mark) = bulk.strip_prefix("EOF:") {
            let mark: [u8; EOF_MARK_LEN] = mark.as_bytes().try_into().map_err(|_| RdbError::Protocol {
                phase,
                message: format!("the end mark has {} characters, not {EOF_MARK_LEN}", mark.len()),
            })?;
            (
                PayloadFormat::EofMarked,
                Framing::EofMarked { mark, held: BytesMut::with_capacity(MAX_CHUNK + EOF_MARK_LEN) },
            )
        } else {
            let len: u64 = bulk.parse().map_err(|_| RdbError::Protocol {
                phase,
                message: format!("the payload length {bulk:?} is not a number"),
            })?;
            if len == 0 {
                return Err(Corruption::Empty.into());
            }
            (PayloadFormat::Sized { len }, Framing::Sized { remaining: len })
        };
        tracing::info!(
            %replid,
            offset,
            format = ?format,
            wait_ms = started.elapsed().as_millis() as u64,
            "snapshot started"
        );
        Ok(Snapshot {
            conn,
            replid,
            offset,
            format,
            framing,
            verifier: Some(Verifier::new()),
            bytes_read: 0,
            io_timeout: t,
            state: State::Streaming,
            started,
            span,
        })
    }

    /// The replication ID of the history the snapshot belongs to (the primary's, when
    /// taken from one of its replicas).
    pub fn replid(&self) -> &str {
        &self.replid
    }

    /// The replication offset the snapshot stands for (see [`Snapshot`]).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How the node framed the payload (diskless or disk-based sync).
    pub fn format(&self) -> PayloadFormat {
        self.format
    }

    /// Payload bytes returned so far (the RDB file's bytes, without framing).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next payload bytes (64 KiB to 256 KiB, less at the end), in order. `Ok(None)`
    /// once the payload is complete AND verified; an error otherwise, never `Ok(None)`
    /// (after an error every further call fails too).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, RdbError> {
        match self.state {
            State::Done => return Ok(None),
            State::Failed => return Err(RdbError::Failed),
            State::Streaming => {}
        }
        let span = self.span.clone();
        let result = self.next_inner().instrument(span.clone()).await;
        if let Err(e) = &result {
            self.state = State::Failed;
            span.in_scope(|| {
                tracing::warn!(error = %e, kind = e.metric_label(), bytes = self.bytes_read, "snapshot failed")
            });
        }
        result
    }

    async fn next_inner(&mut self) -> Result<Option<Bytes>, RdbError> {
        const PHASE: &str = "streaming the snapshot";
        let t = self.io_timeout;
        let (chunk, last) = match &mut self.framing {
            Framing::Sized { remaining } => {
                let want = (*remaining).min(MAX_CHUNK as u64) as usize;
                let mut buf = BytesMut::with_capacity(want);
                while buf.len() < want.min(MIN_CHUNK) || (buf.len() < want && !self.conn.buffer().is_empty())
                {
                    let room = want - buf.len();
                    let n = read_some(&mut self.conn, &mut (&mut buf).limit(room), t, PHASE).await?;
                    if n == 0 {
                        let got = self.bytes_read + buf.len() as u64;
                        let total = self.bytes_read + *remaining;
                        return Err(RdbError::Closed {
                            phase: PHASE,
                            detail: format!(" after {got} of {total} bytes"),
                        });
                    }
                }
                *remaining -= buf.len() as u64;
                let last = *remaining == 0;
                (buf.freeze(), last)
            }
            Framing::EofMarked { mark, held } => {
                // `held` starts with the bytes held back last time (they may be the start
                // of the mark); read until there is a chunk's worth beyond the mark.
                let mut ended = false;
                while held.len() < MIN_CHUNK + EOF_MARK_LEN || !self.conn.buffer().is_empty() {
                    let room = MAX_CHUNK + EOF_MARK_LEN - held.len();
                    if room == 0 {
                        break;
                    }
                    let n = read_some(&mut self.conn, &mut (&mut *held).limit(room), t, PHASE).await?;
                    if n == 0 {
                        let got = self.bytes_read + held.len() as u64;
                        return Err(RdbError::Closed {
                            phase: PHASE,
                            detail: format!(
                                " after {got} bytes, before the end mark (its save may have failed: see the node's log)"
                            ),
                        });
                    }
                    // The node sends nothing after the mark (rdb-only), so the payload
                    // ends exactly when the bytes so far end with the mark.
                    if held.len() >= EOF_MARK_LEN && held[held.len() - EOF_MARK_LEN..] == mark[..] {
                        ended = true;
                        break;
                    }
                }
                if ended {
                    held.truncate(held.len() - EOF_MARK_LEN);
                    (std::mem::take(held).freeze(), true)
                } else {
                    let emit = held.len() - EOF_MARK_LEN;
                    let chunk = held.split_to(emit).freeze();
                    // Keep the held-back bytes at the front of a buffer with room again.
                    let mut next = BytesMut::with_capacity(MAX_CHUNK + EOF_MARK_LEN);
                    next.extend_from_slice(held);
                    *held = next;
                    (chunk, false)
                }
            }
        };
        let verifier = self.verifier.as_mut().ok_or(RdbError::Failed)?;
        verifier.update(&chunk)?;
        self.bytes_read += chunk.len() as u64;
        if !last {
            return Ok(Some(chunk));
        }
        // The last bytes are handed out only once the whole payload verified.
        let verifier = self.verifier.take().ok_or(RdbError::Failed)?;
        verifier.finish()?;
        self.state = State::Done;
        self.span.in_scope(|| {
            tracing::info!(
                bytes = self.bytes_read,
                duration_ms = self.started.elapsed().as_millis() as u64,
                "snapshot complete and verified"
            )
        });
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}

/// One read of at most what `buf` has room for, bounded by `t`; 0 at end of stream.
async fn read_some<B: BufMut>(
    conn: &mut BufReader<Box<dyn Conn>>,
    buf: &mut B,
    t: Duration,
    phase: &'static str,
) -> Result<usize, RdbError> {
    match tokio::time::timeout(t, conn.read_buf(buf)).await {
        Err(_) => Err(RdbError::Timeout { after: t, phase }),
        Ok(Err(source)) => Err(RdbError::Io { phase, source }),
        Ok(Ok(n)) => Ok(n),
    }
}

/// Write one command as a RESP array, bounded by `t`.
async fn send(
    conn: &mut BufReader<Box<dyn Conn>>,
    args: &[&[u8]],
    t: Duration,
    phase: &'static str,
) -> Result<(), RdbError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    let write = async {
        conn.get_mut().write_all(&out).await?;
        conn.get_mut().flush().await
    };
    match tokio::time::timeout(t, write).await {
        Err(_) => Err(RdbError::Timeout { after: t, phase }),
        Ok(Err(source)) => Err(RdbError::Io { phase, source }),
        Ok(Ok(())) => Ok(()),
    }
}

/// One reply line without its `\r\n`, skipping the bare newlines the node sends as
/// keep-alives while it prepares the snapshot. Each read is bounded by `t`; the line's
/// length by [`MAX_LINE`].
async fn read_line(
    conn: &mut BufReader<Box<dyn Conn>>,
    t: Duration,
    phase: &'static str,
) -> Result<String, RdbError> {
    let mut line = Vec::new();
    loop {
        let buf = match tokio::time::timeout(t, conn.fill_buf()).await {
            Err(_) => return Err(RdbError::Timeout { after: t, phase }),
            Ok(Err(source)) => return Err(RdbError::Io { phase, source }),
            Ok(Ok(buf)) => buf,
        };
        if buf.is_empty() {
            let detail = if line.is_empty() {
                String::new()
            } else {
                format!(" in the middle of a reply ({:?})", String::from_utf8_lossy(&line))
            };
            return Err(RdbError::Closed { phase, detail });
        }
        let (used, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                (i + 1, true)
            }
            None => {
                line.extend_from_slice(buf);
                (buf.len(), false)
            }
        };
        conn.consume(used);
        if line.len() > MAX_LINE {
            return Err(RdbError::Protocol {
                phase,
                message: format!("a reply line longer than {MAX_LINE} bytes"),
            });
        }
        if complete {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                continue; // a keep-alive
            }
            return String::from_utf8(line).map_err(|e| RdbError::Protocol {
                phase,
                message: format!("a reply that is not text: {:?}", String::from_utf8_lossy(e.as_bytes())),
            });
        }
    }
}

fn expect_ok(reply: &str, phase: &'static str) -> Result<(), RdbError> {
    if reply == "+OK" {
        Ok(())
    } else {
        Err(RdbError::Protocol { phase, message: format!("expected +OK, got {reply:?}") })
    }
}

/// Map an error reply (without its `-`) of `command` to what it means for a snapshot.
fn classify_error(err: &str, command: &'static str, rdb_only: bool) -> RdbError {
    let code = err.split_whitespace().next().unwrap_or_default();
    match code {
        "NOPERM" => RdbError::NoPermission { command, message: err.to_string() },
        "NOAUTH" | "WRONGPASS" => RdbError::Auth(err.to_string()),
        // Redis before 7.0 (and servers without the option): "ERR Unrecognized REPLCONF
        // option: rdb-only".
        _ if rdb_only && err.to_ascii_lowercase().contains("rdb-only") => {
            RdbError::RdbOnlyUnsupported(err.to_string())
        }
        "NOMASTERLINK" => RdbError::Refused {
            command,
            message: format!(
                "{err} (the replica is not linked to its primary; take the snapshot from another one)"
            ),
        },
        _ => RdbError::Refused { command, message: err.to_string() },
    }
}

/// `+FULLRESYNC <replid> <offset>`.
fn parse_fullresync(reply: &str) -> Result<(String, u64), RdbError> {
    const PHASE: &str = "requesting the snapshot";
    let mut parts = reply.split_whitespace();
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("+FULLRESYNC"), Some(replid), Some(offset), None) => {
            let offset = offset.parse().map_err(|_| RdbError::Protocol {
                phase: PHASE,
                message: format!("the offset in {reply:?} is not a number"),
            })?;
            Ok((replid.to_string(), offset))
        }
        _ => {
            Err(RdbError::Protocol { phase: PHASE, message: format!("expected +FULLRESYNC, got {reply:?}") })
        }
    }
}

/// TCP to TLS: the node's chain must lead to the CA and its certificate must name
/// `server_name`; the handshake is bounded by `t`.
async fn tls_connect(
    tcp: TcpStream,
    tls: &TlsTarget<'_>,
    t: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, RdbError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(tls.ca_pem) {
        let cert = cert.map_err(|e| RdbError::InvalidCa(format!("unreadable PEM: {e}")))?;
        roots.add(cert).map_err(|e| RdbError::InvalidCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(RdbError::InvalidCa("it holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RdbError::Tls { server_name: tls.server_name.to_string(), message: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(tls.server_name.to_string()).map_err(|e| RdbError::Tls {
        server_name: tls.server_name.to_string(),
        message: format!("not a valid host name or IP: {e}"),
    })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(t, connector.connect(name, tcp)).await {
        Err(_) => Err(RdbError::Timeout { after: t, phase: "doing the TLS handshake" }),
        Ok(Err(e)) => Err(RdbError::Tls { server_name: tls.server_name.to_string(), message: e.to_string() }),
        Ok(Ok(s)) => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RDB-shaped payload: header, `body`, the EOF opcode and the checksum.
    fn rdb(body: &[u8]) -> Vec<u8> {
        let mut v = b"REDIS0010".to_vec();
        v.extend_from_slice(body);
        v.push(RDB_OPCODE_EOF);
        let crc = CRC64.checksum(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    fn check_in_chunks(data: &[u8], chunk: usize) -> Result<u64, Corruption> {
        let mut v = Verifier::new();
        for c in data.chunks(chunk) {
            v.update(c)?;
        }
        v.finish()
    }

    #[test]
    fn redis_crc64_test_vector() {
        // Redis' crc64.c self-test: crc64(0, "123456789", 9) == 0xe9c6d914c4b8d9ca.
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn a_valid_payload_verifies_in_any_chunking() {
        let body: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        let data = rdb(&body);
        for chunk in [1, 2, 3, 7, 8, 9, 10, 17, 4096, data.len()] {
            assert_eq!(check_in_chunks(&data, chunk), Ok(data.len() as u64), "chunk {chunk}");
        }
        assert!(verify(&data).is_ok());
        let mut v = Verifier::new();
        v.update(&data[..20]).unwrap();
        assert_eq!(v.rdb_version(), Some(10));
        // The smallest RDB: header, EOF opcode, checksum.
        assert_eq!(check_in_chunks(&rdb(b""), 1), Ok(18));
    }

    #[test]
    fn a_flipped_byte_is_refused() {
        let data = rdb(b"\xfa\x09redis-ver\x067.0.15\x00\x03key\x05value");
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x01;
            let r = check_in_chunks(&bad, 5);
            assert!(r.is_err(), "flipping byte {i} went unnoticed");
            if (HEADER_LEN..data.len() - CHECKSUM_LEN - 1).contains(&i) {
                assert!(matches!(r, Err(Corruption::Checksum { .. })), "byte {i}: {r:?}");
            }
        }
        let mut bad = data.clone();
        bad[12] ^= 0x40;
        let msg = RdbError::from(check_in_chunks(&bad, 4096).unwrap_err()).to_string();
        assert!(msg.starts_with("the snapshot is corrupt: checksum mismatch (stored 0x"), "{msg}");
        assert!(msg.contains(", computed 0x"), "{msg}");
    }

    #[test]
    fn a_truncated_payload_is_refused() {
        let data = rdb(b"\x00\x03key\x05value\x00\x04key2\x06value2");
        for len in 0..data.len() {
            let r = check_in_chunks(&data[..len], 3);
            assert!(r.is_err(), "truncated to {len} bytes went unnoticed");
        }
        assert_eq!(check_in_chunks(&[], 3), Err(Corruption::Empty));
        assert_eq!(check_in_chunks(b"REDIS0010\xff", 3), Err(Corruption::TooShort { size: 10 }));
    }

    #[test]
    fn a_wrong_magic_is_refused_as_soon_as_it_is_seen() {
        let mut data = rdb(b"\x00\x03key\x05value");
        data[0] = b'X';
        let mut v = Verifier::new();
        assert!(matches!(v.update(&data[..1]), Err(Corruption::BadMagic { .. })));
        let mut data = rdb(b"\x00\x03key\x05value");
        data[7] = b'x'; // not a digit
        let mut v = Verifier::new();
        v.update(&data[..7]).unwrap();
        assert_eq!(v.update(&data[7..]), Err(Corruption::BadMagic { found: "REDIS00x0".into() }));
        let msg = RdbError::from(check_in_chunks(b"<html>404 not found</html>", 7).unwrap_err()).to_string();
        assert!(msg.contains("does not start with an RDB header"), "{msg}");
        assert_eq!(check_in_chunks(b"REDIS", 7), Err(Corruption::TooShort { size: 5 }));
    }

    #[test]
    fn a_zero_checksum_is_accepted_only_with_the_eof_opcode() {
        // `rdbchecksum no`: Redis writes 0 as the checksum.
        let mut data = b"REDIS0010\x00\x03key\x05value\xff".to_vec();
        data.extend_from_slice(&[0; 8]);
        assert_eq!(check_in_chunks(&data, 2), Ok(data.len() as u64));
        // Cut before the EOF opcode: refused even though the "checksum" is 0.
        let mut cut = b"REDIS0010\x00\x03key\x05value".to_vec();
        cut.extend_from_slice(&[0; 8]);
        assert!(matches!(check_in_chunks(&cut, 2), Err(Corruption::NoEofOpcode { .. })));
    }

    #[test]
    fn replies_map_to_clear_errors() {
        let e =
            classify_error("NOPERM this user has no permissions to run the 'psync' command", "PSYNC", false);
        assert!(matches!(e, RdbError::NoPermission { command: "PSYNC", .. }));
        assert!(e.to_string().contains("may not run PSYNC") && e.to_string().contains("'psync'"), "{e}");
        let e = classify_error("ERR Unrecognized REPLCONF option: rdb-only", "REPLCONF", true);
        assert!(matches!(e, RdbError::RdbOnlyUnsupported(_)), "{e}");
        assert!(e.to_string().contains("Redis 7.0 or newer"), "{e}");
        let e = classify_error("NOMASTERLINK Can't SYNC while not connected with my master", "PSYNC", false);
        assert!(matches!(e, RdbError::Refused { .. }) && e.to_string().contains("not linked"), "{e}");
        assert!(matches!(
            classify_error("NOAUTH Authentication required.", "REPLCONF", true),
            RdbError::Auth(_)
        ));
        assert_eq!(
            parse_fullresync("+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 42").unwrap().1,
            42
        );
        assert!(parse_fullresync("+CONTINUE").is_err());
        assert!(parse_fullresync("+FULLRESYNC abc notanumber").is_err());
        let t = RdbError::Timeout { after: Duration::from_secs(30), phase: "streaming the snapshot" };
        assert_eq!(t.to_string(), "the node sent no data for 30s while streaming the snapshot");
    }

    #[test]
    fn a_snapshot_can_move_to_another_task() {
        fn send<T: Send + 'static>() {}
        send::<Snapshot>();
        send::<Verifier>();
        send::<RdbError>();
    }

    #[test]
    fn debug_never_shows_the_password() {
        let src = SnapshotSource {
            addr: "127.0.0.1:6379".parse().unwrap(),
            username: Some("replication"),
            password: Some("hunter2"),
            tls: None,
            io_timeout: Duration::from_secs(30),
        };
        let shown = format!("{src:?}");
        assert!(shown.contains("replication") && !shown.contains("hunter2"), "{shown}");
    }
}
