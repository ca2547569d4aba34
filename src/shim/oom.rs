//! OOM notifications for a container's memory cgroup, from the source its
//! hierarchy names (`Hierarchy::oom_source`): an eventfd registered on
//! `memory.oom_control` (cgroup v1), or `memory.events` watched with inotify
//! (v2).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::cgroups::{Cgroup, FileError, OomSource};

/// Starts watching the memory cgroup of `cg`; each OOM kill sends one `()`.
/// The channel closes when the cgroup goes away.
pub fn watch(cg: &Cgroup) -> io::Result<mpsc::Receiver<()>> {
    match cg.oom_source()? {
        OomSource::EventFd {
            dir,
            control,
            event_control,
        } => watch_eventfd(dir, &control, &event_control),
        OomSource::Events { events } => watch_events(events),
    }
}

fn watch_eventfd(
    memory_dir: PathBuf,
    control: &Path,
    event_control: &Path,
) -> io::Result<mpsc::Receiver<()>> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    let control = std::fs::File::open(control).map_err(|source| FileError::Read {
        path: control.to_path_buf(),
        source,
    })?;
    let registration = format!("{} {}", efd.as_fd().as_raw_fd(), control.as_raw_fd());
    crate::cgroups::Files::default().write(event_control, &registration)?;
    let efd: OwnedFd = efd.into();
    let afd = crate::sys::async_fd(efd, Interest::READABLE)?;
    let (tx, rx) = mpsc::channel(4);
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
    crate::cgroups::Files::default()
        .keyed(events)
        .get("oom_kill")
        .copied()
}

fn watch_events(events: PathBuf) -> io::Result<mpsc::Receiver<()>> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    inotify
        .add_watch(&events, AddWatchFlags::IN_MODIFY)
        .map_err(|e| FileError::Read {
            path: events.clone(),
            source: e.into(),
        })?;
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
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn oom_kill_count_is_read_from_memory_events() {
        let dir = crate::testfs::FakeDir::new("oom", &[]);
        let f = dir.join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n").unwrap();
        assert_eq!(oom_kills(&f), Some(1));
        std::fs::write(&f, "low 0\n").unwrap();
        assert_eq!(oom_kills(&f), None);
    }

    #[test]
    fn each_hierarchy_names_its_oom_source() {
        let mem = crate::testfs::FakeDir::new("oom-v1", &[]);
        let v1 = Cgroup::v1(BTreeMap::from([("memory".to_string(), mem.path())]));
        assert_eq!(
            v1.oom_source().unwrap(),
            OomSource::EventFd {
                dir: mem.path(),
                control: mem.join("memory.oom_control"),
                event_control: mem.join("cgroup.event_control"),
            }
        );
        let v2 = Cgroup::v2(mem.path());
        assert_eq!(
            v2.oom_source().unwrap(),
            OomSource::Events {
                events: mem.join("memory.events")
            }
        );
        // No memory controller: no OOM events, and a clear reason.
        let none = Cgroup::v1(BTreeMap::from([("cpu".to_string(), mem.path())]));
        let err = none.oom_source().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("no memory cgroup"), "{err}");
    }

    /// v2: a rise of `oom_kill` in memory.events is one event; other changes
    /// of the file are none.
    #[tokio::test(flavor = "current_thread")]
    async fn a_v2_oom_kill_is_announced_once() {
        let dir = crate::testfs::FakeDir::new(
            "oom-v2",
            &[("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")],
        );
        let mut rx = watch(&Cgroup::v2(dir.path())).unwrap();
        let events = dir.join("memory.events");
        std::fs::write(&events, "low 0\nhigh 3\nmax 0\noom 0\noom_kill 0\n").unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        assert!(quiet.is_err(), "an event without an OOM kill");
        std::fs::write(&events, "low 0\nhigh 3\nmax 1\noom 1\noom_kill 1\n").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(got.expect("no OOM event within 5s"), Some(()));
    }

    #[test]
    fn a_v1_registration_that_fails_names_the_file() {
        // A fake cgroupfs cannot take an eventfd registration, but the
        // failure must say which file refused what.
        let mem = crate::testfs::FakeDir::new("oom-v1-fail", &[("memory.oom_control", "")]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let err = watch(&Cgroup::v1(BTreeMap::from([(
            "memory".to_string(),
            mem.path(),
        )])))
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&mem.join("cgroup.event_control").display().to_string()),
            "{msg}"
        );
    }
}
