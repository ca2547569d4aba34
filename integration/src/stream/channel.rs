//! Kubernetes' channel protocols on top of WebSocket, as the CRI streaming
//! server speaks them: every message is one binary frame whose first byte is
//! a channel number. Pure logic only (what to send, how to read what came
//! back); the connection is in [`super::conn`].

/// The subprotocols offered for exec and attach, best first.
pub const REMOTE_COMMAND_PROTOCOLS: &[&str] = &[V4_CHANNEL, LEGACY_CHANNEL];

/// The subprotocols offered for port-forward.
pub const PORT_FORWARD_PROTOCOLS: &[&str] = &[V4_CHANNEL];

/// Remote command v4: the final status is a JSON `metav1.Status`.
pub const V4_CHANNEL: &str = "v4.channel.k8s.io";
/// The first remote-command protocol: only failures are written, as text.
pub const LEGACY_CHANNEL: &str = "channel.k8s.io";

/// Remote-command channels.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;

/// Port-forward channels of the first (here: only) port: data both ways,
/// and error text from the server. Port number i uses 2i and 2i+1.
pub const PORT_DATA: u8 = 0;
pub const PORT_ERROR: u8 = 1;

/// One message: `data` on `channel`.
pub fn message(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    message
}

/// A terminal size, as sent on [`RESIZE`].
pub fn resize(width: u16, height: u16) -> Vec<u8> {
    message(
        RESIZE,
        format!("{{\"Width\":{width},\"Height\":{height}}}").as_bytes(),
    )
}

/// The remote-command protocol the server chose, which decides how the
/// status channel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V4,
    Legacy,
}

impl Protocol {
    /// The protocol for the server's `Sec-WebSocket-Protocol` answer.
    pub fn negotiated(name: Option<&str>) -> Self {
        if name == Some(V4_CHANNEL) {
            Self::V4
        } else {
            Self::Legacy
        }
    }

    /// The exit code in what came on the status channel, or the failure's
    /// text.
    pub fn exit_code(self, status: &[u8]) -> Result<i32, String> {
        match self {
            Self::V4 => exit_code_from_status(status),
            Self::Legacy => exit_code_from_legacy_status(status),
        }
    }
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
pub fn exit_code_from_legacy_status(status: &[u8]) -> Result<i32, String> {
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

/// A port-forward channel's bytes: the server's two-byte port prefix (which
/// may come split over messages), then the body.
#[derive(Default)]
pub struct PortPrefixed {
    prefix: Vec<u8>,
    pub body: Vec<u8>,
}

impl PortPrefixed {
    pub fn push(&mut self, mut bytes: &[u8]) {
        let want = 2 - self.prefix.len();
        let take = want.min(bytes.len());
        self.prefix.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        self.body.extend_from_slice(bytes);
    }

    /// The port the server named, once both bytes have come.
    pub fn port(&self) -> Option<u16> {
        (self.prefix.len() == 2).then(|| u16::from_le_bytes([self.prefix[0], self.prefix[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lead_with_their_channel() {
        assert_eq!(message(STDIN, b"hi\n"), b"\x00hi\n");
        assert_eq!(message(PORT_DATA, b""), b"\x00");
        assert_eq!(resize(80, 24), b"\x04{\"Width\":80,\"Height\":24}");
    }

    #[test]
    fn only_v4_reads_json_statuses() {
        assert_eq!(Protocol::negotiated(Some(V4_CHANNEL)), Protocol::V4);
        assert_eq!(Protocol::negotiated(Some(LEGACY_CHANNEL)), Protocol::Legacy);
        assert_eq!(Protocol::negotiated(None), Protocol::Legacy);
        assert_eq!(Protocol::Legacy.exit_code(b""), Ok(0));
        assert!(Protocol::V4.exit_code(b"").is_err());
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
    fn port_prefix_is_split_across_messages() {
        let mut channel = PortPrefixed::default();
        channel.push(&[0x90]);
        assert_eq!(channel.port(), None);
        channel.push(&[0x1F, b'h', b'i']);
        channel.push(b"!");
        assert_eq!(channel.port(), Some(8080));
        assert_eq!(channel.body, b"hi!");
    }
}
