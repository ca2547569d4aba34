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
    OwnedFd::from_raw_fd(fd)
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

/// Takes ownership of a descriptor this process inherited at a known number.
///
/// # Safety
/// `fd` must be open and owned by nothing else in this process.
pub unsafe fn inherited(fd: std::os::fd::RawFd) -> OwnedFd {
    owned(fd)
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
pub fn in_forked_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use std::io::{Read, Write};

    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: callers are single-threaded (the helper); the child runs `f`,
    // writes to a pipe and `_exit`s without running the parent's exit handlers.
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
