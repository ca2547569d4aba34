//! OOM notifications for a container's memory cgroup: `memory.oom_control`
//! with an eventfd on cgroup v1, `memory.events` watched with inotify on v2.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::cgroups::Cgroup;

/// Starts watching the memory cgroup of `cg`; each OOM kill sends one `()`.
/// The channel closes when the cgroup goes away.
pub fn watch(cg: &Cgroup) -> io::Result<mpsc::Receiver<()>> {
    match cg {
        Cgroup::V1(_) => match cg.dir("memory") {
            Some(dir) => watch_v1(dir),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no memory cgroup")),
        },
        Cgroup::V2(dir) => watch_v2(dir.clone()),
    }
}

fn watch_v1(dir: &Path) -> io::Result<mpsc::Receiver<()>> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    let control = std::fs::File::open(dir.join("memory.oom_control"))?;
    std::fs::write(
        dir.join("cgroup.event_control"),
        format!("{} {}", efd.as_fd().as_raw_fd(), control.as_raw_fd()),
    )?;
    let efd: OwnedFd = efd.into();
    let afd = crate::sys::async_fd(efd, Interest::READABLE)?;
    let (tx, rx) = mpsc::channel(4);
    let memory_dir = dir.to_path_buf();
    tokio::spawn(async move {
        let _control = control; // keep registered for the eventfd's life
        loop {
            let Ok(mut guard) = afd.readable().await else {
                break;
            };
            let mut buf = [0u8; 8];
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.as_raw_fd(), &mut buf)?)) {
                Ok(Ok(8)) => {
                    // The kernel also signals the eventfd when the cgroup is removed.
                    if !memory_dir.exists() {
                        break;
                    }
                    if tx.send(()).await.is_err() {
                        break;
                    }
                }
                Ok(_) => break,
                Err(_would_block) => continue,
            }
        }
    });
    Ok(rx)
}

fn oom_kills(events: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(events).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

fn watch_v2(dir: PathBuf) -> io::Result<mpsc::Receiver<()>> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let events = dir.join("memory.events");
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    inotify.add_watch(&events, AddWatchFlags::IN_MODIFY)?;
    let mut seen = oom_kills(&events).unwrap_or(0);
    // The watch lives as long as the inotify descriptor, which the AsyncFd owns.
    let afd = crate::sys::async_fd(crate::sys::dup(inotify.as_fd())?, Interest::READABLE)?;
    drop(inotify);
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = afd.readable().await else {
                break;
            };
            let mut buf = [0u8; 4096];
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.as_raw_fd(), &mut buf)?)) {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => break,
                Err(_would_block) => continue,
            }
            let Some(now) = oom_kills(&events) else { break };
            if now > seen {
                seen = now;
                if tx.send(()).await.is_err() {
                    break;
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_count_is_read_from_memory_events() {
        let dir = crate::testfs::FakeDir::new("oom", &[]);
        let f = dir.join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n").unwrap();
        assert_eq!(oom_kills(&f), Some(1));
        std::fs::write(&f, "low 0\n").unwrap();
        assert_eq!(oom_kills(&f), None);
    }
}
