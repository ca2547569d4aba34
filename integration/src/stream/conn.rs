//! The WebSocket connection under a stream: tokio-tungstenite over plain TCP
//! (the CRI streaming server listens on loopback without TLS), split into an
//! input half that sends channel messages and an output half that yields
//! them.

use std::io;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::channel;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `url` (`http://` as the CRI hands it out, or `ws://`),
/// offering `protocols` as subprotocols, best first. Returns the one the
/// server chose and the two halves of the connection.
pub async fn connect(url: &str, protocols: &[&str]) -> io::Result<(Option<String>, Input, Output)> {
    let mut request = ws_url(url)?.into_client_request().map_err(ws_error)?;
    let offered = HeaderValue::from_str(&protocols.join(", "))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    request
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, offered);
    // Nagle off: stdin and resizes are small messages that must go at once.
    let (ws, response) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(ws_error)?;
    let chosen = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (sink, stream) = ws.split();
    Ok((chosen, Input(sink), Output(stream)))
}

/// The sending half.
pub struct Input(SplitSink<Ws, Message>);

impl Input {
    /// Sends `data` as one message on `channel`. The server takes every frame
    /// for a message of its own; tungstenite never fragments what it sends.
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> io::Result<()> {
        self.send_raw(channel::message(channel, data)).await
    }

    /// Sends a terminal size.
    pub async fn resize(&mut self, width: u16, height: u16) -> io::Result<()> {
        self.send_raw(channel::resize(width, height)).await
    }

    async fn send_raw(&mut self, message: Vec<u8>) -> io::Result<()> {
        self.0
            .send(Message::binary(message))
            .await
            .map_err(ws_error)
    }
}

/// The receiving half.
pub struct Output(SplitStream<Ws>);

impl Output {
    /// The next channel message: its channel and bytes; `None` once the
    /// server has ended the stream (with a close, even if it writes after
    /// it, or by closing the connection between messages). Pings and the close are answered by
    /// tungstenite as it reads.
    pub async fn next(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        loop {
            match self.0.next().await {
                None => return Ok(None),
                Some(Ok(Message::Binary(data))) => {
                    if let Some((&channel, rest)) = data.split_first() {
                        return Ok(Some((channel, rest.to_vec())));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                    return Ok(None)
                }
                // The server's close frame came first: the stream has ended,
                // and what follows it is to be discarded (RFC 6455 5.5.1).
                // containerd's stream server sometimes writes after its close.
                Some(Err(Error::Protocol(ProtocolError::ReceivedAfterClosing))) => return Ok(None),
                Some(Err(e)) => return Err(ws_error(e)),
            }
        }
    }
}

/// The `ws://` URL for a streaming URL: containerd hands out `http://`.
fn ws_url(url: &str) -> io::Result<String> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("streaming URL {url:?}: {why}"),
        )
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Ok(format!("ws://{rest}")),
        "https" | "wss" => Err(bad("TLS is not supported")),
        _ => Err(bad("unknown scheme")),
    }
}

/// An I/O error for a WebSocket one: I/O errors as they are, a refused
/// upgrade with the server's status and body.
fn ws_error(e: Error) -> io::Error {
    match e {
        Error::Io(e) => e,
        Error::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            io::Error::other(format!(
                "websocket handshake: {}: {}",
                response.status(),
                String::from_utf8_lossy(body).trim()
            ))
        }
        Error::Url(e) => io::Error::new(io::ErrorKind::InvalidInput, format!("websocket: {e}")),
        e => io::Error::new(io::ErrorKind::InvalidData, format!("websocket: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_urls_become_ws_urls() {
        assert_eq!(
            ws_url("http://127.0.0.1:35001/exec/AbC-d").unwrap(),
            "ws://127.0.0.1:35001/exec/AbC-d"
        );
        assert_eq!(ws_url("WS://[::1]:8080/x").unwrap(), "ws://[::1]:8080/x");
        for bad in [
            "https://127.0.0.1:1/exec/x",
            "127.0.0.1:1/exec/x",
            "ftp://h/x",
        ] {
            let err = ws_url(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
