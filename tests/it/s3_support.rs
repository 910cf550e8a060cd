//! Self-tests of the S3 test harness (`support::s3`, `support::proxy`) against a real moto
//! server: the raw helpers, stop and restart, and each fault of the proxy.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::proxy::Proxy;
use crate::support::s3::{
    encode_key, encode_request, error_code, object_target, read_message, request, Framing, Kind,
    S3Server, AUTHORIZATION,
};

/// Keys shaped like the tool's: prefixes, hex, dots and dashes, plus characters that need
/// percent-encoding.
const KEYS: [&str; 5] = [
    "repo/objects/ab/abcdef0123456789.blob",
    "repo/objects/ff/ff00-part.1",
    "repo/meta/backup-2024-01-01.json",
    "repo/odd key+&=%~.bin",
    "other/x",
];

#[test]
fn raw_helpers_round_trip() {
    let s3 = S3Server::start();
    assert_eq!(s3.endpoint(), format!("http://127.0.0.1:{}", s3.port()));
    let env = s3.env();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("AWS_ACCESS_KEY_ID"), Some("testing"));
    assert_eq!(get("AWS_SECRET_ACCESS_KEY"), Some("testing"));
    assert_eq!(get("AWS_REGION"), Some("us-east-1"));
    assert_eq!(get("AWS_ENDPOINT_URL"), Some(s3.endpoint().as_str()));

    s3.create_bucket("bkt");
    let all_bytes: Vec<u8> = (0..=255).collect();
    for (i, k) in KEYS.iter().enumerate() {
        s3.put("bkt", k, &all_bytes[..i * 50]);
    }
    assert_eq!(
        encode_key("repo/odd key+&=%~.bin"),
        "repo/odd%20key%2B%26%3D%25~.bin"
    );
    assert_eq!(s3.get("bkt", KEYS[3]).unwrap(), &all_bytes[..150]);
    assert_eq!(s3.get("bkt", KEYS[0]).unwrap(), b"");
    assert_eq!(s3.get("bkt", "repo/missing"), None);

    let mut expected: Vec<(String, u64)> = KEYS[..4]
        .iter()
        .enumerate()
        .map(|(i, k)| ((*k).to_string(), i as u64 * 50))
        .collect();
    expected.sort();
    assert_eq!(s3.list_keys("bkt", "repo/"), expected);
    // Continuation tokens: two keys a page.
    assert_eq!(s3.list_keys_paged("bkt", "repo/", 2), expected);
    assert_eq!(s3.list_keys("bkt", "repo/objects/ff/").len(), 1);
    assert_eq!(s3.list_keys("bkt", "none/"), vec![]);

    // Overwrite, then delete (twice: S3 deletes are idempotent).
    s3.put("bkt", KEYS[1], b"damaged");
    assert_eq!(s3.get("bkt", KEYS[1]).unwrap(), b"damaged");
    s3.delete("bkt", KEYS[1]);
    s3.delete("bkt", KEYS[1]);
    assert_eq!(s3.get("bkt", KEYS[1]), None);
    assert_eq!(s3.list_keys("bkt", "").len(), 4);
}

#[test]
fn stop_and_restart_on_the_same_port_loses_state() {
    let mut s3 = S3Server::start();
    let port = s3.port();
    s3.create_bucket("keep");
    s3.put("keep", "k", b"v");
    s3.stop();
    assert!(request(port, "GET", "/", &[], &[]).is_err(), "stopped");
    s3.stop(); // idempotent
    s3.restart();
    assert_eq!(s3.port(), port);
    let r = s3.raw("GET", "/keep?list-type=2", &[], &[]);
    assert_eq!(r.status(), 404, "moto's state is in memory only");
    assert_eq!(error_code(&r.body).as_deref(), Some("NoSuchBucket"));
}

#[test]
fn moto_refuses_create_only_overwrite() {
    let s3 = S3Server::start();
    s3.create_bucket("cond");
    let target = object_target("cond", "only/once");
    let create_only = [("If-None-Match", "*")];
    let first = s3.raw("PUT", &target, &create_only, b"first");
    assert_eq!(first.status(), 200, "{}", first.text());
    let second = s3.raw("PUT", &target, &create_only, b"second");
    assert_eq!(second.status(), 412, "{}", second.text());
    assert_eq!(
        error_code(&second.body).as_deref(),
        Some("PreconditionFailed")
    );
    assert_eq!(s3.get("cond", "only/once").unwrap(), b"first");
    // Without the header the overwrite goes through.
    s3.put("cond", "only/once", b"third");
    assert_eq!(s3.get("cond", "only/once").unwrap(), b"third");
}

/// A request through the proxy, as an authenticated client (see `S3Server::raw`).
fn via(
    proxy: &Proxy,
    method: &str,
    target: &str,
    body: &[u8],
) -> std::io::Result<crate::support::s3::Message> {
    let auth = AUTHORIZATION;
    request(
        proxy.port(),
        method,
        target,
        &[
            ("Authorization", auth),
            ("Content-Type", "application/octet-stream"),
        ],
        body,
    )
}

#[test]
fn proxy_injects_faults() {
    let s3 = S3Server::start();
    s3.create_bucket("prx");
    let proxy = Proxy::start(s3.port());
    assert_eq!(
        proxy.endpoint(),
        format!("http://127.0.0.1:{}", proxy.port())
    );
    let obj = object_target("prx", "a/b.bin");

    // Plain forwarding.
    assert_eq!(via(&proxy, "PUT", &obj, b"hello").unwrap().status(), 200);
    let r = via(&proxy, "GET", &obj, b"").unwrap();
    assert_eq!((r.status(), r.body.as_slice()), (200, &b"hello"[..]));

    // 503 SlowDown, then normal again.
    proxy.fail_next(1, 503);
    let r = via(&proxy, "GET", &obj, b"").unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(&r.body).as_deref(), Some("SlowDown"));
    assert_eq!(via(&proxy, "GET", &obj, b"").unwrap().status(), 200);
    proxy.fail_next(1, 500);
    let r = via(&proxy, "HEAD", &obj, b"").unwrap();
    assert_eq!(
        (r.status(), r.body.len()),
        (500, 0),
        "HEAD errors have no body"
    );

    // Denied deletes: single and multi-object; the object stays.
    proxy.deny_deletes(true);
    let r = via(&proxy, "DELETE", &obj, b"").unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    );
    let multi = b"<Delete><Object><Key>a/b.bin</Key></Object></Delete>";
    assert_eq!(
        via(&proxy, "POST", "/prx?delete", multi).unwrap().status(),
        403
    );
    assert_eq!(
        via(&proxy, "POST", "/prx?delete=", multi).unwrap().status(),
        403
    );
    assert_eq!(s3.get("prx", "a/b.bin").unwrap(), b"hello");
    proxy.deny_deletes(false);

    // A dropped request: read, then the connection closes without an answer.
    proxy.drop_next(1);
    let e = via(&proxy, "PUT", &obj, b"lost").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    assert_eq!(s3.get("prx", "a/b.bin").unwrap(), b"hello", "not forwarded");

    // Matching failures take only their requests.
    proxy.fail_matching("PUT", "/prx/c", 1, 500);
    let c = object_target("prx", "c");
    assert_eq!(via(&proxy, "PUT", &obj, b"x").unwrap().status(), 200);
    let r = via(&proxy, "PUT", &c, b"x").unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(error_code(&r.body).as_deref(), Some("InternalError"));
    assert_eq!(via(&proxy, "PUT", &c, b"x").unwrap().status(), 200);

    // Stalls delay.
    proxy.stall_next(1, Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(via(&proxy, "GET", &c, b"").unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Deletes pass once allowed.
    proxy.reset_counts();
    assert_eq!(via(&proxy, "DELETE", &c, b"").unwrap().status(), 204);
    assert_eq!(via(&proxy, "HEAD", &obj, b"").unwrap().status(), 200);
    assert_eq!(via(&proxy, "HEAD", &c, b"").unwrap().status(), 404);
    let counts = proxy.counts();
    assert_eq!(counts.get("DELETE"), Some(&1));
    assert_eq!(counts.get("HEAD"), Some(&2));
    assert_eq!(counts.get("GET"), None);

    // Stop through a clone: the port refuses connections.
    let other = proxy.clone();
    other.stop();
    assert!(via(&proxy, "GET", &obj, b"").is_err());
}

#[test]
fn proxy_forwards_chunked_bodies_and_keeps_connections() {
    let s3 = S3Server::start();
    s3.create_bucket("chk");
    let proxy = Proxy::start(s3.port());
    let auth = AUTHORIZATION;
    let host = format!("127.0.0.1:{}", proxy.port());
    let mut conn = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let response = |reader: &mut BufReader<TcpStream>, to_head| {
        read_message(reader, Kind::Response { to_head })
            .unwrap()
            .expect("a response")
    };

    // A chunked PUT on a kept-alive connection (no chunk extensions or trailers: moto's
    // server, Werkzeug's, answers 500 to those).
    let chunked = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
    let headers = [
        ("Authorization", auth),
        ("Content-Type", "application/octet-stream"),
        ("Transfer-Encoding", "chunked"),
    ];
    let put = encode_request(&host, "PUT", "/chk/c/1", &headers, chunked, true);
    conn.write_all(&put).unwrap();
    let r = response(&mut reader, false);
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(r.header("Connection"), Some("keep-alive"));

    // Same connection: an Expect: 100-continue PUT, a failure, then a HEAD and a GET.
    let expect = [
        ("Authorization", auth),
        ("Content-Type", "application/octet-stream"),
        ("Expect", "100-continue"),
    ];
    let put = encode_request(&host, "PUT", "/chk/c/2", &expect, b"two", true);
    conn.write_all(&put).unwrap();
    assert_eq!(response(&mut reader, false).status(), 200);
    proxy.fail_next(1, 503);
    let get = encode_request(
        &host,
        "GET",
        "/chk/c/1",
        &[("Authorization", auth)],
        b"",
        true,
    );
    conn.write_all(&get).unwrap();
    assert_eq!(response(&mut reader, false).status(), 503);
    let head = encode_request(
        &host,
        "HEAD",
        "/chk/c/1",
        &[("Authorization", auth)],
        b"",
        true,
    );
    conn.write_all(&head).unwrap();
    let r = response(&mut reader, true);
    assert_eq!((r.status(), r.header("Content-Length")), (200, Some("12")));
    let get = encode_request(
        &host,
        "GET",
        "/chk/c/1",
        &[("Authorization", auth)],
        b"",
        false,
    );
    conn.write_all(&get).unwrap();
    let r = response(&mut reader, false);
    assert_eq!(r.body, b"hello, world");
    assert_ne!(r.framing, Framing::None);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(read_message(&mut reader, Kind::Response { to_head: false })
        .unwrap()
        .is_none());

    assert_eq!(s3.get("chk", "c/1").unwrap(), b"hello, world");
    assert_eq!(s3.get("chk", "c/2").unwrap(), b"two");
    let counts = proxy.counts();
    assert_eq!(
        (counts["PUT"], counts["GET"], counts["HEAD"]),
        (2, 2, 1),
        "{counts:?}"
    );
}

#[test]
fn proxy_closes_when_upstream_is_down() {
    let mut s3 = S3Server::start();
    s3.create_bucket("down");
    let proxy = Proxy::start(s3.port());
    s3.stop();
    let e = via(&proxy, "GET", "/down?list-type=2", b"").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    s3.restart();
    let r = via(&proxy, "GET", "/down?list-type=2", b"").unwrap();
    assert_eq!(r.status(), 404, "a new, empty server");
}

#[test]
fn reader_keeps_chunk_framing_byte_exact() {
    let wire = b"PUT /b/k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n\
                 GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut r = &wire[..];
    let m = read_message(&mut r, Kind::Request).unwrap().unwrap();
    assert_eq!((m.head.method(), m.head.target()), ("PUT", "/b/k"));
    assert_eq!(m.framing, Framing::Chunked);
    assert_eq!(m.body, b"hello, world");
    assert_eq!(
        m.raw_body,
        &b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"[..]
    );
    let m = read_message(&mut r, Kind::Request).unwrap().unwrap();
    assert_eq!((m.head.method(), m.framing), ("GET", Framing::None));
    assert!(read_message(&mut r, Kind::Request).unwrap().is_none());
}
