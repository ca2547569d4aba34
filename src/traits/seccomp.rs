//! tidal's built-in seccomp profiles and how a trait's profile is combined
//! with the one the pod asked for.
//!
//! `runtime-default` is an allowlist in the spirit of the default profiles of
//! containerd and Docker: the system calls ordinary programs use are allowed;
//! what manages the kernel, namespaces, mounts, keyrings, BPF, performance
//! counters, modules, clocks, swap or reboots is refused with EPERM, and
//! `clone3` with ENOSYS so that C libraries fall back to `clone`, whose
//! namespace flags are checked. `strict` also refuses ptrace, cross-process
//! memory access, `personality`, `kcmp`, `chroot` and device nodes.
//!
//! A trait only tightens: [`stack`] keeps every refusal of the pod's own
//! profile and adds the trait's, so the result allows a system call only when
//! both profiles do (rules with argument conditions are kept from the pod's
//! profile when it has them, else taken from the trait's).

use serde_json::{json, Value};

/// What a C library and an ordinary program need.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Also allowed by runtime-default, refused by strict:
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "chroot",
];

/// What `strict` refuses on top of `runtime-default`.
const STRICT_REFUSES: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "chroot",
    "mknod",
    "mknodat",
    "personality",
    "name_to_handle_at",
    "memfd_secret",
];

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
/// | CLONE_NEWPID | CLONE_NEWNET`: clone may not make namespaces.
const CLONE_NAMESPACES: u64 = 0x7E02_0000;
/// `personality` values glibc and common programs use: PER_LINUX,
/// UNAME26, PER_LINUX32, PER_LINUX32|UNAME26, and the query 0xffffffff.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The built-in profile `name` (`runtime-default` or `strict`) as an OCI
/// `linux.seccomp` object.
pub fn builtin(name: &str) -> Option<Value> {
    let strict = match name {
        "runtime-default" => false,
        "strict" => true,
        _ => return None,
    };
    let names: Vec<&str> = ALLOWED
        .iter()
        .copied()
        .filter(|n| !(strict && STRICT_REFUSES.contains(n)))
        .collect();
    let mut syscalls = vec![
        json!({"names": names, "action": "SCMP_ACT_ALLOW"}),
        json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}),
    ];
    if !strict {
        for p in PERSONALITIES {
            syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                                 "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}]}));
        }
    }
    Some(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": syscalls,
    }))
}

fn action(rule: &Value) -> &str {
    rule.get("action").and_then(Value::as_str).unwrap_or("")
}

fn names(rule: &Value) -> Vec<String> {
    rule.get("names")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn allows_all(profile: &Value) -> bool {
    profile.get("defaultAction").and_then(Value::as_str) == Some("SCMP_ACT_ALLOW")
        && profile
            .get("syscalls")
            .and_then(Value::as_array)
            .is_none_or(|rules| rules.iter().all(|r| action(r) == "SCMP_ACT_ALLOW"))
}

/// One rule per system call name, so rules can be taken per name.
fn per_name(profile: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for rule in profile
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let names = names(rule);
        if names.is_empty() {
            continue;
        }
        // An object, since it has names; cloned once without them.
        let mut base = rule.clone();
        base["names"] = Value::Null;
        for n in names {
            let mut r = base.clone();
            r["names"] = json!([n]);
            out.push((n, r));
        }
    }
    out
}

/// Combines the pod's profile (`None`: Unconfined) with the trait's
/// `required` one so that the result is at least as strict as both.
pub fn stack(pod: Option<&Value>, required: &Value) -> Value {
    let Some(pod) = pod.filter(|p| !allows_all(p)) else {
        return required.clone();
    };
    let pod_rules = per_name(pod);
    let trait_rules = per_name(required);
    let pod_default_allows =
        pod.get("defaultAction").and_then(Value::as_str) == Some("SCMP_ACT_ALLOW");
    let mut out: Vec<Value> = Vec::new();
    // The pod's refusals stay, whatever the trait allows.
    for (_, r) in pod_rules
        .iter()
        .filter(|(_, r)| action(r) != "SCMP_ACT_ALLOW")
    {
        out.push(r.clone());
    }
    let refused_by_pod = |n: &str| {
        pod_rules
            .iter()
            .any(|(m, r)| m == n && action(r) != "SCMP_ACT_ALLOW")
    };
    let allowed_by_pod = |n: &str| {
        pod_default_allows
            || pod_rules
                .iter()
                .any(|(m, r)| m == n && action(r) == "SCMP_ACT_ALLOW")
    };
    // The trait's refusals for what the pod does not refuse itself.
    for (n, r) in trait_rules
        .iter()
        .filter(|(_, r)| action(r) != "SCMP_ACT_ALLOW")
    {
        if !refused_by_pod(n) {
            out.push(r.clone());
        }
    }
    // Allowed: what both allow. Conditional rules of the pod win.
    let mut done = std::collections::BTreeSet::new();
    for (n, r) in &trait_rules {
        if action(r) != "SCMP_ACT_ALLOW"
            || refused_by_pod(n)
            || !allowed_by_pod(n)
            || !done.insert(n.clone())
        {
            continue;
        }
        let pod_conditional: Vec<&Value> = pod_rules
            .iter()
            .filter(|(m, pr)| {
                m == n
                    && action(pr) == "SCMP_ACT_ALLOW"
                    && pr
                        .get("args")
                        .is_some_and(|a| a.as_array().is_some_and(|a| !a.is_empty()))
            })
            .map(|(_, pr)| pr)
            .collect();
        if pod_conditional.is_empty() {
            out.extend(
                trait_rules
                    .iter()
                    .filter(|(m, tr)| m == n && action(tr) == "SCMP_ACT_ALLOW")
                    .map(|(_, tr)| tr.clone()),
            );
        } else {
            out.extend(pod_conditional.into_iter().cloned());
        }
    }
    let mut result = required.clone();
    result["syscalls"] = Value::Array(out);
    if let Some(flags) = pod.get("flags") {
        result["flags"] = flags.clone();
    }
    if let Some(l) = pod.get("listenerPath") {
        result["listenerPath"] = l.clone();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(profile: &Value, name: &str) -> bool {
        let rules = per_name(profile);
        let explicit: Vec<&Value> = rules
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, r)| r)
            .collect();
        if explicit.is_empty() {
            return profile["defaultAction"] == "SCMP_ACT_ALLOW";
        }
        explicit.iter().all(|r| action(r) == "SCMP_ACT_ALLOW")
    }

    #[test]
    fn runtime_default_refuses_what_manages_the_kernel() {
        let p = builtin("runtime-default").unwrap();
        for ok in ["read", "openat", "execve", "futex", "ptrace", "clone"] {
            assert!(allowed(&p, ok), "{ok}");
        }
        for no in [
            "unshare",
            "mount",
            "setns",
            "bpf",
            "keyctl",
            "init_module",
            "reboot",
            "perf_event_open",
            "pivot_root",
            "clone3",
        ] {
            assert!(!allowed(&p, no), "{no}");
        }
        let s = builtin("strict").unwrap();
        for no in [
            "ptrace",
            "process_vm_readv",
            "chroot",
            "mknod",
            "personality",
        ] {
            assert!(!allowed(&s, no), "{no}");
        }
        assert!(builtin("lax").is_none());
        // A syscall name appears once among the unconditional allows.
        let mut seen = std::collections::BTreeSet::new();
        assert!(ALLOWED.iter().all(|n| seen.insert(n)));
    }

    #[test]
    fn unconfined_pods_get_the_trait_profile() {
        let req = builtin("runtime-default").unwrap();
        assert_eq!(stack(None, &req), req);
        let allow_all = json!({"defaultAction": "SCMP_ACT_ALLOW"});
        assert_eq!(stack(Some(&allow_all), &req), req);
    }

    #[test]
    fn stacking_keeps_the_refusals_of_both() {
        let req = builtin("runtime-default").unwrap();
        // A localhost profile that blocks mkdir and allows everything else.
        let pod = json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
        let s = stack(Some(&pod), &req);
        assert!(!allowed(&s, "mkdir") && !allowed(&s, "mkdirat"));
        assert!(!allowed(&s, "unshare") && !allowed(&s, "mount"));
        assert!(allowed(&s, "read"));
        // An allowlist that does not allow `chmod`: stays refused.
        let pod = json!({"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "write", "unshare"], "action": "SCMP_ACT_ALLOW"},
                         {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}]});
        let s = stack(Some(&pod), &req);
        assert!(allowed(&s, "read") && allowed(&s, "write"));
        assert!(!allowed(&s, "chmod"), "the pod refuses chmod");
        assert!(!allowed(&s, "unshare"), "the trait refuses unshare");
        let personality: Vec<_> = per_name(&s)
            .into_iter()
            .filter(|(n, _)| n == "personality")
            .collect();
        assert_eq!(personality.len(), 1, "the pod's conditional rule wins");
        assert_eq!(personality[0].1["args"][0]["value"], 0);
    }
}
