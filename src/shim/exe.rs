//! The executables the shim starts (helpers, and the serving shim itself),
//! opened so that no container can write to them.
//!
//! Helpers (and the serving shim) are started from a [`ProtectedExe`], never
//! from the binary's path: a container's processes are cloned from a helper,
//! and until they exec the container's program their /proc/PID/exe is the
//! helper's binary, which must not be writable through it.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::helper::HELPER_BIN;
use crate::sys::WriteGuard;

/// Why an executable could not be opened protected.
#[derive(Debug, thiserror::Error)]
pub enum ExeError {
    /// A file or directory could not be opened, read or made.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The helper is not installed beside the shim.
    #[error("the helper {}: {source} (install {HELPER_BIN} beside the shim)", path.display())]
    NoHelper {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An executable passed on by `start` that the kernel does not protect.
    #[error("the inherited {arg0} (fd {fd}) is not protected from writes")]
    NotProtected { arg0: String, fd: i32 },
    /// The executable's path has no directory.
    #[error("no directory in {}", .0.display())]
    NoDirectory(PathBuf),
    /// Neither overlayfs could be mounted nor the memfd copy made.
    #[error(
        "cannot protect {} from containers: read-only overlayfs: {overlay}; sealed memfd: {memfd}",
        path.display()
    )]
    Unprotectable {
        path: PathBuf,
        overlay: Box<ExeError>,
        memfd: std::io::Error,
    },
    /// Both ways of mounting the read-only overlay failed.
    #[error("fsmount: {fsmount}; mount: {mount}")]
    Overlay {
        fsmount: std::io::Error,
        mount: std::io::Error,
    },
    /// The file at the path is no longer the one that was opened.
    #[error("{} was replaced while it was opened", .0.display())]
    Replaced(PathBuf),
}

impl ExeError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ExeError::Io { path, source }
    }
}

/// An executable of tidal's, opened so that no process can write to it.
///
/// libcontainer clones a container's init (and an exec's process) from a
/// helper, so until it execs the container's program its /proc/PID/exe is
/// the helper's binary on the host: a process in the container could open it
/// (O_PATH) and reopen it for writing once nothing executes it any more
/// (runc's CVE-2019-5736). The serving shim is visible the same way to a
/// container in the host's pid namespace. So helpers and the serving shim
/// are started as `/proc/self/fd/N` (with argv\[0\] kept), where N is either
/// - the binary opened through a read-only overlayfs that is attached
///   nowhere: every open for writing fails with EROFS (checked before
///   ETXTBSY), it costs no memory and the text pages stay shared. The mount
///   is made with fsmount and never attached (Linux 5.2), or on older
///   kernels mounted in a temporary directory and detached at once; or, where
///   overlayfs cannot be mounted,
/// - a sealed memfd copy of it (one copy of the binary in memory per shim).
///
/// Without either, no helper runs (see [`HelperExe`]).
pub struct ProtectedExe {
    fd: OwnedFd,
    guard: WriteGuard,
    /// The fsmount mount, kept open: closing it would dissolve the mount,
    /// which waits for an RCU grace period.
    mount: Option<OwnedFd>,
    how: &'static str,
    arg0: OsString,
}

/// The lowest descriptor number a [`ProtectedExe`] is kept at: a child's
/// `dup2` onto fd 3 ([`crate::sys::pass_fd`]) must not replace it.
const EXE_FD_MIN: i32 = 10;

impl ProtectedExe {
    /// The executable this process runs and the helper beside it, protected
    /// together (one overlayfs over their directory): what `start` hands to
    /// the serving shim. The first carries the mount, if one was made.
    pub fn this_and_helper(scratch: &Path) -> Result<(Self, Self), ExeError> {
        let running =
            std::fs::File::open("/proc/self/exe").map_err(ExeError::io("/proc/self/exe"))?;
        let (dir, name) = this_executable()?;
        let (dir, name) = (dir.as_path(), name.as_os_str());
        let helper = dir.join(HELPER_BIN);
        let helper_file = std::fs::File::open(&helper).map_err(|source| ExeError::NoHelper {
            path: helper,
            source,
        })?;
        let names = [name, OsStr::new(HELPER_BIN)];
        let (mut fds, mount, guard, how) =
            protect(dir, &names, vec![running, helper_file], scratch)?;
        let helper_fd = fds.pop().expect("two files");
        let shim_fd = fds.pop().expect("two files");
        Ok((
            Self::new(shim_fd, guard, mount, how, arg0_or(name))?,
            Self::new(helper_fd, guard, None, how, HELPER_BIN.into())?,
        ))
    }

    /// The helper beside this process's executable, protected now: for a
    /// shim that did not inherit it (`delete`, tests).
    pub fn helper(scratch: &Path) -> Result<Self, ExeError> {
        let (dir, _) = this_executable()?;
        Self::beside(&dir, OsStr::new(HELPER_BIN), scratch)
    }

    /// The executable `name` in `dir`, protected now.
    pub fn beside(dir: &Path, name: &OsStr, scratch: &Path) -> Result<Self, ExeError> {
        let path = dir.join(name);
        let file = std::fs::File::open(&path).map_err(ExeError::io(&path))?;
        let (mut fds, mount, guard, how) = protect(dir, &[name], vec![file], scratch)?;
        let fd = fds.pop().expect("one file");
        Self::new(fd, guard, mount, how, name.to_owned())
    }

    /// An executable `start` opened protected and passed on as `fd`: refused
    /// unless the kernel confirms that it cannot be written.
    pub fn inherited(fd: OwnedFd, arg0: &str) -> Result<Self, ExeError> {
        match crate::sys::write_guard(fd.as_fd()) {
            Ok(WriteGuard::None) => Err(ExeError::NotProtected {
                arg0: arg0.into(),
                fd: fd.as_raw_fd(),
            }),
            Ok(guard) => Self::new(fd, guard, None, "inherited", arg0.into()),
            Err(e) => Err(ExeError::io(format!("the inherited {arg0}"))(e)),
        }
    }

    fn new(
        fd: OwnedFd,
        guard: WriteGuard,
        mount: Option<OwnedFd>,
        how: &'static str,
        arg0: OsString,
    ) -> Result<Self, ExeError> {
        let high = |fd| crate::sys::fd_at_least(fd, EXE_FD_MIN).map_err(ExeError::io(&arg0));
        Ok(Self {
            fd: high(fd)?,
            guard,
            mount: mount.map(high).transpose()?,
            how,
            arg0,
        })
    }

    /// The unattached mount the executable lives on, if this process made
    /// one: to hand to a process that outlives this one (the serving shim).
    pub fn mount(&self) -> Option<BorrowedFd<'_>> {
        self.mount.as_ref().map(|m| m.as_fd())
    }

    /// The protected file itself: to hand to the serving shim.
    pub fn file(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A command that runs this executable with its own name as argv\[0\].
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        cmd.arg0(&self.arg0);
        cmd
    }

    /// How it is protected, in words for the log.
    pub fn describe(&self) -> String {
        let what = match self.guard {
            WriteGuard::ReadOnlyOverlay => "a read-only overlayfs attached nowhere",
            WriteGuard::SealedMemfd => "a sealed memfd copy",
            WriteGuard::None => "nothing",
        };
        format!("{} from {what} ({})", self.arg0.to_string_lossy(), self.how)
    }
}

/// The directory and file name this process's executable was started from.
fn this_executable() -> Result<(PathBuf, OsString), ExeError> {
    let path = std::fs::read_link("/proc/self/exe").map_err(ExeError::io("/proc/self/exe"))?;
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_owned())),
        _ => Err(ExeError::NoDirectory(path)),
    }
}

/// This process's argv\[0\], or `name` without one.
fn arg0_or(name: &OsStr) -> OsString {
    std::env::args_os()
        .next()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| name.to_owned())
}

type Protected = (Vec<OwnedFd>, Option<OwnedFd>, WriteGuard, &'static str);

/// Opens the executables `names` in `dir`, which `files` are (opened on the
/// host, in the same order), so that they cannot be written: through one
/// read-only overlayfs over `dir`, else as sealed memfd copies. Files that
/// are protected already (a shim started from a protected executable) are
/// kept as they are.
fn protect(
    dir: &Path,
    names: &[&OsStr],
    mut files: Vec<std::fs::File>,
    scratch: &Path,
) -> Result<Protected, ExeError> {
    let guards = files
        .iter()
        .map(|f| crate::sys::write_guard(f.as_fd()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ExeError::io(dir))?;
    if let Some(&guard) = guards.first().filter(|g| **g != WriteGuard::None) {
        if guards.iter().all(|g| *g == guard) {
            let fds = files.into_iter().map(OwnedFd::from).collect();
            return Ok((fds, None, guard, "inherited"));
        }
    }
    let overlay = match overlay_open(dir, names, &files, scratch) {
        Ok((fds, mount, how)) => return Ok((fds, mount, WriteGuard::ReadOnlyOverlay, how)),
        Err(e) => e,
    };
    let mut copies = Vec::new();
    for (file, name) in files.iter_mut().zip(names) {
        let cname =
            CString::new(name.as_encoded_bytes().to_vec()).unwrap_or_else(|_| c"tidal".to_owned());
        match crate::sys::sealed_memfd_copy(file, &cname) {
            Ok(fd) => copies.push(fd),
            Err(memfd) => {
                return Err(ExeError::Unprotectable {
                    path: dir.join(name),
                    overlay: Box::new(overlay),
                    memfd,
                })
            }
        }
    }
    Ok((copies, None, WriteGuard::SealedMemfd, "made now"))
}

/// Opens `names` through a read-only overlayfs whose lower layer is `dir`:
/// with fsmount (the mount is returned, to keep), else with mount(2) and an
/// immediate detach. Checks that each is the same file as `files` opened on
/// the host (a path may have been replaced since). Leaves no mount and no
/// directory behind. Also says which way it was made.
fn overlay_open(
    dir: &Path,
    names: &[&OsStr],
    files: &[std::fs::File],
    scratch: &Path,
) -> Result<(Vec<OwnedFd>, Option<OwnedFd>, &'static str), ExeError> {
    use std::os::unix::fs::MetadataExt;
    crate::paths::private_dir(scratch).map_err(ExeError::io(scratch))?;
    // Empty: the second lower layer (removed as soon as the overlay exists).
    let tmp = nix::unistd::mkdtemp(&scratch.join(".exe-XXXXXX"))
        .map_err(|e| ExeError::io(scratch)(e.into()))?;
    let (empty, mnt) = (tmp.join("empty"), tmp.join("mnt"));
    let opened = match crate::sys::open_on_unattached_overlay(dir, names, &tmp) {
        Ok((fds, mount)) => Ok((fds, Some(mount), "fsmount, never attached")),
        Err(fsmount) => std::fs::create_dir(&empty)
            .and_then(|_| std::fs::create_dir(&mnt))
            .and_then(|_| crate::sys::open_on_readonly_overlay(dir, names, &empty, &mnt))
            .map(|fds| (fds, None, "mount(2), detached at once"))
            .map_err(|mount| ExeError::Overlay { fsmount, mount }),
    };
    // No mount is attached here (the fallback's is detached): plain rmdir
    // is enough, and fails rather than removing anything a mount would show.
    let removed = [&mnt, &empty, &tmp]
        .into_iter()
        .filter(|d| d.exists())
        .try_for_each(std::fs::remove_dir)
        .map_err(ExeError::io(&tmp));
    let (fds, mount, how) = opened?;
    removed?;
    // Each path still names the file opened on the host (overlayfs may
    // number inodes its own way, so the identity is checked on the host's
    // path, after the lookup through the overlay), and the overlay shows the
    // same content.
    let content = |m: &std::fs::Metadata| (m.size(), m.mtime(), m.mtime_nsec());
    for ((fd, name), file) in fds.iter().zip(names).zip(files) {
        let path = dir.join(name);
        let seen = crate::sys::dup(fd)
            .map(std::fs::File::from)
            .and_then(|f| f.metadata())
            .map_err(ExeError::io(format!("{} on overlayfs", path.display())))?;
        let host = std::fs::metadata(&path).map_err(ExeError::io(&path))?;
        let ran = file.metadata().map_err(ExeError::io(&path))?;
        if (host.dev(), host.ino()) != (ran.dev(), ran.ino()) || content(&seen) != content(&ran) {
            return Err(ExeError::Replaced(path));
        }
    }
    Ok((fds, mount, how))
}

/// The protected helper executable (`tidal-shim-helper`), made once on
/// first use (a `delete` usually starts no helper at all) or given ready. If
/// it could not be made, every helper fails with that reason: tidal does not
/// run containers from an executable they could write.
pub struct HelperExe {
    cell: OnceLock<Result<ProtectedExe, ExeError>>,
    scratch: PathBuf,
}

impl HelperExe {
    /// Protects the helper beside this process's executable when first
    /// needed, with temporary directories under `scratch`.
    pub fn lazy(scratch: PathBuf) -> Self {
        Self {
            cell: OnceLock::new(),
            scratch,
        }
    }

    /// A helper executable protected already (or the reason it could not be).
    pub fn ready(exe: Result<ProtectedExe, ExeError>) -> Self {
        Self {
            cell: OnceLock::from(exe),
            scratch: PathBuf::new(),
        }
    }

    pub fn get(&self) -> Result<&ProtectedExe, &ExeError> {
        self.cell
            .get_or_init(|| ProtectedExe::helper(&self.scratch))
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Opens `path` O_WRONLY|O_APPEND (never truncating) and closes it.
    fn open_for_append(path: &str) -> Result<(), i32> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| e.raw_os_error().unwrap_or(0))
    }

    /// What `delete` does for the helper: protect an executable that is not
    /// protected yet (this test binary), then run it. As root through
    /// overlayfs, leaving nothing in the scratch directory; without root as a
    /// sealed memfd.
    #[test]
    fn an_executable_is_protected_on_first_use() {
        let scratch = std::env::temp_dir().join(format!("tidal-exe-{}", std::process::id()));
        let me = std::env::current_exe().unwrap();
        let exe = HelperExe::ready(ProtectedExe::beside(
            me.parent().unwrap(),
            me.file_name().unwrap(),
            &scratch,
        ));
        let got = exe.get().expect("protect the test binary");
        let path = format!("/proc/self/fd/{}", got.fd.as_raw_fd());
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(got.guard, WriteGuard::ReadOnlyOverlay);
            assert!(got.mount.is_some(), "{}", got.describe());
            assert_eq!(open_for_append(&path), Err(libc::EROFS));
            let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
            assert!(left.is_empty(), "left in the scratch dir: {left:?}");
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(!mounts.contains(&*scratch.to_string_lossy()), "{mounts}");
        } else {
            assert_eq!(got.guard, WriteGuard::SealedMemfd);
        }
        let same = std::fs::File::open(&path).unwrap();
        assert_eq!(
            crate::sys::write_guard(same.as_fd()).unwrap(),
            got.guard,
            "the guard is recognised again (the serving shim's check)"
        );
        let listed = got
            .command()
            .args(["--list", "--format=terse"])
            .output()
            .unwrap();
        assert!(listed.status.success());
        assert!(String::from_utf8_lossy(&listed.stdout).contains("protected_on_first_use"));
        let _ = std::fs::remove_dir(&scratch);
    }

    /// What `start` does: the shim and the helper beside it protected by one
    /// overlay (as root), each runnable, neither writable; a missing helper
    /// is named.
    #[test]
    fn two_executables_are_protected_together() {
        let dir = std::env::temp_dir().join(format!("tidal-exes-{}", std::process::id()));
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["shim", "helper"] {
            std::fs::copy("/proc/self/exe", bin.join(name)).unwrap();
        }
        let names = [OsStr::new("shim"), OsStr::new("helper")];
        let files = names
            .iter()
            .map(|n| std::fs::File::open(bin.join(n)).unwrap())
            .collect();
        let (fds, mount, guard, how) = protect(&bin, &names, files, &scratch).unwrap();
        assert_eq!(fds.len(), 2);
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(guard, WriteGuard::ReadOnlyOverlay, "{how}");
            assert_eq!(mount.is_some(), how.starts_with("fsmount"));
        } else {
            assert_eq!(guard, WriteGuard::SealedMemfd);
        }
        for fd in fds {
            let exe = ProtectedExe::new(fd, guard, None, how, "t".into()).unwrap();
            let path = format!("/proc/self/fd/{}", exe.fd.as_raw_fd());
            assert!(open_for_append(&path).is_err(), "{}", exe.describe());
            let listed = exe.command().args(["--list"]).output().unwrap();
            assert!(listed.status.success(), "{}", exe.describe());
        }
        drop(mount);
        std::fs::remove_file(bin.join("helper")).unwrap();
        let missing = ProtectedExe::beside(&bin, OsStr::new("helper"), &scratch)
            .err()
            .expect("no helper");
        assert!(missing.to_string().contains("helper"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sealed_memfd_copy_cannot_change() {
        let mut exe = std::fs::File::open("/proc/self/exe").unwrap();
        let fd = crate::sys::sealed_memfd_copy(&mut exe, c"copy").unwrap();
        assert_eq!(
            crate::sys::write_guard(fd.as_fd()).unwrap(),
            WriteGuard::SealedMemfd
        );
        // A copy: writing to it could not harm the binary, and must fail.
        let copy = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let target = std::fs::read_link(&copy).unwrap();
        assert!(
            target.to_string_lossy().starts_with("/memfd:copy"),
            "{}",
            target.display()
        );
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&copy)
            .unwrap();
        let err = w.write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        drop(w);
        assert_eq!(
            std::fs::File::from(crate::sys::dup(&fd).unwrap())
                .metadata()
                .unwrap()
                .len(),
            exe.metadata().unwrap().len()
        );
        // The fallback runs: started from the copy.
        let copy =
            ProtectedExe::new(fd, WriteGuard::SealedMemfd, None, "test", "copy".into()).unwrap();
        let listed = copy
            .command()
            .args(["--list", "--format=terse"])
            .output()
            .unwrap();
        assert!(listed.status.success(), "{listed:?}");
    }
}
