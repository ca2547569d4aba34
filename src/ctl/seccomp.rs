//! tidald's seccomp profile (`config/seccomp/tidald.json`, built into
//! tidalctl) and its installation for kubelet: the DaemonSet's init
//! container runs `tidalctl seccomp-profile --install DIR` from tidald's own
//! image, which holds no shell and no `cp`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The profile, in the JSON format containerd and kubelet load for a
/// `Localhost` profile: errno EPERM by default, an allow-list of what tidald
/// calls, `setns` into network namespaces only, `clone` without namespace
/// flags, `clone3` ENOSYS (libc falls back to `clone`).
pub const PROFILE: &str = include_str!("../../config/seccomp/tidald.json");

/// The file name under the install directory: kubelet's Localhost profile
/// `tidal/tidald.json` is `/var/lib/kubelet/seccomp/tidal/tidald.json`.
pub const FILE: &str = "tidald.json";

/// Writes `dir/tidald.json` whole (a temporary file renamed over it, so a
/// container created meanwhile never reads half a profile); makes `dir` if
/// missing. Returns the file's path.
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(PROFILE.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn profile() -> Value {
        serde_json::from_str(PROFILE).expect("config/seccomp/tidald.json is JSON")
    }

    /// The rules that name `syscall`.
    fn rules(p: &Value, syscall: &str) -> Vec<Value> {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == syscall))
            .cloned()
            .collect()
    }

    #[test]
    fn denies_by_default_with_eperm() {
        let p = profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        let arches = p["architectures"].as_array().unwrap();
        assert!(arches.iter().any(|a| a == "SCMP_ARCH_X86_64"), "{arches:?}");
        assert!(
            arches.iter().any(|a| a == "SCMP_ARCH_AARCH64"),
            "{arches:?}"
        );
    }

    #[test]
    fn setns_only_into_network_namespaces() {
        let p = profile();
        let setns = rules(&p, "setns");
        assert_eq!(setns.len(), 1, "{setns:?}");
        let rule = &setns[0];
        assert_eq!(rule["action"], "SCMP_ACT_ALLOW");
        assert_eq!(rule["names"].as_array().unwrap().len(), 1, "{rule}");
        let args = rule["args"].as_array().unwrap();
        assert_eq!(args.len(), 1, "{rule}");
        assert_eq!(args[0]["index"], 1);
        assert_eq!(args[0]["op"], "SCMP_CMP_EQ");
        assert_eq!(
            args[0]["value"].as_u64(),
            Some(nix::sched::CloneFlags::CLONE_NEWNET.bits() as u64)
        );
    }

    #[test]
    fn clone_without_namespace_flags_and_clone3_enosys() {
        let p = profile();
        let clone = rules(&p, "clone");
        assert_eq!(clone.len(), 1, "{clone:?}");
        let args = clone[0]["args"].as_array().unwrap();
        assert_eq!(args.len(), 1, "{clone:?}");
        assert_eq!(args[0]["index"], 0);
        assert_eq!(args[0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(args[0]["valueTwo"], 0);
        use nix::sched::CloneFlags as F;
        let namespaces = F::CLONE_NEWNS
            | F::CLONE_NEWCGROUP
            | F::CLONE_NEWUTS
            | F::CLONE_NEWIPC
            | F::CLONE_NEWUSER
            | F::CLONE_NEWPID
            | F::CLONE_NEWNET;
        assert_eq!(args[0]["value"].as_u64(), Some(namespaces.bits() as u64));
        let clone3 = rules(&p, "clone3");
        assert_eq!(clone3.len(), 1, "{clone3:?}");
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], nix::libc::ENOSYS);
    }

    #[test]
    fn allows_nothing_that_leaves_the_container() {
        let p = profile();
        for syscall in [
            "mount",
            "umount2",
            "unshare",
            "pivot_root",
            "chroot",
            "bpf",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "perf_event_open",
            "open_by_handle_at",
            "name_to_handle_at",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "io_uring_setup",
            "userfaultfd",
            "setuid",
            "setgid",
            "kill",
            "reboot",
        ] {
            assert!(
                rules(&p, syscall).is_empty(),
                "{syscall} is named in the profile"
            );
        }
        // What tidald does call (traced while it serves its API and probes).
        let allowed = rules(&p, "openat");
        assert_eq!(allowed.len(), 1);
        for syscall in [
            "openat",
            "statx",
            "getdents64",
            "connect",
            "accept4",
            "bind",
            "listen",
            "getsockopt",
            "epoll_wait",
            "futex",
            "pidfd_open",
            "inotify_add_watch",
            "execve",
        ] {
            let r = rules(&p, syscall);
            assert!(
                r.len() == 1 && r[0]["action"] == "SCMP_ACT_ALLOW" && r[0]["args"].is_null(),
                "{syscall}: {r:?}"
            );
        }
    }

    #[test]
    fn install_writes_the_profile_whole() {
        let dir = std::env::temp_dir().join(format!("tidal-seccomp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let target = dir.join("seccomp/tidal");
        let path = install(&target).unwrap();
        assert_eq!(path, target.join("tidald.json"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), PROFILE);
        // Again over it: replaced, nothing else left in the directory.
        std::fs::write(&path, "old").unwrap();
        install(&target).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), PROFILE);
        let names: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tidald.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
