//! The little of D-Bus tidal speaks, to systemd: a blocking connection to the
//! system bus (or, as go-systemd and libcgroups do when there is none,
//! systemd's private socket `/run/systemd/private`), EXTERNAL
//! authentication, and method calls whose arguments are strings, booleans
//! and `a(sv)` property lists (of u64s, strings, booleans, byte and u32
//! arrays, string pairs), with their replies' first string. Little-endian messages only, as on every node tidal runs on.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";
const SYSTEMD_PRIVATE: &str = "/run/systemd/private";

/// An argument of a method call.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Str(String),
    Bool(bool),
    /// A property list, `a(sv)`.
    Props(Vec<(String, Value)>),
    /// StartTransientUnit's auxiliary units, `a(sa(sv))`: always none.
    NoAuxUnits,
}

/// A property's value: a variant holding `t`, `ay`, `s`, `b` or `au`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U64(u64),
    Bytes(Vec<u8>),
    Str(String),
    Bool(bool),
    U32s(Vec<u32>),
    /// systemd's `DeviceAllow` list, `a(ss)`: (device, access) pairs.
    Pairs(Vec<(String, String)>),
}

/// A call's failure: the connection, or systemd's D-Bus error.
#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    #[error("D-Bus: {0}")]
    Io(#[from] io::Error),
    #[error("D-Bus error {name}: {message}")]
    Remote { name: String, message: String },
    #[error("D-Bus: {0}")]
    Protocol(String),
}

pub struct Connection {
    stream: UnixStream,
    serial: u32,
}

impl Connection {
    /// The system bus at `$DBUS_SYSTEM_BUS_ADDRESS` (`unix:path=` only) or
    /// its usual socket; systemd's private socket when that cannot be
    /// reached.
    pub fn system() -> Result<Connection, DbusError> {
        let bus = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
            .ok()
            .and_then(|a| {
                a.strip_prefix("unix:path=")
                    .map(|p| p.split(',').next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| SYSTEM_BUS.to_string());
        match Connection::open(Path::new(&bus), true) {
            Ok(c) => Ok(c),
            Err(first) => Connection::open(Path::new(SYSTEMD_PRIVATE), false).map_err(|e| {
                DbusError::Protocol(format!(
                    "neither the system bus {bus} ({first}) nor systemd's {SYSTEMD_PRIVATE} ({e}) answers"
                ))
            }),
        }
    }

    /// Connects to `socket`, authenticates as this process's uid and, on a
    /// bus (not a peer such as systemd's private socket), says Hello.
    pub fn open(socket: &Path, bus: bool) -> Result<Connection, DbusError> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut c = Connection { stream, serial: 0 };
        let uid = nix::unistd::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        c.stream
            .write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let line = c.read_line()?;
        if !line.starts_with("OK ") {
            return Err(DbusError::Protocol(format!(
                "authentication refused: {line}"
            )));
        }
        c.stream.write_all(b"BEGIN\r\n")?;
        if bus {
            c.call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "Hello",
                &[],
            )?;
        }
        Ok(c)
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        let mut b = [0u8];
        while !line.ends_with(b"\r\n") {
            self.stream.read_exact(&mut b)?;
            line.push(b[0]);
            if line.len() > 512 {
                return Err(io::Error::other("authentication line too long"));
            }
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// Calls `member` and waits for its reply, skipping signals; the reply's
    /// first string argument, if it has one.
    pub fn call(
        &mut self,
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        args: &[Arg],
    ) -> Result<Option<String>, DbusError> {
        self.serial += 1;
        let serial = self.serial;
        let msg = method_call(serial, destination, path, interface, member, args);
        self.stream.write_all(&msg)?;
        loop {
            let reply = self.read_message()?;
            let parsed = parse_reply(&reply)?;
            if parsed.reply_serial != Some(serial) {
                continue;
            }
            return match parsed.error {
                Some(name) => Err(DbusError::Remote {
                    name,
                    message: parsed.first_string.unwrap_or_default(),
                }),
                None => Ok(parsed.first_string),
            };
        }
    }

    fn read_message(&mut self) -> Result<Vec<u8>, DbusError> {
        let mut head = [0u8; 16];
        self.stream.read_exact(&mut head)?;
        if head[0] != b'l' {
            return Err(DbusError::Protocol("a big-endian message".into()));
        }
        let body = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
        let fields = u32::from_le_bytes(head[12..16].try_into().unwrap()) as usize;
        let total = pad(16 + fields, 8) + body;
        if total > 1 << 20 {
            return Err(DbusError::Protocol(format!("a message of {total} bytes")));
        }
        let mut msg = head.to_vec();
        msg.resize(total, 0);
        self.stream.read_exact(&mut msg[16..])?;
        Ok(msg)
    }
}

fn pad(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

/// A message being written, aligned from its first byte.
#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn align(&mut self, a: usize) {
        let n = pad(self.0.len(), a);
        self.0.resize(n, 0);
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.align(4);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.align(8);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }
    fn sig(&mut self, s: &str) {
        self.u8(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }
    /// An array: its length, then `elements` aligned to `align`.
    fn array(&mut self, align: usize, elements: impl FnOnce(&mut Buf)) {
        self.u32(0);
        let at = self.0.len() - 4;
        self.align(align);
        let start = self.0.len();
        elements(self);
        let len = (self.0.len() - start) as u32;
        self.0[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    fn arg(&mut self, a: &Arg) {
        match a {
            Arg::Str(s) => self.str(s),
            Arg::Bool(b) => self.u32(*b as u32),
            Arg::Props(props) => self.array(8, |b| {
                for (name, value) in props {
                    b.align(8);
                    b.str(name);
                    match value {
                        Value::U64(v) => {
                            b.sig("t");
                            b.u64(*v);
                        }
                        Value::Bytes(bytes) => {
                            b.sig("ay");
                            b.array(1, |b| b.0.extend_from_slice(bytes));
                        }
                        Value::Str(v) => {
                            b.sig("s");
                            b.str(v);
                        }
                        Value::Bool(v) => {
                            b.sig("b");
                            b.u32(u32::from(*v));
                        }
                        Value::U32s(v) => {
                            b.sig("au");
                            b.array(4, |b| v.iter().for_each(|n| b.u32(*n)));
                        }
                        Value::Pairs(v) => {
                            b.sig("a(ss)");
                            b.array(8, |b| {
                                for (x, y) in v {
                                    b.align(8);
                                    b.str(x);
                                    b.str(y);
                                }
                            });
                        }
                    }
                }
            }),
            Arg::NoAuxUnits => self.array(8, |_| {}),
        }
    }
}

fn signature(args: &[Arg]) -> String {
    args.iter()
        .map(|a| match a {
            Arg::Str(_) => "s",
            Arg::Bool(_) => "b",
            Arg::Props(_) => "a(sv)",
            Arg::NoAuxUnits => "a(sa(sv))",
        })
        .collect()
}

fn method_call(
    serial: u32,
    destination: &str,
    path: &str,
    interface: &str,
    member: &str,
    args: &[Arg],
) -> Vec<u8> {
    // The body first: its length goes in the header. It starts 8-aligned,
    // so aligning it on its own aligns it in the message.
    let mut body = Buf::default();
    for a in args {
        body.arg(a);
    }
    let sig = signature(args);
    let mut m = Buf::default();
    m.0.extend_from_slice(&[b'l', 1, 0, 1]);
    m.u32(body.0.len() as u32);
    m.u32(serial);
    m.array(8, |b| {
        let mut field = |code: u8, kind: &str, value: &str| {
            b.align(8);
            b.u8(code);
            b.sig(kind);
            match kind {
                "g" => b.sig(value),
                _ => b.str(value),
            }
        };
        field(1, "o", path);
        field(2, "s", interface);
        field(3, "s", member);
        field(6, "s", destination);
        if !sig.is_empty() {
            field(8, "g", &sig);
        }
    });
    m.align(8);
    m.0.extend_from_slice(&body.0);
    m.0
}

/// What tidal reads of a reply.
#[derive(Debug, Default, PartialEq)]
struct Reply {
    reply_serial: Option<u32>,
    error: Option<String>,
    first_string: Option<String>,
}

/// A message being read, bounds-checked.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn bad() -> DbusError {
        DbusError::Protocol("a malformed reply".into())
    }
    fn align(&mut self, a: usize) {
        self.at = pad(self.at, a);
    }
    fn take(&mut self, n: usize) -> Result<&[u8], DbusError> {
        let s = self.b.get(self.at..self.at + n).ok_or_else(Self::bad)?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DbusError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DbusError> {
        self.align(4);
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn str(&mut self) -> Result<String, DbusError> {
        let n = self.u32()? as usize;
        let s = String::from_utf8_lossy(self.take(n)?).into_owned();
        self.take(1)?;
        Ok(s)
    }
    fn sig(&mut self) -> Result<String, DbusError> {
        let n = self.u8()? as usize;
        let s = String::from_utf8_lossy(self.take(n)?).into_owned();
        self.take(1)?;
        Ok(s)
    }
}

fn parse_reply(msg: &[u8]) -> Result<Reply, DbusError> {
    let mut c = Cursor { b: msg, at: 12 };
    let fields_len = c.u32()? as usize;
    let end = 16 + fields_len;
    let mut reply = Reply::default();
    let mut body_sig = String::new();
    while c.at < end {
        c.align(8);
        let code = c.u8()?;
        let kind = c.sig()?;
        match kind.as_str() {
            "s" | "o" => {
                let v = c.str()?;
                if code == 4 {
                    reply.error = Some(v);
                }
            }
            "g" => {
                let v = c.sig()?;
                if code == 8 {
                    body_sig = v;
                }
            }
            "u" => {
                let v = c.u32()?;
                if code == 5 {
                    reply.reply_serial = Some(v);
                }
            }
            other => {
                return Err(DbusError::Protocol(format!(
                    "a header field of type {other}"
                )));
            }
        }
    }
    c.at = pad(end, 8);
    if body_sig.starts_with('s') {
        reply.first_string = Some(c.str()?);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_laid_out_as_the_specification_says() {
        let m = method_call(
            7,
            "d.e",
            "/p",
            "i.f",
            "M",
            &[Arg::Str("u".into()), Arg::Bool(true)],
        );
        // Fixed header: little-endian, method call, no flags, version 1,
        // body of 12 bytes (string "u": 4 + 1 + NUL, padded to 8, bool 4),
        // serial 7.
        assert_eq!(&m[..4], &[b'l', 1, 0, 1]);
        assert_eq!(u32::from_le_bytes(m[4..8].try_into().unwrap()), 12);
        assert_eq!(u32::from_le_bytes(m[8..12].try_into().unwrap()), 7);
        let fields = u32::from_le_bytes(m[12..16].try_into().unwrap()) as usize;
        let body = &m[pad(16 + fields, 8)..];
        assert_eq!(body, &[1, 0, 0, 0, b'u', 0, 0, 0, 1, 0, 0, 0]);
        // The path field comes first: code 1, signature "o", "/p".
        assert_eq!(&m[16..24], &[1, 1, b'o', 0, 2, 0, 0, 0]);
        assert_eq!(&m[24..27], b"/p\0");
    }

    #[test]
    fn property_lists_align_their_structs_and_variants() {
        let mut b = Buf::default();
        b.arg(&Arg::Props(vec![
            ("A".into(), Value::U64(5)),
            ("B".into(), Value::Bytes(vec![3])),
        ]));
        let v = &b.0;
        // Array length, then (no padding: offset 4 is not 8-aligned, so 4
        // bytes of it) the first struct at 8.
        assert_eq!(
            u32::from_le_bytes(v[0..4].try_into().unwrap()) as usize,
            v.len() - 8
        );
        assert_eq!(&v[8..14], &[1, 0, 0, 0, b'A', 0]);
        assert_eq!(&v[14..17], &[1, b't', 0]);
        assert_eq!(u64::from_le_bytes(v[24..32].try_into().unwrap()), 5);
        assert_eq!(&v[32..38], &[1, 0, 0, 0, b'B', 0]);
        assert_eq!(&v[38..42], &[2, b'a', b'y', 0]);
        assert_eq!(&v[44..49], &[1, 0, 0, 0, 3]);
    }

    #[test]
    fn strings_booleans_and_pid_lists_are_variants_too() {
        let mut b = Buf::default();
        b.arg(&Arg::Props(vec![
            ("S".into(), Value::Str("ab".into())),
            ("B".into(), Value::Bool(true)),
            ("P".into(), Value::U32s(vec![7, 9])),
        ]));
        b.arg(&Arg::NoAuxUnits);
        let v = &b.0;
        // S: name at 8, signature "s" at 14, the string aligned to 4 at 20.
        assert_eq!(&v[14..17], &[1, b's', 0]);
        assert_eq!(&v[20..27], &[2, 0, 0, 0, b'a', b'b', 0]);
        // B: the struct at 32, its u32 at 44.
        assert_eq!(&v[38..41], &[1, b'b', 0]);
        assert_eq!(&v[44..48], &[1, 0, 0, 0]);
        // P: the struct at 48; "au", then 8 bytes of elements.
        assert_eq!(&v[54..58], &[2, b'a', b'u', 0]);
        assert_eq!(&v[58..60], &[0, 0]);
        assert_eq!(u32::from_le_bytes(v[60..64].try_into().unwrap()), 8);
        assert_eq!(&v[64..72], &[7, 0, 0, 0, 9, 0, 0, 0]);
        let mut p = Buf::default();
        p.arg(&Arg::Props(vec![(
            "D".into(),
            Value::Pairs(vec![("x".into(), "rw".into())]),
        )]));
        // The variant's "a(ss)" at 14, its length at 20, the struct at 24.
        assert_eq!(&p.0[14..21], &[5, b'a', b'(', b's', b's', b')', 0]);
        assert_eq!(u32::from_le_bytes(p.0[24..28].try_into().unwrap()), 15);
        assert_eq!(&p.0[32..38], &[1, 0, 0, 0, b'x', 0]);
        assert_eq!(&p.0[40..47], &[2, 0, 0, 0, b'r', b'w', 0]);
        // The empty a(sa(sv)): its length 0, padded to the struct alignment.
        assert_eq!(&v[72..76], &[0, 0, 0, 0]);
        assert_eq!(v.len(), 80);
        assert_eq!(
            signature(&[Arg::Str(String::new()), Arg::Props(vec![]), Arg::NoAuxUnits]),
            "sa(sv)a(sa(sv))"
        );
    }

    #[test]
    fn an_error_reply_gives_its_name_and_message() {
        // An error reply as a bus writes one: fields ERROR_NAME, REPLY_SERIAL,
        // SIGNATURE "s", then the message.
        let mut body = Buf::default();
        body.str("Cannot set property Foo");
        let mut m = Buf::default();
        m.0.extend_from_slice(&[b'l', 3, 0, 1]);
        m.u32(body.0.len() as u32);
        m.u32(9);
        m.array(8, |b| {
            b.align(8);
            b.u8(4);
            b.sig("s");
            b.str("org.freedesktop.DBus.Error.UnknownProperty");
            b.align(8);
            b.u8(5);
            b.sig("u");
            b.u32(3);
            b.align(8);
            b.u8(8);
            b.sig("g");
            b.sig("s");
        });
        m.align(8);
        m.0.extend_from_slice(&body.0);
        let r = parse_reply(&m.0).unwrap();
        assert_eq!(r.reply_serial, Some(3));
        assert_eq!(
            r.error.as_deref(),
            Some("org.freedesktop.DBus.Error.UnknownProperty")
        );
        assert_eq!(r.first_string.as_deref(), Some("Cannot set property Foo"));
        // Cut short, it is an error, never a panic.
        for n in 0..m.0.len() {
            let _ = parse_reply(&m.0[..n]);
        }
    }
}
