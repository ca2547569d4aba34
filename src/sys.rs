//! The few raw system calls tidal makes itself. Every `unsafe` block of the
//! crate lives here, each with the reason it is sound.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// Sets the window size of the terminal behind `fd` (TIOCSWINSZ).
pub fn set_winsize(fd: BorrowedFd<'_>, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is a live descriptor borrowed for the duration of the call and
    // TIOCSWINSZ only reads the `winsize` we pass by reference, which outlives it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The bytes written to the pipe or fifo behind `fd` that no reader has read
/// yet (FIONREAD).
pub fn unread_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is a live descriptor borrowed for the duration of the call
    // and FIONREAD writes one int to the pointer we pass, which outlives it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// Receives one file descriptor sent with SCM_RIGHTS over a unix stream socket.
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            let mut fds = fds.into_iter();
            if let Some(fd) = fds.next() {
                // Close any extra descriptors the peer sent.
                for extra in fds {
                    // SAFETY: the kernel just installed `extra` in our table for us
                    // and nothing else refers to it; we take ownership to close it.
                    drop(unsafe { owned(extra) });
                }
                // SAFETY: as above, `fd` is ours alone.
                return Ok(unsafe { owned(fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no file descriptor in console socket message",
    ))
}

/// # Safety
/// `fd` must be an open descriptor that nothing else owns.
unsafe fn owned(fd: std::os::fd::RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller promises `fd` is open and owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Makes `fd` non-blocking (for descriptors handed to the async runtime).
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let raw = fd.as_fd().as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Sets or clears FD_CLOEXEC on `fd`.
pub fn set_cloexec(fd: impl AsFd, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let raw = fd.as_fd().as_raw_fd();
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(raw, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Makes the child of `cmd` find `fd` at descriptor number `target`.
pub fn pass_fd(cmd: &mut std::process::Command, fd: std::os::fd::RawFd, target: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only
    // dup2 and fcntl, which are async-signal-safe. `fd` stays open in the parent
    // until spawn() returns, so it is valid in the child. dup2 clears
    // FD_CLOEXEC on `target`; when fd == target we clear it explicitly.
    unsafe {
        cmd.pre_exec(move || {
            if fd == target {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, target) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes the child that `cmd` starts die (SIGKILL) when the thread starting
/// it ends. The shim starts its helpers from its one runtime thread, which
/// ends only with the shim, so a helper never outlives its shim: a helper
/// left running after a shim was killed went on joining the container's
/// cgroups after containerd had removed them, and made one again. A parent
/// that died before the child could ask is caught by its parent pid.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only
    // prctl and getppid, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::other("the shim ended before its helper started"));
            }
            Ok(())
        });
    }
}

/// Registers an owned descriptor with the async runtime.
pub fn async_fd(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of `fd`, so the descriptor can be
    // neither closed nor reused while it is registered.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts().1)
}

/// Whether descriptor `fd` is open in this process and a pipe (a shell's
/// or make's stray descriptor at the same number is not taken for one).
pub fn is_pipe(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: fstat only fills `st`; on a number that is not open it fails
    // with EBADF, and the descriptor is neither taken nor closed.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `st` is a valid, writable stat buffer.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    ok && st.st_mode & libc::S_IFMT == libc::S_IFIFO
}

/// Takes ownership of a descriptor this process inherited at a known number.
///
/// # Safety
/// `fd` must be open and owned by nothing else in this process.
pub unsafe fn inherited(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: the caller's promise is `owned`'s.
    unsafe { owned(fd) }
}

/// Duplicates the descriptor behind `fd` into a new owned one.
pub fn dup(fd: impl AsFd) -> io::Result<OwnedFd> {
    fd.as_fd().try_clone_to_owned()
}

/// Runs `f` in a forked child of this single-threaded process and returns
/// what it reported: `Ok` if it returned `Ok`, else its error text (sent back
/// over a pipe, since the caller's stdio may belong to a container).
///
/// Only for the helper, which has exactly one thread: forking a
/// multi-threaded process and running arbitrary code in the child is unsound.
///
/// # Safety
/// The calling process must have exactly one thread: the child is a copy of
/// it with only the calling thread, and `f` may take locks (the allocator's,
/// stdio's) that another thread held at the fork and would never release.
pub unsafe fn in_forked_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use std::io::{Read, Write};

    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: our caller guarantees this process is single-threaded (see
    // `# Safety`); the child runs `f`, writes to a pipe and `_exit`s without
    // running the parent's exit handlers.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(err_r);
            let code = match f() {
                Ok(()) => 0,
                Err(e) => {
                    let _ = std::fs::File::from(err_w).write_all(e.as_bytes());
                    1
                }
            };
            // SAFETY: see above.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            match status {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                _ if !msg.is_empty() => Err(msg),
                other => Err(format!("forked child: {other:?}")),
            }
        }
    }
}

/// Moves `fd` to a close-on-exec descriptor numbered `min` or above (so a
/// child's `dup2` onto a low number, e.g. [`pass_fd`]'s, cannot replace it).
pub fn fd_at_least(fd: OwnedFd, min: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg};
    let raw = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC just made `raw` for us and nothing else has it.
    Ok(unsafe { owned(raw) })
}

/// Opens each of `names` in directory `dir` (O_PATH, close-on-exec) through
/// one read-only overlayfs made with the new mount API (fsopen, fsconfig,
/// fsmount; Linux 5.2): a mount that is never attached anywhere, so nothing
/// has to be unmounted, which would wait for an RCU grace period (a few ms).
/// Any open of the file for writing through the descriptor (or through
/// /proc/PID/exe of a process executing it) fails with EROFS. `empty` is an
/// empty directory, the second lower layer overlayfs wants without an upper
/// one; it may be removed as soon as this returns.
///
/// Returns the files and the mount. Keep the mount's descriptor open (or
/// hand it to a process that keeps it): closing the last one dissolves the
/// mount, with the same grace period as an unmount.
pub fn open_on_unattached_overlay(
    dir: &std::path::Path,
    names: &[&std::ffi::OsStr],
    empty: &std::path::Path,
) -> io::Result<(Vec<OwnedFd>, OwnedFd)> {
    let dir_fd = open_path(dir, libc::O_DIRECTORY)?;
    let empty_fd = open_path(empty, libc::O_DIRECTORY)?;
    let lower = std::ffi::CString::new(format!(
        "/proc/self/fd/{}:/proc/self/fd/{}",
        dir_fd.as_raw_fd(),
        empty_fd.as_raw_fd()
    ))
    .map_err(io::Error::other)?;
    let fd = |rc: libc::c_long, what: &str| -> io::Result<OwnedFd> {
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        // SAFETY: the system call just returned this new descriptor to us.
        Ok(unsafe { owned(rc as std::os::fd::RawFd) })
    };
    // SAFETY: fsopen reads the NUL-terminated name we pass; it returns a new
    // descriptor or -1 and touches no memory of ours otherwise.
    let context = fd(
        unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), libc::FSOPEN_CLOEXEC) },
        "fsopen overlay",
    )?;
    let config =
        |cmd: libc::c_uint, key: Option<&std::ffi::CStr>, value: Option<&std::ffi::CStr>| {
            let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
            // SAFETY: fsconfig reads the NUL-terminated key and value (or takes
            // null for a command) for the duration of the call, on a live context.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    context.as_raw_fd(),
                    cmd,
                    ptr(key),
                    ptr(value),
                    0,
                )
            };
            if rc < 0 {
                // The kernel explains a refusal in the context's message log.
                let e = io::Error::last_os_error();
                let mut why = [0u8; 256];
                let n = nix::unistd::read(context.as_raw_fd(), &mut why).unwrap_or(0);
                let why = String::from_utf8_lossy(&why[..n]).trim().to_string();
                return Err(io::Error::new(e.kind(), format!("fsconfig: {e} {why}")));
            }
            Ok(())
        };
    config(libc::FSCONFIG_SET_STRING, Some(c"lowerdir"), Some(&lower))?;
    config(libc::FSCONFIG_CMD_CREATE, None, None)?;
    let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    // SAFETY: fsmount takes plain integers and returns a new descriptor or -1.
    let mount = fd(
        unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                context.as_raw_fd(),
                libc::FSMOUNT_CLOEXEC,
                attrs,
            )
        },
        "fsmount",
    )?;
    let root = std::path::PathBuf::from(format!("/proc/self/fd/{}", mount.as_raw_fd()));
    let files = names
        .iter()
        .map(|name| open_path(&root.join(name), libc::O_NOFOLLOW))
        .collect::<io::Result<Vec<_>>>()?;
    Ok((files, mount))
}

/// Opens each of `names` in directory `dir` (O_PATH, close-on-exec) through
/// a read-only overlayfs mounted on `mountpoint`, then detaches that mount: the
/// descriptor is the only way left to the mount, and any open of the file for
/// writing through it (or through /proc/PID/exe of a process executing it)
/// fails with EROFS. `empty` is an empty directory: overlayfs without an
/// upper layer wants two lower ones. For kernels without the new mount API
/// ([`open_on_unattached_overlay`]): the unmount costs a grace period.
///
/// The layers are named as `/proc/self/fd/N` so that no path needs
/// overlayfs' escaping of `:` and `,`.
pub fn open_on_readonly_overlay(
    dir: &std::path::Path,
    names: &[&std::ffi::OsStr],
    empty: &std::path::Path,
    mountpoint: &std::path::Path,
) -> io::Result<Vec<OwnedFd>> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let dir_fd = open_path(dir, libc::O_DIRECTORY)?;
    let empty_fd = open_path(empty, libc::O_DIRECTORY)?;
    let options = format!(
        "lowerdir=/proc/self/fd/{}:/proc/self/fd/{}",
        dir_fd.as_raw_fd(),
        empty_fd.as_raw_fd()
    );
    mount(
        Some("overlay"),
        mountpoint,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| io::Error::other(format!("mount overlayfs: {e}")))?;
    let opened = names
        .iter()
        .map(|name| open_path(&mountpoint.join(name), libc::O_NOFOLLOW))
        .collect::<io::Result<Vec<_>>>();
    umount2(mountpoint, MntFlags::MNT_DETACH)
        .map_err(|e| io::Error::other(format!("detach overlayfs: {e}")))?;
    opened.map_err(|e| io::Error::new(e.kind(), format!("open on overlayfs: {e}")))
}

/// Opens `path` with O_PATH|O_CLOEXEC and `flags`.
fn open_path(path: &std::path::Path, flags: i32) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | flags)
        .open(path)?;
    Ok(f.into())
}

/// A sealed in-memory copy of `file`: a memfd that can never be written,
/// shrunk or grown again (F_SEAL_WRITE|SHRINK|GROW, then F_SEAL_SEAL), and
/// returned as a read-only descriptor, since a file still open for writing
/// cannot be executed (ETXTBSY).
pub fn sealed_memfd_copy(file: &mut std::fs::File, name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let memfd = memfd_create(
        name,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let mut copy = std::fs::File::from(memfd);
    io::copy(file, &mut copy)?;
    fcntl(
        copy.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    let readonly = std::fs::File::open(format!("/proc/self/fd/{}", copy.as_raw_fd()))?;
    Ok(readonly.into())
}

/// How the file behind `fd` resists writes, as far as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteGuard {
    /// On a read-only overlayfs mount: every open for writing fails (EROFS).
    ReadOnlyOverlay,
    /// A memfd sealed against writing, shrinking and growing.
    SealedMemfd,
    /// Neither.
    None,
}

/// Which [`WriteGuard`] protects the file open (not O_PATH) at `fd`.
pub fn write_guard(fd: BorrowedFd<'_>) -> io::Result<WriteGuard> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::statfs::{fstatfs, OVERLAYFS_SUPER_MAGIC};
    use nix::sys::statvfs::{fstatvfs, FsFlags};
    if fstatfs(fd)?.filesystem_type() == OVERLAYFS_SUPER_MAGIC
        && fstatvfs(fd)?.flags().contains(FsFlags::ST_RDONLY)
    {
        return Ok(WriteGuard::ReadOnlyOverlay);
    }
    let needed = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE;
    match fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS) {
        Ok(bits) if SealFlag::from_bits_truncate(bits).contains(needed) => {
            Ok(WriteGuard::SealedMemfd)
        }
        _ => Ok(WriteGuard::None),
    }
}

/// Whether process `pid` exists and has not exited (is no zombie): a
/// signal-0 probe, then its state letter in /proc.
pub fn alive(pid: i32) -> bool {
    if pid <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| runs(&stat))
}

/// Whether a `/proc/PID/stat` line says its process has not exited.
fn runs(stat: &str) -> bool {
    // The state follows the command name, which is in parentheses.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z' | 'X' | 'x') | None)
}

/// A process watched through a descriptor opened at the first check and
/// kept: a pidfd (Linux 5.3+), which polls readable once the process has
/// exited, so each later check is one `poll` with no wait; else its
/// `/proc/PID/stat`, one read per check. Either stays bound to the process
/// it was opened for, so once that one is gone a new process under the
/// same pid never passes for it.
#[derive(Debug)]
pub struct Watched {
    pid: i32,
    handle: Option<Handle>,
    /// Whether the process was found gone (for good).
    gone: bool,
}

#[derive(Debug)]
enum Handle {
    Pidfd(std::os::fd::OwnedFd),
    Stat(std::fs::File),
}

impl Watched {
    pub fn new(pid: i32) -> Watched {
        Watched {
            pid,
            handle: None,
            gone: pid <= 0,
        }
    }

    /// Whether the process exists and has not exited (is no zombie).
    pub fn alive(&mut self) -> bool {
        if self.gone {
            return false;
        }
        if self.handle.is_none() {
            self.handle = self.open();
        }
        let alive = match &self.handle {
            Some(Handle::Pidfd(fd)) => {
                use std::os::fd::AsFd;
                let mut fds = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                // Readable: it has exited (a zombie included).
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n == 0)
            }
            Some(Handle::Stat(f)) => {
                use std::os::unix::fs::FileExt;
                // A stat line is a few hundred bytes; the state is near its start.
                let mut buf = [0u8; 1024];
                f.read_at(&mut buf, 0)
                    .ok()
                    .and_then(|n| std::str::from_utf8(&buf[..n]).ok())
                    .is_some_and(runs)
            }
            None => false,
        };
        if !alive {
            self.gone = true;
            self.handle = None;
        }
        alive
    }

    fn open(&self) -> Option<Handle> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor (owned from here) or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        if fd >= 0 {
            // SAFETY: a descriptor just opened, owned by nobody else.
            return Some(Handle::Pidfd(unsafe {
                std::os::fd::OwnedFd::from_raw_fd(fd as i32)
            }));
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return None;
        }
        // An older kernel: its state in /proc.
        std::fs::File::open(format!("/proc/{}/stat", self.pid))
            .ok()
            .map(Handle::Stat)
    }
}

/// Raises this process's soft limit of open files to its hard limit (a
/// daemon that keeps files open per container needs more than the usual
/// 1024); returns the soft limit now in force.
pub fn raise_open_files() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Ok(lim.rlim_cur);
        }
        lim = raised;
    }
    Ok(lim.rlim_cur)
}

/// Keeps the descriptor `fd` this process inherited open for the rest of
/// its life, closed on exec: a mount `start` handed on (see
/// [`open_on_unattached_overlay`]).
pub fn keep_inherited(fd: std::os::fd::RawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Gives this process the short name `name` (its `comm`, first 15 bytes): a
/// program started as `/proc/self/fd/N` is otherwise called `N`.
pub fn set_process_name(name: &std::ffi::CStr) -> io::Result<()> {
    nix::sys::prctl::set_name(name)?;
    Ok(())
}

/// Brings the loopback interface up in the network namespace `netns`, as
/// runc does for a container that gets a new one (libcontainer leaves it
/// down, so `127.0.0.1` answers nothing inside). A socket belongs to the
/// namespace it was made in: this thread enters `netns` only to make one,
/// and goes back before it sets the flag through it.
pub fn loopback_up(netns: BorrowedFd<'_>) -> io::Result<()> {
    use nix::sched::{setns, CloneFlags};
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

    let own = std::fs::File::open("/proc/thread-self/ns/net")?;
    setns(netns, CloneFlags::CLONE_NEWNET)?;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    );
    setns(own.as_fd(), CloneFlags::CLONE_NEWNET)?;
    let sock = sock?;
    // SAFETY: `ifreq` is plain old data: all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `req`, a
    // live, properly sized ifreq; `sock` is an open socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_process_is_alive_until_it_exits_and_stays_gone() {
        // Through a pidfd (this kernel has them), and through /proc as on
        // a kernel without.
        for pidfd in [true, false] {
            watched_until_gone(pidfd);
        }
    }

    fn watched_until_gone(pidfd: bool) {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut watched = Watched::new(pid);
        if !pidfd {
            let stat = std::fs::File::open(format!("/proc/{pid}/stat")).unwrap();
            watched.handle = Some(Handle::Stat(stat));
        }
        assert!(watched.alive() && watched.alive(), "a running child");
        assert_eq!(
            matches!(watched.handle, Some(Handle::Pidfd(_))),
            pidfd,
            "{watched:?}"
        );
        child.kill().unwrap();
        // Killed, not yet reaped: a zombie is not alive.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while watched.alive() {
            assert!(std::time::Instant::now() < deadline, "still alive");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!alive(pid));
        child.wait().unwrap();
        assert!(!watched.alive(), "gone for good");
        assert!(!Watched::new(0).alive() && !Watched::new(-1).alive());
        assert!(runs("1 (a) b) S 0") && !runs("1 (x) Z 0") && !runs("garbage"));
    }
}
