//! A small client for the CRI streaming server: the URLs that `Exec`,
//! `Attach` and `PortForward` return. WebSocket (RFC 6455) is
//! tokio-tungstenite's ([`conn`]); what is written here is the Kubernetes
//! channel protocol on top ([`channel`]) and the three streams.
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
//!   its own, so a client must not fragment its messages (tungstenite
//!   never does).
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

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::time::Instant;

pub mod channel;
mod conn;
#[cfg(test)]
mod tests;

use channel::{PortPrefixed, Protocol, PORT_DATA, PORT_ERROR, STATUS, STDERR, STDIN, STDOUT};
pub use channel::{PORT_FORWARD_PROTOCOLS, REMOTE_COMMAND_PROTOCOLS};
use conn::{connect, Input};

/// How long [`exec`] and [`port_forward`] wait, at most.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`attach`] waits before sending input.
const ATTACH_SETTLE: Duration = Duration::from_millis(200);

/// Bytes of stdin or port-forward data sent in one message.
const CHUNK: usize = 32 * 1024;

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
        let (chosen, input, mut output) = connect(url, REMOTE_COMMAND_PROTOCOLS).await?;
        let protocol = Protocol::negotiated(chosen.as_deref());
        let write = send_input(input, stdin, tty);
        let mut status = Vec::new();
        let mut out = ExecOutput::default();
        let read = async {
            while let Some((channel, data)) = output.next().await? {
                match channel {
                    STDOUT => out.stdout.extend_from_slice(&data),
                    STDERR => out.stderr.extend_from_slice(&data),
                    STATUS => status.extend_from_slice(&data),
                    _ => {}
                }
            }
            Ok::<_, io::Error>(())
        };
        read_while_writing(read, write).await?;
        if protocol == Protocol::V4 && status.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the exec stream ended without a status",
            ));
        }
        out.exit_code = protocol
            .exit_code(&status)
            .map_err(|message| io::Error::other(format!("exec: {message}")))?;
        Ok(out)
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| timed_out("exec"))?
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
    let (chosen, input, mut output) =
        tokio::time::timeout_at(until, connect(url, REMOTE_COMMAND_PROTOCOLS))
            .await
            .map_err(|_| timed_out("attach"))??;
    let protocol = Protocol::negotiated(chosen.as_deref());
    let write = async move {
        // The server starts copying stdin into the container a moment before
        // it adds this stream to the container's output, so input sent at
        // once could be answered before anyone listens.
        tokio::time::sleep(ATTACH_SETTLE).await;
        send_input(input, stdin, tty).await
    };
    let mut status = Vec::new();
    let mut out = AttachOutput::default();
    let read = async {
        loop {
            match tokio::time::timeout_at(until, output.next()).await {
                Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) => break,
                Ok(Ok(Some((channel, data)))) => match channel {
                    STDOUT => out.stdout.extend_from_slice(&data),
                    STDERR => out.stderr.extend_from_slice(&data),
                    STATUS => status.extend_from_slice(&data),
                    _ => {}
                },
            }
        }
        out.finished = true;
        Ok::<_, io::Error>(())
    };
    read_while_writing(read, write).await?;
    if out.finished && !status.is_empty() {
        out.error = match protocol.exit_code(&status) {
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
    let (_, mut input, mut output) =
        tokio::time::timeout_at(until, connect(url, PORT_FORWARD_PROTOCOLS))
            .await
            .map_err(|_| timed_out("port-forward"))??;
    let payload = send.to_vec();
    let write = async move {
        for chunk in payload.chunks(CHUNK) {
            input.send(PORT_DATA, chunk).await?;
        }
        Ok(())
    };
    let mut data = PortPrefixed::default();
    let mut error = PortPrefixed::default();
    let read = async {
        loop {
            match tokio::time::timeout_at(until, output.next()).await {
                Err(_) | Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Some((PORT_DATA, bytes)))) => data.push(&bytes),
                Ok(Ok(Some((PORT_ERROR, bytes)))) => error.push(&bytes),
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

/// Sends an initial terminal size (with a tty), then `stdin`.
async fn send_input(mut input: Input, stdin: Option<Vec<u8>>, tty: bool) -> io::Result<()> {
    if tty {
        input.resize(80, 24).await?;
    }
    if let Some(stdin) = stdin {
        for chunk in stdin.chunks(CHUNK) {
            input.send(STDIN, chunk).await?;
        }
    }
    Ok(())
}

/// Runs `read` to its end while `write` makes progress alongside. A failed
/// write does not matter once the server stops reading: what it sends back
/// says how things went.
async fn read_while_writing(
    read: impl Future<Output = io::Result<()>>,
    write: impl Future<Output = io::Result<()>>,
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

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what}: timed out"))
}
