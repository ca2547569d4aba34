//! The three streams against fake servers in the shape of the CRI's: a
//! tungstenite server that checks what the client sends and answers on the
//! Kubernetes channels.

use std::io;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::channel::{message, LEGACY_CHANNEL, RESIZE, STATUS, STDERR, STDIN, STDOUT, V4_CHANNEL};
use super::*;

/// The server side of a test connection.
struct FakeServer {
    ws: WebSocketStream<TcpStream>,
}

impl FakeServer {
    /// Accepts one connection at `path` and completes the handshake,
    /// choosing `protocol`, which the client must have offered.
    // The handshake callback's error type is tungstenite's, an HTTP response.
    #[allow(clippy::result_large_err)]
    async fn accept(listener: TcpListener, path: &'static str, protocol: &'static str) -> Self {
        let (conn, _) = listener.accept().await.unwrap();
        let check = move |request: &Request, mut response: Response| {
            assert_eq!(request.uri().path(), path);
            let offered = request
                .headers()
                .get(SEC_WEBSOCKET_PROTOCOL)
                .expect("no subprotocols offered")
                .to_str()
                .unwrap();
            assert!(
                offered.split(',').any(|p| p.trim() == protocol),
                "{offered}"
            );
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
            Ok(response)
        };
        let ws = tokio_tungstenite::accept_hdr_async(conn, check)
            .await
            .unwrap();
        Self { ws }
    }

    async fn send(&mut self, channel: u8, data: &[u8]) {
        self.ws
            .send(Message::binary(message(channel, data)))
            .await
            .unwrap();
    }

    /// Ends the stream as the CRI's server does: a close, then waits for the
    /// client's reply and returns the messages it sent until then.
    async fn close(mut self) -> Vec<Vec<u8>> {
        self.ws.close(None).await.unwrap();
        self.read_to_end().await
    }

    /// The client's next binary message; `None` at end.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        while let Some(m) = self.ws.next().await {
            match m {
                Ok(Message::Binary(data)) => return Some(data.to_vec()),
                Ok(Message::Close(_)) => {}
                Ok(other) => panic!("client sent {other:?}"),
                Err(_) => return None,
            }
        }
        None
    }

    /// The binary messages the client sends until the connection ends.
    async fn read_to_end(&mut self) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        while let Some(m) = self.recv().await {
            seen.push(m);
        }
        seen
    }
}

async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("http://{addr}"))
}

/// Reads one stdin message, answers on stdout and stderr, sends a v4
/// status with an exit code, then closes.
#[tokio::test]
async fn exec_reads_channels_and_the_v4_exit_code() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/exec/tok", V4_CHANNEL).await;
        assert_eq!(s.recv().await.unwrap(), b"\x00hello\n");
        s.send(STDOUT, b"he").await;
        s.send(STDOUT, b"llo\n").await;
        s.send(STDERR, b"oops").await;
        s.send(
            STATUS,
            br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#,
        )
        .await;
        // Nothing more from the client.
        assert!(s.close().await.is_empty());
    });
    let out = exec(
        &format!("{base}/exec/tok"),
        Some(b"hello\n".to_vec()),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        ExecOutput {
            stdout: b"hello\n".to_vec(),
            stderr: b"oops".to_vec(),
            exit_code: 7,
        }
    );
    server.await.unwrap();
}

/// With a tty the client sends a terminal size first; under the legacy
/// protocol success is a status-less close.
#[tokio::test]
async fn exec_with_a_tty_and_the_legacy_protocol() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/exec/t2", LEGACY_CHANNEL).await;
        let resize = s.recv().await.unwrap();
        assert_eq!(resize[0], RESIZE);
        assert_eq!(&resize[1..], b"{\"Width\":80,\"Height\":24}");
        assert_eq!(s.recv().await.unwrap(), b"\x00x");
        s.send(STDOUT, b"ok\r\n").await;
        s.close().await
    });
    let out = exec(&format!("{base}/exec/t2"), Some(b"x".to_vec()), true)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"ok\r\n");
    assert_eq!(out.exit_code, 0);
    assert!(server.await.unwrap().is_empty());
}

#[tokio::test]
async fn exec_reads_a_legacy_exit_code() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/exec/t4", LEGACY_CHANNEL).await;
        s.send(
            STATUS,
            b"command terminated with non-zero exit code: error executing command [false], exit code 1",
        )
        .await;
        s.close().await
    });
    let out = exec(&format!("{base}/exec/t4"), None, false).await.unwrap();
    assert_eq!(out.exit_code, 1);
    server.await.unwrap();
}

#[tokio::test]
async fn exec_without_a_v4_status_is_an_error() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let s = FakeServer::accept(listener, "/exec/t3", V4_CHANNEL).await;
        s.close().await
    });
    let err = exec(&format!("{base}/exec/t3"), None, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    server.await.unwrap();
}

/// A command that cannot start has no exit code: the status's message
/// comes back as the error.
#[tokio::test]
async fn exec_reports_a_failure_status() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/exec/t5", V4_CHANNEL).await;
        s.send(
            STATUS,
            br#"{"metadata":{},"status":"Failure","message":"Internal error occurred: failed to start exec","reason":"InternalError","code":500}"#,
        )
        .await;
        s.close().await
    });
    let err = exec(&format!("{base}/exec/t5"), None, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Internal error occurred: failed to start exec"),
        "{err}"
    );
    server.await.unwrap();
}

/// A server that drops the connection without a close still ends the
/// stream, and the output so far counts.
#[tokio::test]
async fn exec_ends_when_the_connection_drops() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/exec/t6", V4_CHANNEL).await;
        s.send(STDOUT, b"partial").await;
        s.send(STATUS, br#"{"metadata":{},"status":"Success"}"#)
            .await;
        drop(s);
    });
    let out = exec(&format!("{base}/exec/t6"), None, false).await.unwrap();
    assert_eq!((out.stdout.as_slice(), out.exit_code), (&b"partial"[..], 0));
    server.await.unwrap();
}

/// Stdin larger than one message goes in several, none over the chunk size
/// and none fragmented, in order.
#[tokio::test]
async fn large_stdin_goes_in_chunks() {
    let input: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (listener, base) = listen().await;
    let want = input.clone();
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/exec/big", V4_CHANNEL).await;
        let mut got = Vec::new();
        let mut messages = 0;
        while got.len() < want.len() {
            let m = s.recv().await.unwrap();
            assert_eq!(m[0], STDIN);
            assert!(m.len() - 1 <= CHUNK, "{} bytes in one message", m.len() - 1);
            got.extend_from_slice(&m[1..]);
            messages += 1;
        }
        assert_eq!(got, want);
        assert_eq!(messages, want.len().div_ceil(CHUNK));
        s.send(STATUS, br#"{"metadata":{},"status":"Success"}"#)
            .await;
        s.close().await
    });
    let out = exec(&format!("{base}/exec/big"), Some(input), false)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    server.await.unwrap();
}

#[tokio::test]
async fn attach_collects_until_the_stream_ends() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/attach/a", V4_CHANNEL).await;
        assert_eq!(s.recv().await.unwrap(), b"\x00there\n");
        s.send(STDOUT, b"attached:there\n").await;
        s.send(STATUS, br#"{"metadata":{},"status":"Success"}"#)
            .await;
        s.close().await
    });
    let out = attach(
        &format!("{base}/attach/a"),
        Some(b"there\n".to_vec()),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        AttachOutput {
            stdout: b"attached:there\n".to_vec(),
            stderr: Vec::new(),
            finished: true,
            error: None,
        }
    );
    server.await.unwrap();
}

#[tokio::test]
async fn attach_reports_the_servers_failure() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/attach/c", V4_CHANNEL).await;
        s.send(STDERR, b"bye").await;
        s.send(
            STATUS,
            br#"{"metadata":{},"status":"Failure","message":"container not running","reason":"InternalError"}"#,
        )
        .await;
        s.close().await
    });
    let out = attach(&format!("{base}/attach/c"), None, false)
        .await
        .unwrap();
    assert!(out.finished);
    assert_eq!(out.stderr, b"bye");
    assert_eq!(out.error.as_deref(), Some("container not running"));
    server.await.unwrap();
}

#[tokio::test]
async fn attach_stops_at_its_deadline() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/attach/b", V4_CHANNEL).await;
        s.send(STDOUT, b"still running\n").await;
        s.read_to_end().await
    });
    let started = std::time::Instant::now();
    let out = attach_with_deadline(
        &format!("{base}/attach/b"),
        None,
        false,
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.stdout, b"still running\n");
    assert!(!out.finished);
    server.await.unwrap();
}

#[tokio::test]
async fn port_forward_strips_the_port_prefix() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/portforward/p", V4_CHANNEL).await;
        // The port comes first on the data and error channels, here split.
        let port = 7070u16.to_le_bytes();
        s.send(PORT_DATA, &port[..1]).await;
        s.send(PORT_DATA, &port[1..]).await;
        s.send(PORT_ERROR, &port).await;
        // What the client sends carries no port.
        assert_eq!(s.recv().await.unwrap(), b"\x00GET / HTTP/1.0\r\n\r\n");
        s.send(PORT_DATA, b"HTTP/1.0 200 OK\r\n").await;
        s.send(PORT_DATA, b"\r\nhi").await;
        s.close().await
    });
    let got = port_forward(
        &format!("{base}/portforward/p"),
        7070,
        b"GET / HTTP/1.0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(got, b"HTTP/1.0 200 OK\r\n\r\nhi");
    server.await.unwrap();
}

#[tokio::test]
async fn port_forward_reports_the_server_error() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/portforward/q", V4_CHANNEL).await;
        let port = 7071u16.to_le_bytes();
        s.send(PORT_DATA, &port).await;
        s.send(PORT_ERROR, &port).await;
        s.send(
            PORT_ERROR,
            b"error forwarding port 7071: connection refused",
        )
        .await;
        s.close().await
    });
    let err = port_forward(&format!("{base}/portforward/q"), 7071, b"")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection refused"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn port_forward_refuses_another_port() {
    let (listener, base) = listen().await;
    let server = tokio::spawn(async move {
        let mut s = FakeServer::accept(listener, "/portforward/r", V4_CHANNEL).await;
        s.send(PORT_DATA, &8080u16.to_le_bytes()).await;
        s.close().await
    });
    let err = port_forward(&format!("{base}/portforward/r"), 7070, b"")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    server.await.unwrap();
}

/// An expired token: the server answers 404 instead of upgrading.
#[tokio::test]
async fn a_refused_upgrade_is_an_error() {
    let (listener, base) = listen().await;
    let _server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut chunk = [0u8; 1024];
        let _ = conn.read(&mut chunk).await.unwrap();
        conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\n\r\n404 page not found\n")
            .await
            .unwrap();
    });
    let err = exec(&format!("{base}/exec/gone"), None, false)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("404"), "{text}");
    assert!(text.contains("page not found"), "{text}");
}

#[tokio::test]
async fn exec_times_out() {
    let (listener, base) = listen().await;
    let _server = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(conn);
    });
    let err = exec_with_timeout(
        &format!("{base}/exec/tok"),
        None,
        false,
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}
