//! Container stdio: containerd's fifos, stdin that CloseIO can close, and
//! terminals.
//!
//! Output without a terminal goes straight from the container to containerd's
//! fifo: the shim holds no copy loop and no buffer for it, so a container that
//! floods its output, or whose reader is slow, can only ever block itself.
//! Stdin goes through a pipe whose write end the shim holds, so that CloseIO
//! can close it. A terminal is a pty whose master the container sends over a
//! console socket; the shim copies between it and the fifos.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::helpers::HelperStdio;

const COPY_BUF: usize = 16 * 1024;

/// The stdio containerd asked for: fifo paths (or `file://` URIs), empty for none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// What the shim keeps of a process's stdio while it runs.
#[derive(Default)]
pub struct StdioHandles {
    /// Dropping this closes the container's stdin.
    stdin_close: Mutex<Option<oneshot::Sender<()>>>,
    /// The pty master, for ResizePty.
    console: Mutex<Option<std::sync::Arc<AsyncFd<OwnedFd>>>>,
    /// The copy of terminal output; finishes when the pty is closed.
    output: Mutex<Option<JoinHandle<()>>>,
    /// Read-only ends of the output fifos, never read: they tell how much
    /// output containerd has not read yet (see [`StdioHandles::drain_output`]).
    /// A reader does not hold a fifo open for its other readers: containerd
    /// still sees end-of-file when the last writer goes.
    unread: Mutex<Vec<OwnedFd>>,
}

impl StdioHandles {
    /// CloseIO: the process sees end-of-file on stdin.
    pub fn close_stdin(&self) {
        if let Some(tx) = self.stdin_close.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    pub fn resize(&self, width: u16, height: u16) -> io::Result<()> {
        let console = self.console.lock().unwrap().clone();
        match console {
            Some(c) => crate::sys::set_winsize(c.get_ref().as_fd(), width, height),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "process has no terminal",
            )),
        }
    }

    /// Waits, at most `limit`, until the process's output has left for
    /// containerd: terminal output copied into its fifo, and every output
    /// fifo read empty. containerd takes TaskExit as the end of the output
    /// and closes its fifos (1.6 before 1.6.22 closes them before it has
    /// read them out): whatever a process wrote just before it ended would
    /// be lost from its log. A reader that stops reading (none, or a full
    /// disk under it) ends the wait after [`DRAIN_STALL`] without progress.
    pub async fn drain_output(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let handle = self.output.lock().unwrap().take();
        if let Some(h) = handle {
            let _ = tokio::time::timeout_at(deadline, h).await;
        }
        let unread = std::mem::take(&mut *self.unread.lock().unwrap());
        let left = || {
            unread
                .iter()
                .map(|fd| crate::sys::unread_bytes(fd.as_fd()).unwrap_or(0))
                .sum::<usize>()
        };
        let (mut last, mut since) = (left(), tokio::time::Instant::now());
        while last > 0 {
            let now = tokio::time::Instant::now();
            if now >= deadline || now - since >= DRAIN_STALL {
                log::warn!("{last} bytes of output left unread by containerd");
                return;
            }
            tokio::time::sleep(DRAIN_POLL).await;
            let n = left();
            if n < last {
                since = tokio::time::Instant::now();
            }
            last = n;
        }
    }
}

/// How often [`StdioHandles::drain_output`] looks at the fifos.
const DRAIN_POLL: Duration = Duration::from_millis(1);
/// How long a reader may leave a fifo's content untouched before the wait
/// for it ends.
const DRAIN_STALL: Duration = Duration::from_millis(250);

/// Stdio prepared for a process that is about to be created.
pub struct PreparedStdio {
    /// Handed to the helper, which passes them to the container.
    pub helper: HelperStdio,
    /// Console socket for a terminal; the helper gets its path.
    pub console: Option<ConsoleSocket>,
    pub handles: StdioHandles,
    stdin_fifo: Option<PathBuf>,
    stdout_fifo: Option<PathBuf>,
}

/// Opens the process's side of `paths`. For a terminal, `console_path` is where
/// the console socket is bound.
pub fn prepare(paths: &StdioPaths, console_path: &Path) -> io::Result<PreparedStdio> {
    let mut prepared = PreparedStdio {
        helper: HelperStdio::default(),
        console: None,
        handles: StdioHandles::default(),
        stdin_fifo: None,
        stdout_fifo: None,
    };
    if paths.terminal {
        prepared.console = Some(ConsoleSocket::bind(console_path)?);
        prepared.stdin_fifo = non_empty(&paths.stdin).map(PathBuf::from);
        prepared.stdout_fifo = non_empty(&paths.stdout).map(PathBuf::from);
        return Ok(prepared);
    }
    if let Some(stdin) = non_empty(&paths.stdin) {
        let fifo = open_stdin(stdin)?;
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let w = pipe::Sender::from_owned_fd(w)?;
        let (tx, rx) = oneshot::channel();
        *prepared.handles.stdin_close.lock().unwrap() = Some(tx);
        tokio::spawn(copy_stdin(fifo, w, rx));
        prepared.helper.stdin = Some(r);
    }
    prepared.helper.stdout = non_empty(&paths.stdout).map(open_output).transpose()?;
    prepared.helper.stderr = non_empty(&paths.stderr).map(open_output).transpose()?;
    let unread = [&paths.stdout, &paths.stderr]
        .into_iter()
        .filter_map(|p| watch_fifo(p));
    *prepared.handles.unread.lock().unwrap() = unread.collect::<io::Result<_>>()?;
    Ok(prepared)
}

impl PreparedStdio {
    /// After the helper created the process: for a terminal, receive the pty
    /// master and start copying. Without a terminal there is nothing to do.
    pub async fn connect_console(&mut self, limit: Duration) -> io::Result<()> {
        let Some(console) = self.console.take() else {
            return Ok(());
        };
        let master = tokio::time::timeout(limit, console.receive())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no pty from container"))??;
        crate::sys::set_nonblocking(&master)?;
        let master = std::sync::Arc::new(crate::sys::async_fd(
            master,
            Interest::READABLE | Interest::WRITABLE,
        )?);
        if let Some(stdin) = &self.stdin_fifo {
            let fifo = open_stdin(stdin)?;
            let (tx, rx) = oneshot::channel();
            *self.handles.stdin_close.lock().unwrap() = Some(tx);
            tokio::spawn(copy_to_pty(fifo, master.clone(), rx));
        }
        if let Some(stdout) = &self.stdout_fifo {
            let out = pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(stdout)?;
            let task = tokio::spawn(copy_from_pty(master.clone(), out));
            *self.handles.output.lock().unwrap() = Some(task);
            if let Some(fd) = watch_fifo(&stdout.to_string_lossy()) {
                self.handles.unread.lock().unwrap().push(fd?);
            }
        }
        *self.handles.console.lock().unwrap() = Some(master);
        Ok(())
    }
}

fn non_empty(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}

/// Opens an output destination for the container to write to directly.
fn open_output(target: &str) -> io::Result<OwnedFd> {
    if let Some(path) = target.strip_prefix("file://") {
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)?;
        return Ok(f.into());
    }
    if target.contains("://") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("unsupported stdio URI {target:?}: only fifo paths and file:// are supported"),
        ));
    }
    // O_RDWR: opening never blocks or fails for want of a reader, and the
    // fifo never reports EPIPE to the container when containerd's reader
    // goes away (as with the runc shim, the writer blocks instead).
    let f = OpenOptions::new().read(true).write(true).open(target)?;
    Ok(f.into())
}

/// A read-only end of the output fifo `target`, for [`StdioHandles`]'s
/// count of unread output; None when `target` is no fifo (none, or a file).
fn watch_fifo(target: &str) -> Option<io::Result<OwnedFd>> {
    if target.is_empty() || target.contains("://") {
        return None;
    }
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(target);
    use std::os::unix::fs::FileTypeExt;
    match f.and_then(|f| Ok((f.metadata()?.file_type().is_fifo(), f))) {
        Ok((true, f)) => Some(Ok(f.into())),
        Ok((false, _)) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Opens containerd's stdin fifo for reading, without waiting for a writer.
/// Until a writer has connected the kernel reports the fifo neither readable
/// nor hung up, so the copy waits; once the writer closes, it reads EOF and
/// the container's stdin is closed, as with the runc shim.
fn open_stdin(path: impl AsRef<Path>) -> io::Result<pipe::Receiver> {
    pipe::OpenOptions::new().open_receiver(path)
}

/// Reads from a stdin fifo, waiting for readiness first so that a fifo whose
/// writer has not connected yet is not mistaken for one that closed.
async fn read_fifo(fifo: &pipe::Receiver, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        fifo.readable().await?;
        match fifo.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

async fn copy_stdin(from: pipe::Receiver, mut to: pipe::Sender, mut close: oneshot::Receiver<()>) {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        tokio::select! {
            _ = &mut close => break,
            n = read_fifo(&from, &mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => if to.write_all(&buf[..n]).await.is_err() { break },
            },
        }
    }
}

async fn copy_to_pty(
    from: pipe::Receiver,
    pty: std::sync::Arc<AsyncFd<OwnedFd>>,
    mut close: oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = tokio::select! {
            _ = &mut close => {
                // End of input for a terminal is ^D.
                let _ = pty_write_all(&pty, &[4]).await;
                break;
            }
            n = read_fifo(&from, &mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        if pty_write_all(&pty, &buf[..n]).await.is_err() {
            break;
        }
    }
}

async fn copy_from_pty(pty: std::sync::Arc<AsyncFd<OwnedFd>>, mut to: pipe::Sender) {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match pty_read(&pty, &mut buf).await {
            Ok(0) | Err(_) => break, // EIO once every slave fd is closed
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

async fn pty_read(pty: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = pty.readable().await?;
        match guard.try_io(|fd| Ok(nix::unistd::read(fd.as_raw_fd(), buf)?)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn pty_write_all(pty: &AsyncFd<OwnedFd>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let mut guard = pty.writable().await?;
        match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), buf)?)) {
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// A unix socket on which a container's init sends its pty master.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    fn bind(path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn receive(&self) -> io::Result<OwnedFd> {
        let (stream, _) = self.listener.accept().await?;
        stream.readable().await?;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        crate::sys::recv_fd(stream.as_fd())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
