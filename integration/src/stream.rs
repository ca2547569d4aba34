//! A small client for the CRI streaming server: the URLs that `Exec`,
//! `Attach` and `PortForward` return. It speaks WebSocket (RFC 6455) with the
//! Kubernetes channel subprotocols, written here so the suite needs no
//! WebSocket or SPDY crate.
//!
//! What containerd 1.6's streaming server (`pkg/cri/streaming`, forked from
//! the kubelet's) does, and so what this client relies on:
//!
//! - The URL is `http://ADDR/{exec,attach,portforward}/TOKEN`. The token
//!   names the CRI request kept server-side, so every option (command, tty,
//!   stdin/stdout/stderr, ports) comes from that request; query parameters
//!   are ignored. A token works once, and expires after a minute unused.
//! - A request with `Upgrade: websocket` is served over WebSocket (anything
//!   else is taken for SPDY, which this client does not speak).
//! - Every WebSocket message is one binary frame whose first byte is a
//!   channel number. The server handles each frame it reads as a message of
//!   its own, so a client must not fragment its messages; this one never
//!   does (it reassembles fragmented messages it receives, though).
//!
//! Exec and attach (subprotocols `v4.channel.k8s.io`, `channel.k8s.io`, and
//! base64 variants this client does not offer): channel 0 is stdin, 1
//! stdout, 2 stderr, 3 the final status, 4 terminal resizes as JSON
//! `{"Width":W,"Height":H}`. Under v4 the status is a JSON `metav1.Status`:
//! `"status":"Success"`, or for an exit code `"reason":"NonZeroExitCode"`
//! with `details.causes[{"reason":"ExitCode","message":"N"}]`, or another
//! failure with a `message`. Under plain `channel.k8s.io` only failures are
//! written, as text. The server sends the status after the output has been
//! copied out, then closes the connection.
//!
//! Stdin cannot be closed on its own: channel numbers past 4 are ignored
//! (there is no `v5.channel.k8s.io` and its close message, channel 255), and
//! ending the WebSocket ends the whole stream. So a command given stdin must
//! not wait for end of input (read a line, or a known number of bytes). With
//! a tty, sending `\x04` (^D) at the start of a line gives the reader end of
//! file through the terminal.
//!
//! With a tty, ask for stdin too (`ExecRequest.stdin: true`, as
//! `kubectl exec -it` does): containerd 1.6 closes the exec's stdin at once
//! otherwise, and then most of a tty command's output is lost (seen on
//! 1.6.20: output arrived in 2 runs of 12 without stdin, 12 of 12 with it).
//! The terminal size sent first is applied just after the command starts, so
//! a command that asks at once may still see 0x0.
//!
//! A command that cannot be started (no such binary) has no exit code: the
//! status is an `InternalError`, which [`exec`] returns as an error.
//!
//! Attach: with `AttachRequest.stdin` false the server's stdin channel is at
//! end of file at once; for a container created with `stdin: true` that ends
//! the attach immediately (or, with `stdin_once`, closes the container's
//! stdin), so attach to such containers with `stdin: true`.
//!
//! Port-forward (subprotocol `v4.channel.k8s.io`; the SPDY protocol's name
//! `portforward.k8s.io` is not accepted over WebSocket): the ports are those
//! of `PortForwardRequest.port` (the `port` query parameter kubectl sends is
//! not read). Port number i uses channel 2i for data, both ways, and 2i+1 for
//! error text from the server; the first two bytes the server sends on each
//! of them are the port, as a little-endian u16. The server dials
//! `localhost:PORT` in the pod's network namespace when the stream opens,
//! copies both ways, and ends the stream about a second after the pod side
//! closes; a port nobody listens on is reported as error text. Data sent to
//! the server is not prefixed with the port.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long [`exec`] and [`port_forward`] wait, at most.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The subprotocols offered for exec and attach, best first.
pub const REMOTE_COMMAND_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "channel.k8s.io"];

/// The subprotocols offered for port-forward.
pub const PORT_FORWARD_PROTOCOLS: &[&str] = &["v4.channel.k8s.io"];

const V4_CHANNEL: &str = "v4.channel.k8s.io";

/// Remote-command channels.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;

/// How long [`attach`] waits before sending input.
const ATTACH_SETTLE: Duration = Duration::from_millis(200);

/// Bytes of stdin or port-forward data sent in one message.
const CHUNK: usize = 32 * 1024;

/// Frames larger than this are refused.
const MAX_FRAME: u64 = 64 << 20;

/// The handshake's response head must fit in this many bytes.
const MAX_HEAD: usize = 16 * 1024;

const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a command run by [`exec`] wrote, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    /// Empty with a tty: the terminal carries both streams on stdout.
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// What [`attach`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Whether the server ended the stream (the container exited, or the
    /// attach failed) before the deadline.
    pub finished: bool,
    /// The server's failure message, if it reported one.
    pub error: Option<String>,
}

/// Runs the exec at `url` (from `RuntimeService/Exec`), sending `stdin` (the
/// `ExecRequest` must have `stdin: true` for the command to see it), and
/// returns its output and exit code. `tty` must match the `ExecRequest`;
/// with a tty an 80x24 terminal size is sent first (and the request should
/// ask for stdin: see the module notes). Fails with
/// [`io::ErrorKind::TimedOut`] after [`DEFAULT_TIMEOUT`].
pub async fn exec(url: &str, stdin: Option<Vec<u8>>, tty: bool) -> io::Result<ExecOutput> {
    exec_with_timeout(url, stdin, tty, DEFAULT_TIMEOUT).await
}

/// [`exec`], giving up after `timeout`.
pub async fn exec_with_timeout(
    url: &str,
    stdin: Option<Vec<u8>>,
    tty: bool,
    timeout: Duration,
) -> io::Result<ExecOutput> {
    let run = async {
        let mut ws = WebSocket::connect(url, REMOTE_COMMAND_PROTOCOLS).await?;
        let v4 = ws.protocol() == Some(V4_CHANNEL);
        let sender = ws.sender();
        let write = send_input(sender, stdin, tty);
        let mut status = Vec::new();
        let mut out = ExecOutput::default();
        let read = async {
            while let Some(message) = ws.recv().await? {
                if let Message::Binary(data) = message {
                    match data.split_first() {
                        Some((&STDOUT, rest)) => out.stdout.extend_from_slice(rest),
                        Some((&STDERR, rest)) => out.stderr.extend_from_slice(rest),
                        Some((&STATUS, rest)) => status.extend_from_slice(rest),
                        _ => {}
                    }
                }
            }
            Ok::<_, io::Error>(())
        };
        read_while_writing(read, write).await?;
        if v4 && status.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the exec stream ended without a status",
            ));
        }
        let parsed = if v4 {
            exit_code_from_status(&status)
        } else {
            exit_code_from_legacy_status(&status)
        };
        out.exit_code = parsed.map_err(|message| io::Error::other(format!("exec: {message}")))?;
        Ok(out)
    };
    with_timeout(timeout, "exec", run).await
}

/// Attaches at `url` (from `RuntimeService/Attach`), sends `stdin`, and
/// collects output until the server ends the stream (the container exited)
/// or [`DEFAULT_TIMEOUT`] passes, whichever is first; it is no error for the
/// time to run out. `tty` must match the `AttachRequest`; with a tty an
/// 80x24 terminal size is sent first.
pub async fn attach(url: &str, stdin: Option<Vec<u8>>, tty: bool) -> io::Result<AttachOutput> {
    attach_with_deadline(url, stdin, tty, DEFAULT_TIMEOUT).await
}

/// [`attach`], collecting for at most `deadline`.
pub async fn attach_with_deadline(
    url: &str,
    stdin: Option<Vec<u8>>,
    tty: bool,
    deadline: Duration,
) -> io::Result<AttachOutput> {
    let until = Instant::now() + deadline;
    let mut ws = tokio::time::timeout_at(until, WebSocket::connect(url, REMOTE_COMMAND_PROTOCOLS))
        .await
        .map_err(|_| timed_out("attach"))??;
    let v4 = ws.protocol() == Some(V4_CHANNEL);
    let sender = ws.sender();
    let write = async move {
        // The server starts copying stdin into the container a moment before
        // it adds this stream to the container's output, so input sent at
        // once could be answered before anyone listens.
        tokio::time::sleep(ATTACH_SETTLE).await;
        send_input(sender, stdin, tty).await
    };
    let mut status = Vec::new();
    let mut out = AttachOutput::default();
    let read = async {
        loop {
            match tokio::time::timeout_at(until, ws.recv()).await {
                Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(Message::Binary(data)))) => match data.split_first() {
                    Some((&STDOUT, rest)) => out.stdout.extend_from_slice(rest),
                    Some((&STDERR, rest)) => out.stderr.extend_from_slice(rest),
                    Some((&STATUS, rest)) => status.extend_from_slice(rest),
                    _ => {}
                },
                Ok(Ok(Some(_))) => {}
            }
        }
        out.finished = true;
        Ok::<_, io::Error>(())
    };
    read_while_writing(read, write).await?;
    let parsed = if v4 {
        exit_code_from_status(&status)
    } else {
        exit_code_from_legacy_status(&status)
    };
    if out.finished && !status.is_empty() {
        out.error = match parsed {
            Ok(0) => None,
            Ok(code) => Some(format!("exit code {code}")),
            Err(message) => Some(message),
        };
    }
    Ok(out)
}

/// Forwards to `port` of the pod through the stream at `url` (from
/// `RuntimeService/PortForward` with `port: vec![port]`): sends `send`, then
/// returns what the pod sent back until the server ends the stream (the
/// pod's side closed) or [`DEFAULT_TIMEOUT`] passes. A failure the server
/// reports (nothing listening, say) is an error.
pub async fn port_forward(url: &str, port: u16, send: &[u8]) -> io::Result<Vec<u8>> {
    port_forward_with_timeout(url, port, send, DEFAULT_TIMEOUT).await
}

/// [`port_forward`], returning what came back when `deadline` passes if the
/// stream has not ended by then.
pub async fn port_forward_with_timeout(
    url: &str,
    port: u16,
    send: &[u8],
    deadline: Duration,
) -> io::Result<Vec<u8>> {
    let until = Instant::now() + deadline;
    let mut ws = tokio::time::timeout_at(until, WebSocket::connect(url, PORT_FORWARD_PROTOCOLS))
        .await
        .map_err(|_| timed_out("port-forward"))??;
    let sender = ws.sender();
    let payload = send.to_vec();
    let write = async move {
        for chunk in payload.chunks(CHUNK) {
            sender.send_channel(0, chunk).await?;
        }
        Ok(())
    };
    let mut data = PortPrefixed::default();
    let mut error = PortPrefixed::default();
    let read = async {
        loop {
            match tokio::time::timeout_at(until, ws.recv()).await {
                Err(_) | Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Some(Message::Binary(frame)))) => match frame.split_first() {
                    Some((&0, rest)) => data.push(rest),
                    Some((&1, rest)) => error.push(rest),
                    _ => {}
                },
                Ok(Ok(Some(_))) => {}
            }
        }
    };
    read_while_writing(read, write).await?;
    for channel in [&data, &error] {
        if let Some(p) = channel.port() {
            if p != port {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("port-forward: the server forwards port {p}, not {port}"),
                ));
            }
        }
    }
    if !error.body.is_empty() {
        return Err(io::Error::other(format!(
            "port-forward: {}",
            String::from_utf8_lossy(&error.body)
        )));
    }
    Ok(data.body)
}

/// A port-forward channel's bytes: the server's two-byte port prefix, then
/// the body.
#[derive(Default)]
struct PortPrefixed {
    prefix: Vec<u8>,
    body: Vec<u8>,
}

impl PortPrefixed {
    fn push(&mut self, mut bytes: &[u8]) {
        let want = 2 - self.prefix.len();
        let take = want.min(bytes.len());
        self.prefix.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        self.body.extend_from_slice(bytes);
    }

    fn port(&self) -> Option<u16> {
        (self.prefix.len() == 2).then(|| u16::from_le_bytes([self.prefix[0], self.prefix[1]]))
    }
}

/// Sends an initial terminal size (with a tty), then `stdin`.
async fn send_input(sender: Sender, stdin: Option<Vec<u8>>, tty: bool) -> io::Result<()> {
    if tty {
        sender.resize(80, 24).await?;
    }
    if let Some(stdin) = stdin {
        for chunk in stdin.chunks(CHUNK) {
            sender.send_channel(STDIN, chunk).await?;
        }
    }
    Ok(())
}

/// Runs `read` to its end while `write` makes progress alongside. A failed
/// write does not matter once the server stops reading: what it sends back
/// says how things went.
async fn read_while_writing(
    read: impl std::future::Future<Output = io::Result<()>>,
    write: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    tokio::pin!(read, write);
    let mut writing = true;
    loop {
        tokio::select! {
            result = &mut read => return result,
            _ = &mut write, if writing => writing = false,
        }
    }
}

async fn with_timeout<T>(
    timeout: Duration,
    what: &str,
    run: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| timed_out(what))?
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what}: timed out"))
}

/// The exit code in a v4 status (channel 3's JSON `metav1.Status`): 0 for
/// `Success`, N for a `NonZeroExitCode` failure, or the failure's message.
pub fn exit_code_from_status(status: &[u8]) -> Result<i32, String> {
    let value: serde_json::Value = serde_json::from_slice(status).map_err(|e| {
        format!(
            "unreadable status {:?}: {e}",
            String::from_utf8_lossy(status)
        )
    })?;
    if value["status"] == "Success" {
        return Ok(0);
    }
    if value["reason"] == "NonZeroExitCode" {
        let causes = value["details"]["causes"].as_array();
        let code = causes
            .into_iter()
            .flatten()
            .find(|cause| cause["reason"] == "ExitCode")
            .and_then(|cause| cause["message"].as_str())
            .and_then(|message| message.trim().parse().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(match value["message"].as_str() {
        Some(message) if !message.is_empty() => message.to_string(),
        _ => String::from_utf8_lossy(status).into_owned(),
    })
}

/// The exit code in a pre-v4 status: nothing for success, else the error's
/// text, which for an exit code ends "exit code N".
fn exit_code_from_legacy_status(status: &[u8]) -> Result<i32, String> {
    if status.is_empty() {
        return Ok(0);
    }
    let text = String::from_utf8_lossy(status);
    if text.starts_with("command terminated with non-zero exit code") {
        if let Some(code) = text
            .rsplit_once("exit code ")
            .and_then(|(_, n)| n.trim().parse().ok())
        {
            return Ok(code);
        }
    }
    Err(text.into_owned())
}

// ---- WebSocket ------------------------------------------------------------

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// One frame, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

/// `frame` on the wire, masked with `mask` if given (a client must mask).
pub fn encode_frame(frame: &Frame, mask: Option<[u8; 4]>) -> Vec<u8> {
    let len = frame.payload.len();
    let mut out = Vec::with_capacity(len + 14);
    out.push(if frame.fin { 0x80 } else { 0 } | frame.opcode as u8);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(
                frame
                    .payload
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[i % 4]),
            );
        }
        None => out.extend_from_slice(&frame.payload),
    }
    out
}

/// The first frame in `buf` and the bytes it took, or `None` if `buf` does
/// not yet hold a whole frame.
pub fn decode_frame(buf: &[u8]) -> io::Result<Option<(Frame, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(protocol_error("reserved bits set with no extension"));
    }
    let opcode =
        Opcode::from_u8(b0 & 0x0F).ok_or_else(|| protocol_error("unknown frame opcode"))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let mut at = 2;
    let len = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(at..at + 2) else {
                return Ok(None);
            };
            at += 2;
            u16::from_be_bytes([b[0], b[1]]) as u64
        }
        127 => {
            let Some(b) = buf.get(at..at + 8) else {
                return Ok(None);
            };
            at += 8;
            u64::from_be_bytes(b.try_into().expect("8 bytes"))
        }
        n => n as u64,
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(protocol_error("control frame fragmented or over 125 bytes"));
    }
    if len > MAX_FRAME {
        return Err(protocol_error("frame too large"));
    }
    let mask = if masked {
        let Some(b) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([b[0], b[1], b[2], b[3]])
    } else {
        None
    };
    let len = len as usize;
    let Some(body) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let payload = match mask {
        Some(key) => body
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect(),
        None => body.to_vec(),
    };
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        at + len,
    )))
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("websocket: {what}"))
}

/// A whole received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
}

/// A client WebSocket connection over plain TCP (`ws://`, or the `http://`
/// URLs the CRI hands out).
pub struct WebSocket {
    reader: OwnedReadHalf,
    buf: Vec<u8>,
    sender: Sender,
    protocol: Option<String>,
    /// A fragmented message being put together: its opcode and bytes so far.
    partial: Option<(Opcode, Vec<u8>)>,
    closed: bool,
}

/// The sending half of a [`WebSocket`], to use alongside receiving.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Mutex<SenderState>>,
}

struct SenderState {
    writer: OwnedWriteHalf,
    close_sent: bool,
}

impl Sender {
    /// Sends one unfragmented, masked frame.
    pub async fn send(&self, opcode: Opcode, payload: &[u8]) -> io::Result<()> {
        let mut state = self.inner.lock().await;
        if state.close_sent {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "websocket: already closed",
            ));
        }
        if opcode == Opcode::Close {
            state.close_sent = true;
        }
        let frame = Frame {
            fin: true,
            opcode,
            payload: payload.to_vec(),
        };
        let bytes = encode_frame(&frame, Some(random_bytes()));
        state.writer.write_all(&bytes).await?;
        state.writer.flush().await
    }

    /// Sends `data` as one binary message on a Kubernetes channel.
    pub async fn send_channel(&self, channel: u8, data: &[u8]) -> io::Result<()> {
        let mut message = Vec::with_capacity(data.len() + 1);
        message.push(channel);
        message.extend_from_slice(data);
        self.send(Opcode::Binary, &message).await
    }

    /// Sends a terminal size on the resize channel.
    pub async fn resize(&self, width: u16, height: u16) -> io::Result<()> {
        let size = format!("{{\"Width\":{width},\"Height\":{height}}}");
        self.send_channel(RESIZE, size.as_bytes()).await
    }

    /// Starts the closing handshake (status 1000), if not already started.
    pub async fn close(&self) -> io::Result<()> {
        if self.inner.lock().await.close_sent {
            return Ok(());
        }
        self.send(Opcode::Close, &1000u16.to_be_bytes()).await
    }
}

impl WebSocket {
    /// Connects to `url` (`http://` or `ws://`; TLS is not supported),
    /// offering `protocols` as subprotocols, best first.
    pub async fn connect(url: &str, protocols: &[&str]) -> io::Result<Self> {
        let target = Target::parse(url)?;
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = stream.into_split();

        let key = base64_encode(&random_bytes::<16>());
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            target.path, target.authority
        );
        if !protocols.is_empty() {
            request.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                protocols.join(", ")
            ));
        }
        request.push_str("\r\n");
        writer.write_all(request.as_bytes()).await?;
        writer.flush().await?;

        // Read the response head; bytes past it are already frames.
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            if buf.len() > MAX_HEAD {
                return Err(handshake_error("response head too long"));
            }
            let mut chunk = [0u8; 4096];
            let n = reader.read(&mut chunk).await?;
            if n == 0 {
                return Err(handshake_error(&format!(
                    "connection closed during the handshake: {:?}",
                    String::from_utf8_lossy(&buf)
                )));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let rest = buf[head_end + 4..].to_vec();
        let protocol = check_response(&head, &rest, &key, protocols)?;
        Ok(Self {
            reader,
            buf: rest,
            sender: Sender {
                inner: Arc::new(Mutex::new(SenderState {
                    writer,
                    close_sent: false,
                })),
            },
            protocol,
            partial: None,
            closed: false,
        })
    }

    /// The subprotocol the server chose, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// A handle to send with while receiving.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// The next whole message, or `None` once the connection has closed.
    /// Answers pings and the server's close as it goes.
    pub async fn recv(&mut self) -> io::Result<Option<Message>> {
        while !self.closed {
            let Some(frame) = self.next_frame().await? else {
                self.closed = true;
                break;
            };
            match frame.opcode {
                Opcode::Ping => {
                    // The peer may be gone already; the next read tells.
                    let _ = self.sender.send(Opcode::Pong, &frame.payload).await;
                }
                Opcode::Pong => {}
                Opcode::Close => {
                    self.closed = true;
                    let mut state = self.sender.inner.lock().await;
                    if !state.close_sent {
                        state.close_sent = true;
                        let code = frame.payload.get(..2).unwrap_or(&[0x03, 0xE8]);
                        let reply = Frame {
                            fin: true,
                            opcode: Opcode::Close,
                            payload: code.to_vec(),
                        };
                        let bytes = encode_frame(&reply, Some(random_bytes()));
                        let _ = state.writer.write_all(&bytes).await;
                    }
                    let _ = state.writer.shutdown().await;
                }
                Opcode::Text | Opcode::Binary => {
                    if self.partial.is_some() {
                        return Err(protocol_error("new message inside a fragmented one"));
                    }
                    if frame.fin {
                        return finish(frame.opcode, frame.payload).map(Some);
                    }
                    self.partial = Some((frame.opcode, frame.payload));
                }
                Opcode::Continuation => {
                    let Some((opcode, mut data)) = self.partial.take() else {
                        return Err(protocol_error("continuation with no message"));
                    };
                    data.extend_from_slice(&frame.payload);
                    if data.len() as u64 > MAX_FRAME {
                        return Err(protocol_error("message too large"));
                    }
                    if frame.fin {
                        return finish(opcode, data).map(Some);
                    }
                    self.partial = Some((opcode, data));
                }
            }
        }
        Ok(None)
    }

    /// The next frame, or `None` at end of stream between frames.
    async fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some((frame, used)) = decode_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.reader.read(&mut chunk).await?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "websocket: connection closed inside a frame",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn finish(opcode: Opcode, data: Vec<u8>) -> io::Result<Message> {
    match opcode {
        Opcode::Text => String::from_utf8(data)
            .map(Message::Text)
            .map_err(|_| protocol_error("text message is not UTF-8")),
        _ => Ok(Message::Binary(data)),
    }
}

/// Checks the server's `101` response and returns the chosen subprotocol.
fn check_response(
    head: &str,
    rest: &[u8],
    key: &str,
    offered: &[&str],
) -> io::Result<Option<String>> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "101" {
        return Err(handshake_error(&format!(
            "{status_line}: {}",
            String::from_utf8_lossy(rest).trim()
        )));
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut accept = None;
    let mut protocol = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
            "connection" => {
                connection = value
                    .split(',')
                    .any(|v| v.trim().eq_ignore_ascii_case("upgrade"))
            }
            "sec-websocket-accept" => accept = Some(value.to_string()),
            "sec-websocket-protocol" => protocol = Some(value.to_string()),
            _ => {}
        }
    }
    if !upgrade || !connection {
        return Err(handshake_error("response is not a websocket upgrade"));
    }
    if accept.as_deref() != Some(accept_key(key).as_str()) {
        return Err(handshake_error("wrong Sec-WebSocket-Accept"));
    }
    if let Some(p) = &protocol {
        if !offered.contains(&p.as_str()) {
            return Err(handshake_error(&format!(
                "server chose subprotocol {p:?}, which was not offered"
            )));
        }
    }
    Ok(protocol)
}

fn handshake_error(what: &str) -> io::Error {
    io::Error::other(format!("websocket handshake: {what}"))
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    base64_encode(&sha1(format!("{key}{WEBSOCKET_GUID}").as_bytes()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// Without brackets for IPv6.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: String,
    /// Path and query; `/` if empty.
    path: String,
}

impl Target {
    fn parse(url: &str) -> io::Result<Self> {
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("streaming URL {url:?}: {why}"),
            )
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => {}
            "https" | "wss" => return Err(bad("TLS is not supported")),
            _ => return Err(bad("unknown scheme")),
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => 80,
        };
        Ok(Self {
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path,
        })
    }
}

/// Unpredictable bytes, for the handshake key and frame masks.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // SAFETY: getrandom writes at most N bytes into the N-byte buffer.
    let n = unsafe { libc::getrandom(out.as_mut_ptr().cast(), N, 0) };
    if n != N as isize {
        // Masking only needs to vary; fall back on the clock.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for (i, b) in out.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    out
}

// ---- SHA-1 and base64, for the handshake only -------------------------------

/// SHA-1 (FIPS 180-4) of `data`.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// Standard base64 (RFC 4648), padded.
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_matches_known_digests() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        // Over one block, and a length of exactly one block.
        assert_eq!(
            hex(&sha1(&[b'a'; 1000])),
            "291e9a6c66994949b57ba5e650361e98fc36b1ba"
        );
        assert_eq!(
            hex(&sha1(&[b'a'; 64])),
            "0098ba824b5c16427bd7a1122a5a442a25ec644d"
        );
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(base64_encode(&[0xFF, 0xFE, 0xFD]), "//79");
    }

    #[test]
    fn accept_key_matches_rfc6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn round_trip(len: usize, mask: Option<[u8; 4]>, header: usize) {
        let frame = Frame {
            fin: true,
            opcode: Opcode::Binary,
            payload: (0..len).map(|i| (i * 7) as u8).collect(),
        };
        let bytes = encode_frame(&frame, mask);
        let mask_len = if mask.is_some() { 4 } else { 0 };
        assert_eq!(bytes.len(), header + mask_len + len, "length {len}");
        assert_eq!(bytes[1] & 0x80 != 0, mask.is_some());
        // Partial input is not a frame yet.
        assert_eq!(decode_frame(&bytes[..bytes.len() - 1]).unwrap(), None);
        assert_eq!(decode_frame(&bytes[..1]).unwrap(), None);
        let mut extra = bytes.clone();
        extra.extend_from_slice(&[0x81, 0x00]);
        let (decoded, used) = decode_frame(&extra).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(decoded, frame);
    }

    #[test]
    fn frames_round_trip_with_every_length_form() {
        let mask = Some([0x37, 0xfa, 0x21, 0x3d]);
        for (len, header) in [
            (0, 2),
            (5, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (70000, 10),
        ] {
            round_trip(len, mask, header);
            round_trip(len, None, header);
        }
    }

    #[test]
    fn frames_match_rfc6455_examples() {
        // A single-frame masked text message, "Hello" (RFC 6455 5.7).
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let hello = Frame {
            fin: true,
            opcode: Opcode::Text,
            payload: b"Hello".to_vec(),
        };
        assert_eq!(encode_frame(&hello, Some([0x37, 0xfa, 0x21, 0x3d])), masked);
        assert_eq!(decode_frame(&masked).unwrap(), Some((hello, masked.len())));
        // Its unmasked, fragmented form: "Hel" then "lo".
        let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let (frame, _) = decode_frame(&first).unwrap().unwrap();
        assert!(!frame.fin);
        assert_eq!(frame.opcode, Opcode::Text);
        let last = [0x80, 0x02, 0x6c, 0x6f];
        let (frame, _) = decode_frame(&last).unwrap().unwrap();
        assert!(frame.fin);
        assert_eq!(frame.opcode, Opcode::Continuation);
        // 256 bytes, unmasked: 16-bit length.
        let big = encode_frame(
            &Frame {
                fin: true,
                opcode: Opcode::Binary,
                payload: vec![0; 256],
            },
            None,
        );
        assert_eq!(big[..4], [0x82, 0x7E, 0x01, 0x00]);
        // 64 KiB, unmasked: 64-bit length.
        let huge = encode_frame(
            &Frame {
                fin: true,
                opcode: Opcode::Binary,
                payload: vec![0; 65536],
            },
            None,
        );
        assert_eq!(huge[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn bad_frames_are_refused() {
        // Reserved bit.
        assert!(decode_frame(&[0xC2, 0x00]).is_err());
        // Unknown opcode.
        assert!(decode_frame(&[0x83, 0x00]).is_err());
        // Fragmented ping; oversized close.
        assert!(decode_frame(&[0x09, 0x00]).is_err());
        assert!(decode_frame(&[0x88, 0x7E, 0x00, 0x80]).is_err());
        // Absurd length.
        assert!(decode_frame(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn v4_status_gives_the_exit_code() {
        assert_eq!(
            exit_code_from_status(br#"{"metadata":{},"status":"Success"}"#),
            Ok(0)
        );
        let failed = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(exit_code_from_status(failed), Ok(3));
        let internal = br#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: failed to exec in container: failed to start exec","reason":"InternalError","details":{"causes":[{"message":"error executing command in container"}]},"code":500}"#;
        let err = exit_code_from_status(internal).unwrap_err();
        assert!(err.starts_with("Internal error occurred"), "{err}");
        assert!(exit_code_from_status(b"not json").is_err());
    }

    #[test]
    fn legacy_status_gives_the_exit_code() {
        assert_eq!(exit_code_from_legacy_status(b""), Ok(0));
        assert_eq!(
            exit_code_from_legacy_status(
                b"command terminated with non-zero exit code: error executing command [false], exit code 1"
            ),
            Ok(1)
        );
        assert!(exit_code_from_legacy_status(b"Internal error occurred: boom").is_err());
    }

    #[test]
    fn urls_parse() {
        assert_eq!(
            Target::parse("http://127.0.0.1:35001/exec/AbC-d").unwrap(),
            Target {
                host: "127.0.0.1".into(),
                port: 35001,
                authority: "127.0.0.1:35001".into(),
                path: "/exec/AbC-d".into(),
            }
        );
        let v6 = Target::parse("ws://[::1]:8080?x=1").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8080));
        assert_eq!(v6.path, "/?x=1");
        assert_eq!(Target::parse("http://localhost").unwrap().port, 80);
        assert!(Target::parse("https://127.0.0.1:1/exec/x").is_err());
        assert!(Target::parse("127.0.0.1:1/exec/x").is_err());
    }

    #[test]
    fn port_prefix_is_split_across_frames() {
        let mut channel = PortPrefixed::default();
        channel.push(&[0x90]);
        assert_eq!(channel.port(), None);
        channel.push(&[0x1F, b'h', b'i']);
        channel.push(b"!");
        assert_eq!(channel.port(), Some(8080));
        assert_eq!(channel.body, b"hi!");
    }

    #[test]
    fn handshake_response_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: v4.channel.k8s.io";
        assert_eq!(
            check_response(good, b"", key, REMOTE_COMMAND_PROTOCOLS).unwrap(),
            Some("v4.channel.k8s.io".into())
        );
        assert!(check_response(good, b"", key, &["channel.k8s.io"]).is_err());
        let wrong = good.replace("s3pP", "s3pQ");
        assert!(check_response(&wrong, b"", key, REMOTE_COMMAND_PROTOCOLS).is_err());
        let missing = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain";
        let err = check_response(missing, b"404 page not found\n", key, &[]).unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
    }

    /// The server side of a test connection: the bytes read past the
    /// handshake so far.
    struct FakeServer {
        conn: TcpStream,
        rest: Vec<u8>,
    }

    impl FakeServer {
        /// Accepts one connection and completes the handshake, choosing
        /// `protocol`; `first` goes out in the same write as the response.
        async fn accept(
            listener: tokio::net::TcpListener,
            path: &str,
            protocol: &str,
            first: &[u8],
        ) -> Self {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while find(&buf, b"\r\n\r\n").is_none() {
                let n = conn.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let end = find(&buf, b"\r\n\r\n").unwrap();
            let head = String::from_utf8(buf[..end].to_vec()).unwrap();
            assert!(
                head.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
                "{head}"
            );
            assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
            assert!(head.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{head}");
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let offered = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Protocol: "))
                .unwrap();
            assert!(offered.split(", ").any(|p| p == protocol), "{offered}");
            let mut response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n",
                accept_key(key)
            )
            .into_bytes();
            response.extend_from_slice(first);
            conn.write_all(&response).await.unwrap();
            Self {
                conn,
                rest: buf[end + 4..].to_vec(),
            }
        }

        /// The client's next frame, which must be masked; `None` at end.
        async fn read_frame(&mut self) -> Option<Frame> {
            let mut chunk = [0u8; 1024];
            loop {
                if let Some((f, used)) = decode_frame(&self.rest).unwrap() {
                    assert!(self.rest[1] & 0x80 != 0, "client frame not masked");
                    self.rest.drain(..used);
                    return Some(f);
                }
                let n = self.conn.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return None;
                }
                self.rest.extend_from_slice(&chunk[..n]);
            }
        }

        /// The frames the client sends until it closes the connection.
        async fn read_to_end(&mut self) -> Vec<(Opcode, Vec<u8>)> {
            let mut seen = Vec::new();
            while let Some(f) = self.read_frame().await {
                seen.push((f.opcode, f.payload));
            }
            seen
        }
    }

    fn frame(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        encode_frame(
            &Frame {
                fin,
                opcode,
                payload: payload.to_vec(),
            },
            None,
        )
    }

    fn on(channel: u8, data: &[u8]) -> Vec<u8> {
        frame(true, Opcode::Binary, &[&[channel], data].concat())
    }

    fn close_frame() -> Vec<u8> {
        frame(true, Opcode::Close, &1000u16.to_be_bytes())
    }

    /// A server in the shape of the CRI's: reads one stdin message, answers
    /// in fragments with a ping among them, then a v4 status, then closes.
    #[tokio::test]
    async fn exec_against_a_fake_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // The head and the first frame in one write, as a server may.
            let mut s =
                FakeServer::accept(listener, "/exec/tok", "v4.channel.k8s.io", &on(STDOUT, b""))
                    .await;
            let stdin = s.read_frame().await.unwrap();
            assert_eq!(stdin.opcode, Opcode::Binary);
            assert_eq!(stdin.payload, b"\x00hello\n");
            let mut out = Vec::new();
            out.extend(frame(false, Opcode::Binary, b"\x01he"));
            out.extend(frame(true, Opcode::Ping, b"p"));
            out.extend(frame(true, Opcode::Continuation, b"llo\n"));
            out.extend(on(STDERR, b"oops"));
            out.extend(on(
                STATUS,
                br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#,
            ));
            out.extend(close_frame());
            s.conn.write_all(&out).await.unwrap();
            // The client answers the ping, then the close.
            assert_eq!(
                s.read_to_end().await,
                vec![
                    (Opcode::Pong, b"p".to_vec()),
                    (Opcode::Close, 1000u16.to_be_bytes().to_vec())
                ]
            );
        });
        let url = format!("http://{addr}/exec/tok");
        let out = exec(&url, Some(b"hello\n".to_vec()), false).await.unwrap();
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut s = FakeServer::accept(listener, "/exec/t2", "channel.k8s.io", b"").await;
            let resize = s.read_frame().await.unwrap();
            assert_eq!(resize.payload, b"\x04{\"Width\":80,\"Height\":24}");
            let mut out = on(STDOUT, b"ok\r\n");
            out.extend(close_frame());
            s.conn.write_all(&out).await.unwrap();
            s.read_to_end().await
        });
        let url = format!("http://{addr}/exec/t2");
        let out = exec(&url, None, true).await.unwrap();
        assert_eq!(out.stdout, b"ok\r\n");
        assert_eq!(out.exit_code, 0);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn exec_without_a_v4_status_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut s = FakeServer::accept(listener, "/exec/t3", "v4.channel.k8s.io", b"").await;
            s.conn.write_all(&close_frame()).await.unwrap();
            s.read_to_end().await
        });
        let err = exec(&format!("http://{addr}/exec/t3"), None, false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn attach_collects_until_the_stream_ends() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut s = FakeServer::accept(listener, "/attach/a", "v4.channel.k8s.io", b"").await;
            let stdin = s.read_frame().await.unwrap();
            assert_eq!(stdin.payload, b"\x00there\n");
            let mut out = on(STDOUT, b"attached:there\n");
            out.extend(on(STATUS, br#"{"metadata":{},"status":"Success"}"#));
            out.extend(close_frame());
            s.conn.write_all(&out).await.unwrap();
            s.read_to_end().await
        });
        let out = attach(
            &format!("http://{addr}/attach/a"),
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
    async fn attach_stops_at_its_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut s = FakeServer::accept(listener, "/attach/b", "v4.channel.k8s.io", b"").await;
            s.conn
                .write_all(&on(STDOUT, b"still running\n"))
                .await
                .unwrap();
            s.read_to_end().await
        });
        let out = attach_with_deadline(
            &format!("http://{addr}/attach/b"),
            None,
            false,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert_eq!(out.stdout, b"still running\n");
        assert!(!out.finished);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn port_forward_against_a_fake_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // The port comes first on the data and error channels.
            let port = 7070u16.to_le_bytes();
            let mut first = on(0, &port);
            first.extend(on(1, &port));
            let mut s =
                FakeServer::accept(listener, "/portforward/p", "v4.channel.k8s.io", &first).await;
            let data = s.read_frame().await.unwrap();
            assert_eq!(data.payload, b"\x00GET / HTTP/1.0\r\n\r\n");
            let mut out = on(0, b"HTTP/1.0 200 OK\r\n");
            out.extend(on(0, b"\r\nhi"));
            out.extend(close_frame());
            s.conn.write_all(&out).await.unwrap();
            s.read_to_end().await
        });
        let url = format!("http://{addr}/portforward/p");
        let got = port_forward(&url, 7070, b"GET / HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(got, b"HTTP/1.0 200 OK\r\n\r\nhi");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn port_forward_reports_the_server_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let port = 7071u16.to_le_bytes();
            let mut first = on(0, &port);
            first.extend(on(1, &port));
            first.extend(on(1, b"error forwarding port 7071: connection refused"));
            first.extend(close_frame());
            let mut s =
                FakeServer::accept(listener, "/portforward/q", "v4.channel.k8s.io", &first).await;
            s.read_to_end().await
        });
        let err = port_forward(&format!("http://{addr}/portforward/q"), 7071, b"")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_upgrade_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut chunk = [0u8; 1024];
            let _ = conn.read(&mut chunk).await.unwrap();
            conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\n\r\n404 page not found\n",
            )
            .await
            .unwrap();
        });
        let err = exec(&format!("http://{addr}/exec/gone"), None, false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
    }

    #[tokio::test]
    async fn exec_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(conn);
        });
        let url = format!("http://{addr}/exec/tok");
        let err = exec_with_timeout(&url, None, false, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
