//! The application signal: a pod's declared probe (the `qos` trait's
//! `probe`), run by tidald inside the pod's network namespace, where the
//! pod's `localhost` is, by a thread that entered the namespace
//! (`setns(2)`, which moves only the calling thread) and connects to
//! 127.0.0.1 with a deadline: no thread that left tidald's namespace ever
//! runs anything but probes (tokio's pool least of all). `run` does one on
//! a thread that exits after it; `Prober` runs them in the background for
//! the collector, at most one at a time per pod, on one thread per pod that
//! stays in its namespace while the pod is probed, and hands their results
//! over at the next tick.
//!
//! The latency is from the start of the connect to the end of the answer:
//! for TCP the accepted connection, for HTTP the whole response (the request
//! says `Connection: close`; the body is read to its `Content-Length`, its
//! last chunk, or the server's close, at most `MAX_RESPONSE` bytes).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Probe;

/// Most bytes of an HTTP response read.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("network namespace {}: {source}", path.display())]
    Netns { path: PathBuf, source: io::Error },
    #[error("connect to port {port}: {source}")]
    Connect { port: u16, source: io::Error },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("probe thread: {0}")]
    Thread(io::Error),
}

impl ProbeError {
    /// Every `reason` there is.
    pub const REASONS: [&'static str; 5] = ["netns", "connect", "timeout", "http", "thread"];

    /// Why the probe gave no latency, as a metric's label.
    pub fn reason(&self) -> &'static str {
        match self {
            ProbeError::Netns { .. } => "netns",
            ProbeError::Connect { .. } => "connect",
            ProbeError::Timeout(_) => "timeout",
            ProbeError::Http(_) => "http",
            ProbeError::Thread(_) => "thread",
        }
    }
}

impl Probe {
    /// The probe's timeout.
    pub fn timeout(&self) -> Duration {
        match self {
            Probe::Http { timeout, .. } | Probe::Tcp { timeout, .. } => *timeout,
        }
    }

    fn port(&self) -> u16 {
        match self {
            Probe::Http { port, .. } | Probe::Tcp { port, .. } => *port,
        }
    }
}

/// Runs `probe` inside the network namespace `netns` (a `/proc/PID/ns/net`
/// or a bind mount of one), on a thread of its own; returns its latency.
/// Blocks for at most about the probe's timeout.
pub fn run(netns: &Path, probe: &Probe) -> Result<Duration, ProbeError> {
    let probe = probe.clone();
    let netns = netns.to_path_buf();
    std::thread::Builder::new()
        .name("tidal-probe".into())
        .spawn(move || enter_and_run(&netns, &probe))
        .map_err(ProbeError::Thread)?
        .join()
        .unwrap_or_else(|_| Err(ProbeError::Thread(io::Error::other("panicked"))))
}

/// Moves the calling thread into the network namespace `netns` for good,
/// then runs `probe` there: only for a thread of its own that exits next.
fn enter_and_run(netns: &Path, probe: &Probe) -> Result<Duration, ProbeError> {
    enter(netns)?;
    run_here(probe)
}

/// Moves the calling thread into the network namespace `netns` for good:
/// only for a thread that runs nothing but probes.
fn enter(netns: &Path) -> Result<(), ProbeError> {
    let failed = |source: io::Error| ProbeError::Netns {
        path: netns.to_path_buf(),
        source,
    };
    let ns = File::open(netns).map_err(failed)?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| failed(e.into()))
}

/// Runs `probe` in the calling thread's network namespace.
pub fn run_here(probe: &Probe) -> Result<Duration, ProbeError> {
    let timeout = probe.timeout();
    let start = Instant::now();
    let deadline = start + timeout;
    let port = probe.port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|source| {
        if source.kind() == io::ErrorKind::TimedOut {
            ProbeError::Timeout(timeout)
        } else {
            ProbeError::Connect { port, source }
        }
    })?;
    if let Probe::Http { path, .. } = probe {
        http_get(&mut stream, port, path, deadline, timeout)?;
    }
    Ok(start.elapsed())
}

/// Time left until `deadline`, or a timeout error.
fn left(deadline: Instant, timeout: Duration) -> Result<Duration, ProbeError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(ProbeError::Timeout(timeout))
}

fn http_get(
    stream: &mut TcpStream,
    port: u16,
    path: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let io_err = |e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ProbeError::Timeout(timeout)
        } else {
            ProbeError::Http(e.to_string())
        }
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: tidald-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(left(deadline, timeout)?))
        .map_err(io_err)?;
    stream.write_all(request.as_bytes()).map_err(io_err)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(left(deadline, timeout)?))
            .map_err(io_err)?;
        let n = stream.read(&mut chunk).map_err(io_err)?;
        buf.extend_from_slice(&chunk[..n]);
        match response_complete(&buf, n == 0)? {
            Some(status) if (200..400).contains(&status) => return Ok(()),
            Some(status) => return Err(ProbeError::Http(format!("status {status}"))),
            None if n == 0 => {
                return Err(ProbeError::Http(
                    "connection closed before a response".into(),
                ))
            }
            None if buf.len() > MAX_RESPONSE => {
                return Err(ProbeError::Http(format!(
                    "response longer than {MAX_RESPONSE} bytes"
                )))
            }
            None => {}
        }
    }
}

/// The status of the response in `buf` once it is whole (`closed`: the
/// server closed the connection); None while more is to come.
pub fn response_complete(buf: &[u8], closed: bool) -> Result<Option<u16>, ProbeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| ProbeError::Http("response head is not text".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(ProbeError::Http(format!(
            "bad status line {:?}",
            crate::ids::shorten(status_line)
        )));
    };
    let status: u16 = match (version.starts_with("HTTP/1."), code.parse()) {
        (true, Ok(c)) if (100..600).contains(&c) => c,
        _ => {
            return Err(ProbeError::Http(format!(
                "bad status line {:?}",
                crate::ids::shorten(status_line)
            )))
        }
    };
    let body = &buf[end + 4..];
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let whole = if chunked {
        body.ends_with(b"0\r\n\r\n")
    } else if let Some(len) = length {
        body.len() >= len
    } else {
        closed
    };
    Ok(whole.then_some(status))
}

/// A thread that lives in one target's network namespace and runs its
/// probes, one at a time, as they are sent: the namespace is entered once,
/// not per probe. It runs nothing but probes, and exits when its sender is
/// dropped (the target gone, or in another namespace now).
struct Resident {
    netns: PathBuf,
    probes: mpsc::Sender<Probe>,
}

/// Stack of a probe thread: a probe needs a few KiB.
const PROBE_STACK: usize = 128 * 1024;

/// Probes run in the background, at most one at a time per target (a pod,
/// or a container outside CRI), each target's on a thread of its own that
/// stays in its namespace (see `Resident`); results wait for `take`.
pub struct Prober<T> {
    /// The targets with a probe running, and when it started.
    running: HashMap<T, Instant>,
    residents: HashMap<T, Resident>,
    done_tx: mpsc::Sender<(T, Result<Duration, ProbeError>)>,
    done_rx: mpsc::Receiver<(T, Result<Duration, ProbeError>)>,
}

impl<T: Clone + Eq + std::hash::Hash + Send + 'static> Default for Prober<T> {
    fn default() -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        Prober {
            running: HashMap::new(),
            residents: HashMap::new(),
            done_tx,
            done_rx,
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash + Send + 'static> Prober<T> {
    /// Starts `probe` for `target` in `netns` unless one is still running
    /// for it; false when one is.
    pub fn start(&mut self, target: T, netns: PathBuf, probe: Probe) -> bool {
        if self.running.contains_key(&target) {
            return false;
        }
        self.running.insert(target.clone(), Instant::now());
        if self
            .residents
            .get(&target)
            .is_some_and(|r| r.netns != netns)
        {
            self.residents.remove(&target);
        }
        // Sent to the target's thread; if that one has exited (it could not
        // enter its namespace), a new one tries again.
        let probe = match self.residents.get(&target) {
            Some(r) => match r.probes.send(probe) {
                Ok(()) => return true,
                Err(mpsc::SendError(probe)) => probe,
            },
            None => probe,
        };
        match self.spawn(target.clone(), netns) {
            Ok(r) => {
                // A thread just started takes its first probe.
                let _ = r.probes.send(probe);
                self.residents.insert(target, r);
            }
            Err(e) => {
                let _ = self.done_tx.send((target, Err(ProbeError::Thread(e))));
            }
        }
        true
    }

    /// A thread for `target` in `netns`. If it cannot enter the namespace,
    /// its first probe fails with why, and it exits.
    fn spawn(&self, target: T, netns: PathBuf) -> io::Result<Resident> {
        let (tx, rx) = mpsc::channel::<Probe>();
        let done = self.done_tx.clone();
        let path = netns.clone();
        std::thread::Builder::new()
            .name("tidal-probe".into())
            .stack_size(PROBE_STACK)
            .spawn(move || {
                if let Err(e) = enter(&path) {
                    if rx.recv().is_ok() {
                        let _ = done.send((target, Err(e)));
                    }
                    return;
                }
                for probe in rx {
                    if done.send((target.clone(), run_here(&probe))).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Resident { netns, probes: tx })
    }

    /// Keeps the threads of the targets for which `keep` holds; the others
    /// leave their namespaces (and let them go) once their probe is done.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.residents.retain(|t, _| keep(t));
    }

    /// How many targets have a thread.
    pub fn threads(&self) -> usize {
        self.residents.len()
    }

    /// The results of the probes finished since the last call.
    pub fn take(&mut self) -> Vec<(T, Result<Duration, ProbeError>)> {
        let done: Vec<_> = self.done_rx.try_iter().collect();
        for (t, result) in &done {
            self.running.remove(t);
            // A thread outside its namespace is of no use: the next probe
            // starts another.
            if matches!(result, Err(ProbeError::Netns { .. })) {
                self.residents.remove(t);
            }
        }
        done
    }

    /// Whether a probe is running for `target`.
    pub fn running(&self, target: &T) -> bool {
        self.running.contains_key(target)
    }

    /// How long the probe running for `target` has taken so far: a lower
    /// bound on its latency. None when none is running.
    pub fn elapsed(&self, target: &T) -> Option<Duration> {
        self.running.get(target).map(|t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_whole_at_their_length_last_chunk_or_close() {
        let ok = |b: &[u8], closed| response_complete(b, closed).unwrap();
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", false),
            Some(200)
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi", false),
            None
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            Some(200)
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
                false
            ),
            Some(503)
        );
        assert_eq!(
            ok(b"HTTP/1.0 302 Found\r\nLocation: /\r\n\r\nbody", false),
            None
        );
        assert_eq!(
            ok(b"HTTP/1.0 302 Found\r\nLocation: /\r\n\r\nbody", true),
            Some(302)
        );
        assert_eq!(ok(b"HTTP/1.1 200 OK\r\nContent-Le", false), None);
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 999 What\r\n\r\n",
            b"HTTP/1.1\r\n\r\n",
        ] {
            assert!(response_complete(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn probes_in_this_namespace_measure_and_fail_as_they_should() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (i, s) in l.incoming().take(3).enumerate() {
                let mut s = s.unwrap();
                let mut req = [0u8; 1024];
                let n = s.read(&mut req).unwrap();
                let req = String::from_utf8_lossy(&req[..n]).to_string();
                assert!(req.starts_with("GET /ready HTTP/1.1\r\n"), "{req}");
                match i {
                    0 => {
                        std::thread::sleep(Duration::from_millis(50));
                        s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                            .unwrap();
                    }
                    1 => s
                        .write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
                        .unwrap(),
                    // Never answers: the probe times out.
                    _ => std::thread::sleep(Duration::from_millis(600)),
                }
            }
        });
        let http = Probe::Http {
            port,
            path: "/ready".into(),
            timeout: Duration::from_millis(400),
        };
        let took = run_here(&http).unwrap();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_millis(400),
            "{took:?}"
        );
        let e = run_here(&http).unwrap_err();
        assert!(e.to_string().contains("status 500"), "{e}");
        let t0 = Instant::now();
        let e = run_here(&http).unwrap_err();
        assert!(matches!(e, ProbeError::Timeout(_)), "{e}");
        assert!(
            t0.elapsed() < Duration::from_millis(550),
            "{:?}",
            t0.elapsed()
        );
        server.join().unwrap();
        // Nothing listens any more: refused.
        let tcp = Probe::Tcp {
            port,
            timeout: Duration::from_millis(200),
        };
        assert!(matches!(run_here(&tcp), Err(ProbeError::Connect { .. })));
    }

    /// A network namespace made for a test, with loopback up, deleted
    /// (with what runs in it) when dropped.
    struct Netns {
        name: String,
        servers: Vec<std::process::Child>,
        root: crate::testfs::FakeDir,
    }

    impl Netns {
        fn new() -> Netns {
            let name = format!("tidal-probe-{}", std::process::id());
            let ip = |args: &[&str]| {
                let st = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .unwrap();
                assert!(st.success(), "ip {args:?}");
            };
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &name])
                .stderr(std::process::Stdio::null())
                .status();
            ip(&["netns", "add", &name]);
            let ns = Netns {
                name: name.clone(),
                servers: Vec::new(),
                root: crate::testfs::FakeDir::new("www", &[("healthz", "ok\n")]),
            };
            ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
            ns
        }

        /// Starts busybox `httpd` serving `root` on `port` in the namespace.
        fn httpd(&mut self, port: u16) -> i32 {
            let child = std::process::Command::new("ip")
                .args(["netns", "exec", &self.name, "busybox", "httpd", "-f"])
                .arg("-p")
                .arg(format!("127.0.0.1:{port}"))
                .arg("-h")
                .arg(self.root.path())
                .spawn()
                .unwrap();
            let pid = child.id() as i32;
            self.servers.push(child);
            pid
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            for c in &mut self.servers {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &self.name])
                .status();
        }
    }

    /// Run as root, serialised with the other root tests:
    /// `flock /tmp/tidal-root-tests.lock cargo test --lib probes_enter`.
    #[test]
    fn probes_enter_the_pods_network_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (network namespaces)");
            return;
        }
        let mut ns = Netns::new();
        // A port nothing listens on in this (tidald's) namespace.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pid = ns.httpd(port);
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let http = |path: &str| Probe::Http {
            port,
            path: path.into(),
            timeout: Duration::from_secs(1),
        };
        // Wait for httpd to listen (ip netns exec execs it: its pid is httpd's).
        let t0 = Instant::now();
        while run(
            &netns,
            &Probe::Tcp {
                port,
                timeout: Duration::from_secs(1),
            },
        )
        .is_err()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "httpd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = run(&netns, &http("/healthz")).unwrap();
        assert!(took < Duration::from_millis(500), "{took:?}");
        let e = run(&netns, &http("/missing")).unwrap_err();
        assert!(e.to_string().contains("status 404"), "{e}");
        // The same probe from tidald's own namespace reaches nothing: the
        // answers above came from inside the pod's.
        let e = run_here(&http("/healthz")).unwrap_err();
        assert!(matches!(e, ProbeError::Connect { .. }), "{e}");
        // This thread never left its namespace.
        let mine = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        let theirs = std::fs::metadata(&netns).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(mine.ino(), theirs.ino());
        // In the background, one at a time per target.
        let mut prober = Prober::default();
        assert!(prober.start("pod", netns.clone(), http("/healthz")));
        assert!(
            !prober.start("pod", netns.clone(), http("/healthz")),
            "one at a time"
        );
        assert!(prober.elapsed(&"pod").is_some(), "running: its time so far");
        let t0 = Instant::now();
        let mut done = Vec::new();
        while done.is_empty() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
            done = prober.take();
        }
        assert!(matches!(done.as_slice(), [("pod", Ok(_))]), "{done:?}");
        assert!(!prober.running(&"pod"));
        assert_eq!(prober.elapsed(&"pod"), None);
        // The next probe goes to the same thread, still in the namespace.
        let next = |prober: &mut Prober<&'static str>, netns: &Path| {
            assert!(prober.start("pod", netns.to_path_buf(), http("/healthz")));
            let t0 = Instant::now();
            loop {
                let done = prober.take();
                if !done.is_empty() {
                    return done;
                }
                assert!(t0.elapsed() < Duration::from_secs(5), "no answer");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let again = next(&mut prober, &netns);
        assert!(matches!(again.as_slice(), [("pod", Ok(_))]), "{again:?}");
        assert_eq!(prober.threads(), 1);
        // A target in a namespace that cannot be entered: why, and no
        // thread kept for it.
        let gone = next(&mut prober, Path::new("/proc/0/ns/net"));
        assert!(
            matches!(gone.as_slice(), [("pod", Err(ProbeError::Netns { .. }))]),
            "{gone:?}"
        );
        assert_eq!(prober.threads(), 0);
        let back = next(&mut prober, &netns);
        assert!(matches!(back.as_slice(), [("pod", Ok(_))]), "{back:?}");
        prober.retain(|_| false);
        assert_eq!(prober.threads(), 0, "a target no longer probed");
        // A namespace that is gone: a clear error.
        let e = run(Path::new("/proc/0/ns/net"), &http("/")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("network namespace /proc/0/ns/net: "),
            "{e}"
        );
        drop(ns);
        let list = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap();
        let name = format!("tidal-probe-{}", std::process::id());
        assert!(
            !String::from_utf8_lossy(&list.stdout).contains(&name),
            "namespace left behind"
        );
    }
}
