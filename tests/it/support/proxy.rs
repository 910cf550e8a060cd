//! A fault-injecting HTTP/1.1 proxy for the S3 tests: it listens on 127.0.0.1 and forwards
//! each request to an upstream on 127.0.0.1 (never elsewhere), unless a fault set through
//! [`Proxy`] takes the request: an S3 error status, a dropped connection, a delay, or denied
//! deletes.
//!
//! Each client connection has a thread that reads one request at a time (head, then the body
//! by `Content-Length` or chunked, forwarded byte for byte), opens a fresh upstream connection
//! for it (`Connection: close`), reads the whole response and sends it back, keeping the
//! client's connection open unless the client asked to close it. `Expect: 100-continue` is
//! answered by the proxy itself and not forwarded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufReader, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::s3::{read_body, read_head, read_message, Framing, Head, Kind, Message};

/// A one-shot failure rule of [`Proxy::fail_matching`].
struct Rule {
    /// The method it applies to (`*`: any).
    method: String,
    /// A substring of the request target it applies to.
    path_contains: String,
    /// How many more requests it takes.
    remaining: usize,
    /// The status it answers.
    status: u16,
}

/// The faults waiting for requests.
#[derive(Default)]
struct Faults {
    /// Deny every `DELETE` and `POST ...?delete`.
    deny_deletes: bool,
    /// Requests still to close without an answer.
    drop_next: usize,
    /// Requests still to fail, and the status.
    fail_next: (usize, u16),
    /// Requests still to delay, and the delay.
    stall_next: (usize, Duration),
    /// The [`Proxy::fail_matching`] rules, oldest first.
    rules: Vec<Rule>,
}

/// What the proxy does with one request.
enum Action {
    /// Close the client connection without answering.
    Drop,
    /// Answer this status with an S3 error body.
    Fail(u16),
    /// Forward it, after this delay.
    Forward(Duration),
}

/// The sockets that [`Shared::stop`] shuts down, by id.
#[derive(Default)]
struct Sockets {
    /// The next id.
    next: u64,
    /// The open client and upstream connections.
    open: BTreeMap<u64, TcpStream>,
}

/// The state the handles and the threads share.
struct Shared {
    /// The proxy's own port.
    port: u16,
    /// The upstream port on 127.0.0.1.
    upstream: u16,
    /// Set once by [`Shared::stop`].
    stopping: AtomicBool,
    /// The faults.
    faults: Mutex<Faults>,
    /// Requests seen per method.
    counts: Mutex<BTreeMap<String, u64>>,
    /// Open connections.
    sockets: Mutex<Sockets>,
    /// The accepting thread.
    acceptor: Mutex<Option<JoinHandle<()>>>,
    /// The connection threads.
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// Locks a mutex, ignoring poisoning (a panicking worker must not wedge the proxy).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Registers a socket for shutdown on stop (shut down at once when already stopping).
    fn register(&self, s: &TcpStream) -> Option<u64> {
        let clone = s.try_clone().ok()?;
        let mut sockets = lock(&self.sockets);
        if self.stopping.load(Ordering::SeqCst) {
            let _ = clone.shutdown(Shutdown::Both);
            return None;
        }
        let id = sockets.next;
        sockets.next += 1;
        sockets.open.insert(id, clone);
        Some(id)
    }

    /// Forgets a registered socket.
    fn unregister(&self, id: Option<u64>) {
        if let Some(id) = id {
            lock(&self.sockets).open.remove(&id);
        }
    }

    /// Stops accepting, shuts every connection down and joins the threads.
    fn stop(&self) {
        {
            let _sockets = lock(&self.sockets);
            if self.stopping.swap(true, Ordering::SeqCst) {
                return;
            }
        }
        // Wake the acceptor, which then sees the flag and drops the listener.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        if let Some(h) = lock(&self.acceptor).take() {
            let _ = h.join();
        }
        for s in std::mem::take(&mut lock(&self.sockets).open).into_values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let workers = std::mem::take(&mut *lock(&self.workers));
        for h in workers {
            let _ = h.join();
        }
    }

    /// Sleeps `d`, cut short by a stop.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= end {
                return;
            }
            thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }

    /// Counts a request and decides its fate. Faults are tried in this order, and a one-shot
    /// fault is used up only by a request it takes: `drop_next`, `fail_matching` rules (oldest
    /// first), `fail_next`, `deny_deletes`, then `stall_next` delays a forwarded request.
    fn decide(&self, head: &Head) -> Action {
        *lock(&self.counts)
            .entry(head.method().to_string())
            .or_default() += 1;
        let mut f = lock(&self.faults);
        if f.drop_next > 0 {
            f.drop_next -= 1;
            return Action::Drop;
        }
        let (method, target) = (head.method(), head.target());
        if let Some(rule) = f.rules.iter_mut().find(|r| {
            r.remaining > 0
                && (r.method == "*" || r.method.eq_ignore_ascii_case(method))
                && target.contains(&r.path_contains)
        }) {
            rule.remaining -= 1;
            let status = rule.status;
            f.rules.retain(|r| r.remaining > 0);
            return Action::Fail(status);
        }
        if f.fail_next.0 > 0 {
            f.fail_next.0 -= 1;
            return Action::Fail(f.fail_next.1);
        }
        if f.deny_deletes && is_delete(method, target) {
            return Action::Fail(403);
        }
        if f.stall_next.0 > 0 {
            f.stall_next.0 -= 1;
            return Action::Forward(f.stall_next.1);
        }
        Action::Forward(Duration::ZERO)
    }
}

/// A `DELETE`, or a multi-object delete (`POST` with a `delete` query parameter).
fn is_delete(method: &str, target: &str) -> bool {
    method == "DELETE"
        || (method == "POST"
            && target
                .split_once('?')
                .is_some_and(|(_, q)| q.split('&').any(|p| p.split('=').next() == Some("delete"))))
}

/// The S3 error code, message and reason phrase the proxy uses for `status`.
fn s3_error(status: u16) -> (&'static str, &'static str, &'static str) {
    match status {
        400 => ("BadRequest", "Bad Request", "Bad Request"),
        403 => ("AccessDenied", "Access Denied", "Forbidden"),
        404 => (
            "NoSuchKey",
            "The specified key does not exist.",
            "Not Found",
        ),
        409 => (
            "OperationAborted",
            "A conflicting conditional operation is in progress.",
            "Conflict",
        ),
        412 => (
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            "Precondition Failed",
        ),
        500 => (
            "InternalError",
            "We encountered an internal error. Please try again.",
            "Internal Server Error",
        ),
        503 => (
            "SlowDown",
            "Please reduce your request rate.",
            "Service Unavailable",
        ),
        _ => (
            "InjectedFault",
            "Injected by the test proxy.",
            "Injected Fault",
        ),
    }
}

/// An S3 error response (no body for a `HEAD`, as S3 does).
fn error_response(status: u16, to_head: bool, keep_alive: bool) -> Vec<u8> {
    let (code, message, reason) = s3_error(status);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n\
         x-amz-request-id: TESTPROXY\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    if !to_head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Whether a header is hop-by-hop for the proxy (replaced, not forwarded).
fn hop_by_hop(name: &str) -> bool {
    ["Connection", "Keep-Alive", "Proxy-Connection", "Expect"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// A head rebuilt from its start line and headers, without hop-by-hop headers, plus `extra`.
fn rebuild_head(head: &Head, extra: &[String]) -> Vec<u8> {
    let mut out = format!("{}\r\n", head.start_line);
    for (n, v) in &head.headers {
        if !hop_by_hop(n) {
            let _ = write!(out, "{n}: {v}\r\n");
        }
    }
    for e in extra {
        out.push_str(e);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Sends a request upstream on a fresh connection and reads the whole response.
fn forward(shared: &Shared, req: &Message) -> io::Result<Message> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, shared.upstream));
    let mut up = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.set_write_timeout(Some(Duration::from_secs(60)))?;
    let id = shared.register(&up);
    let result = (|| {
        let mut bytes = rebuild_head(&req.head, &["Connection: close".to_string()]);
        bytes.extend_from_slice(&req.raw_body);
        up.write_all(&bytes)?;
        up.flush()?;
        let mut reader = BufReader::new(up.try_clone()?);
        read_message(
            &mut reader,
            Kind::Response {
                to_head: req.head.method() == "HEAD",
            },
        )?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed"))
    })();
    shared.unregister(id);
    result
}

/// Serves one client connection until it closes, asks to close, or a fault drops it.
fn serve(shared: &Shared, client: &TcpStream) {
    let id = shared.register(client);
    let _ = (|| -> io::Result<()> {
        let mut reader = BufReader::new(client.try_clone()?);
        let mut writer = client.try_clone()?;
        while let Some(head) = read_head(&mut reader, Kind::Request)? {
            if head.has_token("Expect", "100-continue") {
                writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            let (raw_body, body, framing) = read_body(&mut reader, &head, Kind::Request)?;
            let req = Message {
                head,
                raw_body,
                body,
                framing,
            };
            let keep_alive = !req.head.wants_close();
            let to_head = req.head.method() == "HEAD";
            match shared.decide(&req.head) {
                Action::Drop => break,
                Action::Fail(status) => {
                    writer.write_all(&error_response(status, to_head, keep_alive))?;
                }
                Action::Forward(delay) => {
                    shared.sleep(delay);
                    if shared.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    // An upstream that is down or fails mid-response: the client sees its
                    // connection close without an answer, as from a dead server.
                    let Ok(resp) = forward(shared, &req) else {
                        break;
                    };
                    let mut extra = Vec::new();
                    if resp.framing == Framing::Eof {
                        extra.push(format!("Content-Length: {}", resp.raw_body.len()));
                    }
                    let connection = if keep_alive { "keep-alive" } else { "close" };
                    extra.push(format!("Connection: {connection}"));
                    let mut bytes = rebuild_head(&resp.head, &extra);
                    bytes.extend_from_slice(&resp.raw_body);
                    writer.write_all(&bytes)?;
                }
            }
            writer.flush()?;
            if !keep_alive {
                break;
            }
        }
        Ok(())
    })();
    let _ = client.shutdown(Shutdown::Both);
    shared.unregister(id);
}

/// The accepting loop: one worker thread a connection, until stopped.
fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let s = Arc::clone(shared);
        let worker = thread::Builder::new()
            .name("s3-test-proxy-conn".into())
            .spawn(move || serve(&s, &stream))
            .expect("spawn a proxy connection thread");
        let mut workers = lock(&shared.workers);
        workers.retain(|h| !h.is_finished());
        workers.push(worker);
    }
}

/// Stops the proxy when the last [`Proxy`] handle goes.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A handle on a fault-injecting proxy in front of `127.0.0.1:upstream_port`. Clones share
/// the proxy; it stops (threads joined) when the last clone is dropped or on
/// [`Proxy::stop`].
#[derive(Clone)]
pub struct Proxy {
    /// The shared state.
    shared: Arc<Shared>,
    /// Stops the proxy when the last handle is dropped.
    _owner: Arc<Owner>,
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Proxy {
        assert_ne!(upstream_port, 0, "an upstream port");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            port,
            upstream: upstream_port,
            stopping: AtomicBool::new(false),
            faults: Mutex::new(Faults::default()),
            counts: Mutex::new(BTreeMap::new()),
            sockets: Mutex::new(Sockets::default()),
            acceptor: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("s3-test-proxy".into())
            .spawn(move || accept_loop(&s, &listener))
            .expect("spawn the proxy thread");
        *lock(&shared.acceptor) = Some(acceptor);
        Proxy {
            _owner: Arc::new(Owner(Arc::clone(&shared))),
            shared,
        }
    }

    /// The proxy's endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.port)
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// While on, every `DELETE` and every multi-object delete (`POST ...?delete`) gets `403
    /// AccessDenied` and is not forwarded.
    pub fn deny_deletes(&self, on: bool) {
        lock(&self.shared.faults).deny_deletes = on;
    }

    /// The next `n` requests get `status` with an S3 error body (`503`: `SlowDown`, `500`:
    /// `InternalError`, `403`: `AccessDenied`, ...) and are not forwarded. Replaces an earlier
    /// `fail_next`.
    pub fn fail_next(&self, n: usize, status: u16) {
        lock(&self.shared.faults).fail_next = (n, status);
    }

    /// The next `n` requests are read, then their connection is closed without an answer.
    pub fn drop_next(&self, n: usize) {
        lock(&self.shared.faults).drop_next = n;
    }

    /// The next `n` forwarded requests wait `d` before they go upstream. Replaces an earlier
    /// `stall_next`.
    pub fn stall_next(&self, n: usize, d: Duration) {
        lock(&self.shared.faults).stall_next = (n, d);
    }

    /// The next `n` requests with this method (`*`: any) whose target (path and query, as
    /// sent, so percent-encoded) contains `path_contains` get `status` as in
    /// [`Proxy::fail_next`]. Rules add up; the oldest matching one applies first.
    pub fn fail_matching(&self, method: &str, path_contains: &str, n: usize, status: u16) {
        if n > 0 {
            lock(&self.shared.faults).rules.push(Rule {
                method: method.to_string(),
                path_contains: path_contains.to_string(),
                remaining: n,
                status,
            });
        }
    }

    /// The requests seen per method (`GET`, `PUT`, `HEAD`, `DELETE`, `POST`, ...), faulted
    /// ones included, since the start or [`Proxy::reset_counts`].
    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.counts).clone()
    }

    /// Zeroes [`Proxy::counts`].
    pub fn reset_counts(&self) {
        lock(&self.shared.counts).clear();
    }

    /// Stops accepting connections, closes the open ones and joins the proxy's threads. The
    /// port then refuses connections. Idempotent.
    pub fn stop(&self) {
        self.shared.stop();
    }
}
