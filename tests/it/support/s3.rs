//! A real S3-compatible server for the tests: moto's server mode (`moto_server`, from `PyPI`
//! `moto[server]`) run as a child process on 127.0.0.1, with raw HTTP helpers that create
//! buckets and inspect or damage objects behind the tool's back; and the tiny HTTP/1.1 client
//! and message reader that [`super::proxy`] shares.
//!
//! moto keeps its state in memory only: after [`S3Server::stop`] and [`S3Server::restart`]
//! the server is empty (no buckets).
//!
//! Two habits of moto (5.x) that the helpers work around:
//! - a request without an `Authorization` header is anonymous, and anonymous reads,
//!   overwrites and deletes of existing (private) objects get `403` with an empty body, so the
//!   helpers send a dummy `SigV4` header (moto does not check signatures by default);
//! - a body sent as `application/x-www-form-urlencoded` (curl's default) is parsed as a form
//!   and the object is stored empty, so the helpers send `application/octet-stream`.

use std::env;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long [`S3Server::start`] and [`S3Server::restart`] wait for moto to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The pause between two readiness probes.
const POLL: Duration = Duration::from_millis(50);

/// A dummy `SigV4` `Authorization` value for raw requests (moto only reads the access key
/// and region from it; see the module's notes on anonymous requests).
pub const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
    Credential=testing/20240101/us-east-1/s3/aws4_request, \
    SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000";

/// The shell wrapper that runs moto (`$0`, port `$1`): it kills moto (`SIGKILL`) as soon as
/// its standard input reaches end of file, which happens when the test process drops the
/// pipe or dies, so that no server outlives its test; it exits with moto's status.
const WRAPPER: &str = r#"exec 3<&0
"$0" -H 127.0.0.1 -p "$1" </dev/null 3<&- &
pid=$!
{ read -r _ <&3; kill -9 "$pid" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
kill "$watcher" 2>/dev/null
exit "$status""#;

// ----------------------------------------------------------------------------------------
// HTTP/1.1 messages
// ----------------------------------------------------------------------------------------

/// Which message [`read_head`] and [`read_body`] expect, which decides how a body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request: its body is chunked, has a `Content-Length`, or is empty.
    Request,
    /// A response; `to_head` when it answers a `HEAD` request (then it has no body).
    Response {
        /// The request was a `HEAD`.
        to_head: bool,
    },
}

/// How a message's body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (a request without length, a `HEAD` answer, `1xx`, `204`, `304`).
    None,
    /// `Content-Length` bytes.
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response that ends when the connection closes.
    Eof,
}

/// The head of an HTTP/1.1 message, parsed.
#[derive(Clone, Debug)]
pub struct Head {
    /// The request line or status line, without its line end.
    pub start_line: String,
    /// The header fields in order (names as sent, values trimmed).
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header `name` lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// A request's method (the start line's first word).
    pub fn method(&self) -> &str {
        self.start_line.split(' ').next().unwrap_or("")
    }

    /// A request's target (path and query, as sent).
    pub fn target(&self) -> &str {
        self.start_line.split(' ').nth(1).unwrap_or("")
    }

    /// A response's status code (0 when the status line does not parse).
    pub fn status(&self) -> u16 {
        self.start_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The connection ends after this message: `Connection: close`, or HTTP/1.0 without
    /// `Connection: keep-alive`.
    pub fn wants_close(&self) -> bool {
        self.has_token("Connection", "close")
            || (self.start_line.contains("HTTP/1.0") && !self.has_token("Connection", "keep-alive"))
    }
}

/// One whole HTTP/1.1 message.
#[derive(Clone, Debug)]
pub struct Message {
    /// Its head.
    pub head: Head,
    /// The body exactly as framed on the wire (chunk sizes and trailers included).
    pub raw_body: Vec<u8>,
    /// The body's content (chunk framing removed).
    pub body: Vec<u8>,
    /// How the body was delimited.
    pub framing: Framing,
}

impl Message {
    /// A response's status code.
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An `InvalidData` error.
fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads one line (through `\n`), appending its bytes to `raw`; returns it without the line
/// end. End of file before the line end is an error.
fn read_line<R: BufRead>(r: &mut R, raw: &mut Vec<u8>) -> io::Result<String> {
    let mut line = Vec::new();
    r.by_ref().take(64 * 1024).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside a line (or a line over 64 KiB)",
        ));
    }
    raw.extend_from_slice(&line);
    let text = String::from_utf8_lossy(&line);
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads a message head. `Ok(None)` when the connection ends cleanly before its first byte.
/// For a response, interim `1xx` heads (other than `101`) are skipped.
///
/// # Errors
/// Read errors, a connection closed inside the head, a head over 1 MiB.
pub fn read_head<R: BufRead>(r: &mut R, kind: Kind) -> io::Result<Option<Head>> {
    loop {
        let mut raw = Vec::new();
        // Blank lines before a request line are allowed (RFC 9112, 2.2).
        let start_line = loop {
            if r.fill_buf()?.is_empty() {
                if raw.is_empty() {
                    return Ok(None);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let line = read_line(r, &mut raw)?;
            if !line.is_empty() {
                break line;
            }
        };
        let mut headers = Vec::new();
        loop {
            let line = read_line(r, &mut raw)?;
            if line.is_empty() {
                break;
            }
            if raw.len() > 1 << 20 {
                return Err(invalid("message head over 1 MiB"));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let head = Head {
            start_line,
            headers,
        };
        let interim = matches!(kind, Kind::Response { .. })
            && (100..200).contains(&head.status())
            && head.status() != 101;
        if !interim {
            return Ok(Some(head));
        }
    }
}

/// Reads the body that follows `head`: returns it as framed on the wire, its content, and
/// its framing.
///
/// # Errors
/// Read errors, a connection closed inside the body, bad chunk sizes or lengths.
pub fn read_body<R: BufRead>(
    r: &mut R,
    head: &Head,
    kind: Kind,
) -> io::Result<(Vec<u8>, Vec<u8>, Framing)> {
    let no_body = match kind {
        Kind::Request => false,
        Kind::Response { to_head } => {
            let s = head.status();
            to_head || (100..200).contains(&s) || s == 204 || s == 304
        }
    };
    if no_body {
        return Ok((Vec::new(), Vec::new(), Framing::None));
    }
    if head.has_token("Transfer-Encoding", "chunked") {
        let mut raw = Vec::new();
        let mut body = Vec::new();
        read_chunked(r, &mut raw, &mut body)?;
        return Ok((raw, body, Framing::Chunked));
    }
    if let Some(len) = head.header("Content-Length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        return Ok((body.clone(), body, Framing::Length));
    }
    match kind {
        Kind::Request => Ok((Vec::new(), Vec::new(), Framing::None)),
        Kind::Response { .. } => {
            let mut body = Vec::new();
            r.read_to_end(&mut body)?;
            Ok((body.clone(), body, Framing::Eof))
        }
    }
}

/// Reads a chunked body: the wire bytes into `raw`, the content into `body`.
fn read_chunked<R: BufRead>(r: &mut R, raw: &mut Vec<u8>, body: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let line = read_line(r, raw)?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailer fields, up to the blank line.
            while !read_line(r, raw)?.is_empty() {}
            return Ok(());
        }
        let start = raw.len();
        raw.resize(start + size, 0);
        r.read_exact(&mut raw[start..])?;
        body.extend_from_slice(&raw[start..]);
        if !read_line(r, raw)?.is_empty() {
            return Err(invalid("chunk data longer than its size"));
        }
    }
}

/// Reads one whole message. `Ok(None)` when the connection ends cleanly before it.
///
/// # Errors
/// As [`read_head`] and [`read_body`].
pub fn read_message<R: BufRead>(r: &mut R, kind: Kind) -> io::Result<Option<Message>> {
    let Some(head) = read_head(r, kind)? else {
        return Ok(None);
    };
    let (raw_body, body, framing) = read_body(r, &head, kind)?;
    Ok(Some(Message {
        head,
        raw_body,
        body,
        framing,
    }))
}

/// The bytes of a request to `host`: the given headers, then `Content-Length` (unless the
/// headers already frame the body with `Content-Length` or `Transfer-Encoding`, in which case
/// `body` is sent as it is) and `Connection: close` unless `keep_alive`.
pub fn encode_request(
    host: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    let mut framed = false;
    for (n, v) in headers {
        framed |=
            n.eq_ignore_ascii_case("Content-Length") || n.eq_ignore_ascii_case("Transfer-Encoding");
        let _ = write!(out, "{n}: {v}\r\n");
    }
    if !framed && (!body.is_empty() || method == "PUT" || method == "POST") {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends one request to `127.0.0.1:port` on a fresh connection (see [`encode_request`];
/// `Connection: close`) and reads the whole response.
///
/// # Errors
/// Connection and timeout errors (2 s to connect, 30 s per read), framing errors, and
/// `UnexpectedEof` when the server closes without answering.
pub fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Message> {
    request_within(port, method, target, headers, body, Duration::from_secs(30))
}

/// [`request`] with `timeout` per read and write.
fn request_within(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Message> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let bytes = encode_request(
        &format!("127.0.0.1:{port}"),
        method,
        target,
        headers,
        body,
        false,
    );
    stream.write_all(&bytes)?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    read_message(
        &mut reader,
        Kind::Response {
            to_head: method == "HEAD",
        },
    )?
    .ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed without a response",
        )
    })
}

// ----------------------------------------------------------------------------------------
// S3 details: key encoding, XML scanning
// ----------------------------------------------------------------------------------------

/// Percent-encodes `s`, keeping the unreserved characters (`A-Z a-z 0-9 - _ . ~`) and, when
/// `keep_slash`, `/`.
fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An object key as a URL path (every byte but the unreserved ones and `/` percent-encoded).
pub fn encode_key(key: &str) -> String {
    percent_encode(key, true)
}

/// A query parameter value, percent-encoded (`/` too).
pub fn encode_query(value: &str) -> String {
    percent_encode(value, false)
}

/// The request target of an object: `/bucket/encoded-key`.
pub fn object_target(bucket: &str, key: &str) -> String {
    format!("/{bucket}/{}", encode_key(key))
}

/// The contents of every `<name>...</name>` element in `xml`, in order (not nested ones of
/// the same name; self-closing `<name/>` is skipped).
fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// The contents of the first `<name>` element in `xml`, unescaped.
pub fn xml_element(xml: &str, name: &str) -> Option<String> {
    elements(xml, name).first().map(|s| xml_unescape(s))
}

/// The S3 error code (`<Code>`) of an error response body.
pub fn error_code(body: &[u8]) -> Option<String> {
    xml_element(&String::from_utf8_lossy(body), "Code")
}

/// Resolves XML's five named entities and numeric character references.
fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        if let Some(c) = ch {
            out.push(c);
            rest = &rest[end + 1..];
        } else {
            out.push('&');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

// ----------------------------------------------------------------------------------------
// The server
// ----------------------------------------------------------------------------------------

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The `moto_server` executable: `$MOTO_SERVER`, else the first on `PATH`, else
/// `~/.local/bin` or pyenv's shims. Panics with install instructions when there is none.
fn moto_server_path() -> PathBuf {
    if let Some(p) = env::var_os("MOTO_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "MOTO_SERVER={} is not a file; install moto's server with `pip install 'moto[server]'`",
            p.display()
        );
        return p;
    }
    let home = env::var_os("HOME").map(PathBuf::from);
    let pyenv_root = env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".pyenv")));
    let candidates = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(home.map(|h| h.join(".local/bin")))
        .chain(pyenv_root.map(|r| r.join("shims")))
        .map(|d| d.join("moto_server"));
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    installed_moto()
}

/// Installs moto's server into a virtual environment under the build's scratch directory,
/// once (for a fresh machine with a Rust toolchain and Python, where nobody has run
/// `pip install 'moto[server]'`). Panics with instructions when that is impossible.
fn installed_moto() -> PathBuf {
    static INSTALLED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("moto-venv");
            let server = venv.join("bin/moto_server");
            if server.is_file() {
                return Ok(server);
            }
            let run = |cmd: &mut std::process::Command| -> Result<(), String> {
                let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{cmd:?} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ))
                }
            };
            run(std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv))?;
            run(std::process::Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "moto[server]",
            ]))?;
            if server.is_file() {
                Ok(server)
            } else {
                Err(format!("{} is missing after the install", server.display()))
            }
        })
        .clone()
        .unwrap_or_else(|e| {
            panic!(
                "moto_server not found (on PATH, in ~/.local/bin or pyenv's shims) and it could \
                 not be installed ({e}): the S3 tests run moto's server mode; install it with \
                 `pip install 'moto[server]'` (or set MOTO_SERVER to the executable)"
            )
        })
}

/// The last `n` lines of a file (for failure messages).
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How a start attempt failed.
enum StartError {
    /// moto exited: the port was taken meanwhile (worth another port).
    PortTaken,
    /// Anything else: the message for the panic.
    Other(String),
}

/// A moto S3 server on 127.0.0.1, killed (and waited for) on drop.
pub struct S3Server {
    /// The port it listens on (kept across [`S3Server::restart`]).
    port: u16,
    /// Holds the log file `moto.log` (moto's stdout and stderr).
    dir: tempfile::TempDir,
    /// The running wrapper (see [`WRAPPER`]); `None` when stopped.
    child: Option<Child>,
}

impl S3Server {
    /// Starts moto on a free port of 127.0.0.1 and waits (at most 20 s) until it answers.
    /// Panics when `moto_server` is missing or does not come up (with its log's tail).
    pub fn start() -> S3Server {
        let mut server = S3Server {
            port: 0,
            dir: tempfile::tempdir().expect("temp dir for moto's log"),
            child: None,
        };
        for attempt in 0.. {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(StartError::PortTaken) if attempt < 3 => {}
                Err(StartError::PortTaken) => server.fail("port taken 4 times in a row"),
                Err(StartError::Other(why)) => server.fail(&why),
            }
        }
        unreachable!()
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The environment that points an AWS client at this server: dummy credentials, region
    /// `us-east-1`, `AWS_ENDPOINT_URL`.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Kills the server (`SIGKILL`) and waits for it: it no longer accepts connections. Does
    /// nothing when it is already stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Closing the wrapper's stdin makes it kill moto and exit.
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// Stops the server if it runs and starts a new one on the same port, waiting until it
    /// answers. moto keeps its state in memory: the new server is empty (no buckets, no
    /// objects).
    pub fn restart(&mut self) {
        self.stop();
        match self.spawn_and_wait() {
            Ok(()) => {}
            Err(StartError::PortTaken) => self.fail("its port was taken while it was stopped"),
            Err(StartError::Other(why)) => self.fail(&why),
        }
    }

    /// Sends a request as an authenticated client (a dummy signature; see the module's
    /// notes), adding `Content-Type: application/octet-stream` to a `PUT`, a `POST` or a body
    /// unless `headers` name a type.
    /// Panics on connection errors.
    pub fn raw(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Message {
        let mut all: Vec<(&str, &str)> = vec![("Authorization", AUTHORIZATION)];
        let has_body = !body.is_empty() || method == "PUT" || method == "POST";
        if has_body
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
        {
            all.push(("Content-Type", "application/octet-stream"));
        }
        all.extend_from_slice(headers);
        request(self.port, method, target, &all, body)
            .unwrap_or_else(|e| panic!("{method} {target} to moto on port {}: {e}", self.port))
    }

    /// Creates a bucket (`PUT /name`); panics unless moto answers `200`. S3 bucket names have
    /// 3 to 63 characters.
    pub fn create_bucket(&self, name: &str) {
        let r = self.raw("PUT", &format!("/{name}"), &[], &[]);
        assert_eq!(r.status(), 200, "create bucket {name}: {}", r.text());
    }

    /// Every key under `prefix` with its size, in key order (`ListObjectsV2`, following
    /// continuation tokens). Panics unless the bucket exists.
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        self.list_keys_paged(bucket, prefix, 1000)
    }

    /// [`S3Server::list_keys`] with at most `page` keys a response (`max-keys`).
    pub fn list_keys_paged(&self, bucket: &str, prefix: &str, page: u32) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut target = format!(
                "/{bucket}?list-type=2&prefix={}&max-keys={page}",
                encode_query(prefix)
            );
            if let Some(t) = &token {
                let _ = write!(target, "&continuation-token={}", encode_query(t));
            }
            let r = self.raw("GET", &target, &[], &[]);
            assert_eq!(r.status(), 200, "list {bucket}/{prefix}: {}", r.text());
            let xml = r.text();
            for contents in elements(&xml, "Contents") {
                let key = xml_element(contents, "Key").expect("<Key> in <Contents>");
                let size = xml_element(contents, "Size")
                    .and_then(|s| s.parse().ok())
                    .expect("<Size> in <Contents>");
                out.push((key, size));
            }
            if xml_element(&xml, "IsTruncated").as_deref() != Some("true") {
                return out;
            }
            token = Some(
                xml_element(&xml, "NextContinuationToken")
                    .expect("a truncated listing has a NextContinuationToken"),
            );
        }
    }

    /// An object's bytes, `None` when it does not exist (`404`); panics on other answers.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = self.raw("GET", &object_target(bucket, key), &[], &[]);
        match r.status() {
            200 => Some(r.body),
            404 => None,
            s => panic!("GET {bucket}/{key}: {s} {}", r.text()),
        }
    }

    /// Writes an object (replacing any); panics unless `200`.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let r = self.raw("PUT", &object_target(bucket, key), &[], bytes);
        assert_eq!(r.status(), 200, "PUT {bucket}/{key}: {}", r.text());
    }

    /// Deletes an object (S3 answers `204` whether or not it existed); panics otherwise.
    pub fn delete(&self, bucket: &str, key: &str) {
        let r = self.raw("DELETE", &object_target(bucket, key), &[], &[]);
        assert!(
            r.status() == 204 || r.status() == 200,
            "DELETE {bucket}/{key}: {} {}",
            r.status(),
            r.text()
        );
    }

    /// The log file's path.
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("moto.log")
    }

    /// Panics with `why` and the log's tail, after stopping the server.
    fn fail(&mut self, why: &str) -> ! {
        self.stop();
        panic!(
            "moto_server on 127.0.0.1:{} did not start: {why}\n--- {} (tail) ---\n{}",
            self.port,
            self.log_path().display(),
            tail(&self.log_path(), 30)
        );
    }

    /// Spawns moto on `self.port` (through [`WRAPPER`]) and waits until it answers.
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let moto = moto_server_path();
        let logged_before = fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| StartError::Other(format!("open log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| StartError::Other(format!("clone log: {e}")))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg(&moto)
            .arg(self.port.to_string())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| StartError::Other(format!("spawn sh for {}: {e}", moto.display())))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let log = fs::read(self.log_path()).unwrap_or_default();
                let this_run = log.get(logged_before as usize..).unwrap_or_default();
                if String::from_utf8_lossy(this_run).contains("Address already in use") {
                    return Err(StartError::PortTaken);
                }
                return Err(StartError::Other(format!("it exited ({status})")));
            }
            if request_within(self.port, "GET", "/", &[], &[], Duration::from_secs(2)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(format!(
                    "no HTTP answer within {START_TIMEOUT:?}"
                )));
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
