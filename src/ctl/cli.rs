//! tidalctl's command line, declared with clap: every command, its flags,
//! `--help` at each level, and shell completions generated from the same
//! declaration.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::quantity;

/// How containers may be named, shown under the help of the commands that
/// take one.
const ID_HELP: &str = "\
ID: a container id, a unique prefix of one (4 or more characters), or its
Kubernetes name, POD/CONTAINER or NAMESPACE/POD/CONTAINER.";

const TOP_HELP: &str = "\
ID: a container id, a unique prefix of one (4 or more characters), or its
Kubernetes name, POD/CONTAINER or NAMESPACE/POD/CONTAINER.

tidalctl talks to tidald's API at --socket, else DIR/.api/tidald.sock for
--state-dir DIR, else $TIDAL_STATE_DIR/.api/tidald.sock ($TIDAL_STATE_DIR:
/run/tidal when unset). `check` and `node` work offline.";

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "tidalctl",
    version,
    about = "The operator's command line for tidal: containers' live limits, resizes, \
             their history, and OAM traits",
    after_help = TOP_HELP,
    subcommand_value_name = "COMMAND",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// tidald's API socket (wins over --state-dir)
    #[arg(
        long,
        value_name = "PATH",
        global = true,
        help_heading = "Global options"
    )]
    pub socket: Option<PathBuf>,
    /// tidal's state directory; the API socket is DIR/.api/tidald.sock
    #[arg(
        long,
        value_name = "DIR",
        global = true,
        help_heading = "Global options"
    )]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// A command and its arguments.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// List tidal's containers: pod, QoS, live and declared limits, usage,
    /// and who changed them (OVERLAY)
    Ps {
        /// Print as a table or as json
        #[arg(short, long, value_enum, default_value_t, value_name = "FORMAT")]
        output: Output,
        /// Show full container ids (the table shortens them to 12
        /// characters; json always has them in full)
        #[arg(long)]
        no_trunc: bool,
    },
    /// Change a running container's limits in place
    #[command(
        after_help = ID_HELP,
        group(ArgGroup::new("limit").required(true).multiple(true).args(["cpu_millis", "memory_bytes", "cpuset"]))
    )]
    Resize(Resize),
    /// The container's resize revisions
    #[command(after_help = ID_HELP)]
    History {
        #[command(flatten)]
        target: Target,
        /// Print as a table or as json
        #[arg(short, long, value_enum, default_value_t, value_name = "FORMAT")]
        output: Output,
    },
    /// Restore the limits as they were right after REVISION (0: before the
    /// first)
    #[command(after_help = ID_HELP)]
    Rollback {
        #[command(flatten)]
        target: Target,
        /// The revision to return to (see `history`)
        revision: u64,
        /// Only if REV is still the container's last revision (refused,
        /// changing nothing, if anyone changed it since)
        #[arg(long, value_name = "REV")]
        if_revision: Option<u64>,
    },
    /// Print revisions as they are recorded, by anyone (all containers
    /// without ID)
    #[command(after_help = ID_HELP)]
    Watch {
        /// The containerd namespace to look for ID in
        #[arg(short, long)]
        namespace: Option<String>,
        /// The container to watch
        id: Option<String>,
    },
    /// The OAM traits this node supports (its trait catalogue)
    Traits {
        /// Print as a table or as json
        #[arg(
            short,
            long,
            value_enum,
            default_value_t,
            value_name = "FORMAT",
            global = true
        )]
        output: Output,
        #[command(subcommand)]
        describe: Option<TraitsCommand>,
    },
    /// The cron-vertical-scaler's jobs on each container that carries the
    /// trait: what each sets, its last and next firing, and the outcome
    Cron {
        /// Print as a table or as json
        #[arg(short, long, value_enum, default_value_t, value_name = "FORMAT")]
        output: Output,
        /// Show full container ids
        #[arg(long)]
        no_trunc: bool,
    },
    /// This node's cgroups as tidal sees them, offline: the hierarchy
    /// (v1 or v2) and its controllers, whether systemd runs, and which
    /// cgroup drivers tidal can give containers here
    Node {
        /// Print as a table or as json
        #[arg(short, long, value_enum, default_value_t, value_name = "FORMAT")]
        output: Output,
    },
    /// What to check first on a node: containerd and tidal's runtime handler
    /// in its config, the shim and helper it will start, cgroups and the
    /// cgroup driver, tidald, the trait catalogue and the policy file
    ///
    /// Each problem comes with its fix; the exit code is 1 when there is one.
    Doctor {
        /// Print as a table or as json
        #[arg(short, long, value_enum, default_value_t, value_name = "FORMAT")]
        output: Output,
        /// containerd's config file
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/etc/containerd/config.toml"
        )]
        containerd_config: PathBuf,
        /// The containerd binary, when none runs with that config
        #[arg(long, value_name = "BIN", default_value = "containerd")]
        containerd: PathBuf,
        /// tidald's policy file [default: /etc/tidal/policy.yaml if it exists]
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Check an OAM application file against the trait catalogue, offline
    ///
    /// FILE holds OAM Application, ApplicationConfiguration and Component
    /// documents; every problem found is reported, each naming where it is.
    Check {
        /// The catalogue's directory [default: $TIDAL_TRAITS_DIR,
        /// /etc/tidal/traits or the built-in one]
        #[arg(long, value_name = "DIR")]
        traits: Option<PathBuf>,
        /// The YAML file (- for standard input)
        file: PathBuf,
    },
    /// The node's resource policy engine: its status, decisions and
    /// controls
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Each container's live limits and profile (CPU p50/p95, throttling,
    /// working set, probe latency p95), refreshed in place like top
    ///
    /// The profile is the policy engine's, over its shortest window; it
    /// needs tidald to run with a policy file (tidald --policy FILE).
    Top {
        /// Print as a table or as json (json prints once)
        #[arg(short, long, value_enum, default_value_t, value_name = "FORMAT")]
        output: Output,
        /// Print the table once and exit
        #[arg(long)]
        once: bool,
        /// Show full container ids
        #[arg(long)]
        no_trunc: bool,
    },
    /// Print a shell's completion script for tidalctl
    Completions { shell: Shell },
    /// Print tidald's seccomp profile (config/seccomp/tidald.json), or
    /// install it for kubelet, offline
    ///
    /// The DaemonSet's init container runs `seccomp-profile --install` into
    /// the node's /var/lib/kubelet/seccomp/tidal, where tidald's container
    /// then finds it as its Localhost profile `tidal/tidald.json`.
    SeccompProfile {
        /// Write DIR/tidald.json (replacing it whole) instead of printing it
        #[arg(long, value_name = "DIR")]
        install: Option<PathBuf>,
    },
    /// Print the version
    Version,
}

/// `traits describe NAME`, `traits kubevela`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum TraitsCommand {
    /// A trait's rules and the schema of its properties
    Describe {
        /// The trait's name (see `tidalctl traits`)
        name: String,
    },
    /// KubeVela TraitDefinitions (CUE templates) for the trait catalogue,
    /// offline
    ///
    /// One definition per trait: its properties' schema as the CUE
    /// parameter, and a patch that puts tidal's annotations on the pod
    /// template of the component's workload (trait.tidal.dev/<name> with the
    /// properties as JSON, tidal.dev/workload-type, tidal.dev/app,
    /// tidal.dev/component). Apply them with kubectl; see docs/traits.md.
    Kubevela {
        /// The catalogue's directory [default: $TIDAL_TRAITS_DIR,
        /// /etc/tidal/traits or the built-in one]
        #[arg(long, value_name = "DIR")]
        traits: Option<PathBuf>,
        /// Write DIR/<trait>.yaml for each trait instead of printing them
        /// all as one YAML stream
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// `policy ...`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum PolicyCommand {
    /// Mode, rules and where they came from, node health, suffering
    /// containers, the engine's overlays and its last decisions
    Status {
        /// Print as text or as json
        #[arg(short, long, value_enum, default_value_t, value_name = "FORMAT")]
        output: Output,
    },
    /// The decision log, oldest first
    Decisions {
        /// Then print decisions as the engine makes them, until interrupted
        #[arg(short, long)]
        follow: bool,
        /// Print as a table or as json (one object a line with --follow)
        #[arg(short, long, value_enum, default_value_t, value_name = "FORMAT")]
        output: Output,
    },
    /// A container's profile: percentiles of each metric over each window,
    /// and the predictions
    #[command(after_help = ID_HELP)]
    Profile {
        #[command(flatten)]
        target: Target,
        /// Print as a table or as json
        #[arg(short, long, value_enum, default_value_t, value_name = "FORMAT")]
        output: Output,
    },
    /// Stop deciding (data is still collected) until `resume`
    Pause,
    /// Decide again
    Resume,
    /// Read the policy file again now, as SIGHUP does (a file that is
    /// refused keeps the running rules and says why)
    Reload,
    /// Apply decisions (enforce) or only record them (dry-run), over the
    /// policy file's mode and tidald's --policy-mode, until tidald restarts
    Mode { mode: PolicyMode },
}

/// The engine's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyMode {
    Enforce,
    DryRun,
}

/// A container named on the command line.
#[derive(Debug, Default, Clone, PartialEq, Eq, Args)]
pub struct Target {
    /// The containerd namespace to look for ID in
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The container
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `resize`'s arguments; at least one limit is required.
#[derive(Debug, Default, PartialEq, Eq, Args)]
pub struct Resize {
    /// The containerd namespace to look for ID in
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The container
    #[arg(value_name = "ID")]
    pub id: String,
    /// CPU limit, as 500m or 1.5 (cores)
    #[arg(long = "cpu", value_name = "Q", value_parser = cpu)]
    pub cpu_millis: Option<u64>,
    /// Memory limit, as 256Mi, 1Gi or bytes
    #[arg(long = "memory", value_name = "Q", value_parser = memory)]
    pub memory_bytes: Option<u64>,
    /// CPUs the container may run on, as 0-3,6
    #[arg(long, value_name = "CPUS")]
    pub cpuset: Option<String>,
    /// Why, recorded in the revision
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Reclaim memory first when shrinking below current usage (refused
    /// otherwise)
    #[arg(long)]
    pub reclaim: bool,
    /// Only if REV is still the container's last revision (refused,
    /// changing nothing, if anyone changed it since: see `history`)
    #[arg(long, value_name = "REV")]
    pub if_revision: Option<u64>,
}

/// `-o`: how a command prints.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

fn cpu(s: &str) -> Result<u64, quantity::QuantityError> {
    quantity::parse_cpu(s)
}

fn memory(s: &str) -> Result<u64, quantity::QuantityError> {
    quantity::parse_memory(s)
}

/// Parses a whole command line (program name first); returns tidald's
/// socket and the command. `--help` and `--version` come back as errors of
/// their kind, for `clap::Error::exit` to print and exit 0.
pub fn parse<I, T>(args: I) -> Result<(PathBuf, Command), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let socket = match (cli.socket, cli.state_dir) {
        (Some(socket), _) => socket,
        (None, Some(dir)) => crate::paths::default_socket(&dir),
        (None, None) => crate::paths::default_socket(&crate::paths::state_dir()),
    };
    Ok((socket, cli.command))
}

/// Writes `shell`'s completion script for tidalctl to `out`.
pub fn completions(shell: Shell, out: &mut dyn std::io::Write) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "tidalctl", out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn args(s: &str) -> Vec<String> {
        std::iter::once("tidalctl")
            .chain(s.split_whitespace())
            .map(String::from)
            .collect()
    }

    #[test]
    fn the_declaration_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn resize_command_line() {
        let (socket, cmd) = parse(args(
            "--state-dir /x resize -n k8s.io web --cpu 500m --memory 256Mi",
        ))
        .unwrap();
        assert_eq!(
            socket,
            PathBuf::from("/x/.api/tidald.sock"),
            "--state-dir names tidald's socket"
        );
        let (socket, _) = parse(args("--socket /y.sock ps")).unwrap();
        assert_eq!(socket, PathBuf::from("/y.sock"));
        // After the command too, and --socket wins over --state-dir.
        let (socket, _) = parse(args("ps --state-dir /x --socket /y.sock")).unwrap();
        assert_eq!(socket, PathBuf::from("/y.sock"));
        assert_eq!(
            cmd,
            Command::Resize(Resize {
                namespace: Some("k8s.io".into()),
                id: "web".into(),
                cpu_millis: Some(500),
                memory_bytes: Some(256 << 20),
                cpuset: None,
                reason: None,
                reclaim: false,
                if_revision: None,
            })
        );
        let (_, cmd) = parse(args("resize web --cpuset 0-1 --reclaim --reason x")).unwrap();
        assert_eq!(
            cmd,
            Command::Resize(Resize {
                id: "web".into(),
                cpuset: Some("0-1".into()),
                reason: Some("x".into()),
                reclaim: true,
                ..Default::default()
            })
        );
        let (_, cmd) = parse(args("rollback -n k8s.io web 3")).unwrap();
        assert_eq!(
            cmd,
            Command::Rollback {
                target: Target {
                    namespace: Some("k8s.io".into()),
                    id: "web".into()
                },
                revision: 3,
                if_revision: None,
            }
        );
        let (_, cmd) = parse(args("rollback web 3 --if-revision 5")).unwrap();
        assert!(matches!(
            cmd,
            Command::Rollback {
                revision: 3,
                if_revision: Some(5),
                ..
            }
        ));
    }

    #[test]
    fn every_command_keeps_its_flags() {
        let cmd = |s: &str| parse(args(s)).unwrap().1;
        assert_eq!(
            cmd("ps"),
            Command::Ps {
                output: Output::Table,
                no_trunc: false
            }
        );
        assert_eq!(
            cmd("ps -o json --no-trunc"),
            Command::Ps {
                output: Output::Json,
                no_trunc: true
            }
        );
        assert_eq!(
            cmd("history shop/web-1/cart --output json"),
            Command::History {
                target: Target {
                    namespace: None,
                    id: "shop/web-1/cart".into()
                },
                output: Output::Json
            }
        );
        assert_eq!(
            cmd("watch"),
            Command::Watch {
                namespace: None,
                id: None
            }
        );
        assert_eq!(
            cmd("watch -n tidal abcd"),
            Command::Watch {
                namespace: Some("tidal".into()),
                id: Some("abcd".into())
            }
        );
        let describe = Some(TraitsCommand::Describe { name: "qos".into() });
        assert_eq!(
            cmd("traits describe qos -o json"),
            Command::Traits {
                output: Output::Json,
                describe: describe.clone()
            }
        );
        assert_eq!(
            cmd("traits -o json describe qos"),
            Command::Traits {
                output: Output::Json,
                describe
            }
        );
        assert_eq!(
            cmd("traits kubevela --traits /t --out /o"),
            Command::Traits {
                output: Output::Table,
                describe: Some(TraitsCommand::Kubevela {
                    traits: Some("/t".into()),
                    out: Some("/o".into()),
                }),
            }
        );
        assert_eq!(
            cmd("check --traits /t -"),
            Command::Check {
                traits: Some("/t".into()),
                file: "-".into()
            }
        );
        assert_eq!(cmd("version"), Command::Version);
        assert_eq!(
            cmd("node -o json"),
            Command::Node {
                output: Output::Json
            }
        );
        let policy = |command| Command::Policy { command };
        assert_eq!(
            cmd("policy status"),
            policy(PolicyCommand::Status {
                output: Output::Table
            })
        );
        assert_eq!(
            cmd("policy decisions -f -o json"),
            policy(PolicyCommand::Decisions {
                follow: true,
                output: Output::Json
            })
        );
        assert_eq!(
            cmd("policy decisions"),
            policy(PolicyCommand::Decisions {
                follow: false,
                output: Output::Table
            })
        );
        assert_eq!(cmd("policy pause"), policy(PolicyCommand::Pause));
        assert_eq!(cmd("policy resume"), policy(PolicyCommand::Resume));
        assert_eq!(cmd("policy reload"), policy(PolicyCommand::Reload));
        assert_eq!(
            cmd("policy mode dry-run"),
            policy(PolicyCommand::Mode {
                mode: PolicyMode::DryRun
            })
        );
        assert_eq!(
            cmd("policy mode enforce"),
            policy(PolicyCommand::Mode {
                mode: PolicyMode::Enforce
            })
        );
        assert_eq!(
            cmd("policy profile -n k8s.io shop/web/svc -o json"),
            policy(PolicyCommand::Profile {
                target: Target {
                    namespace: Some("k8s.io".into()),
                    id: "shop/web/svc".into()
                },
                output: Output::Json
            })
        );
        assert_eq!(
            cmd("top"),
            Command::Top {
                output: Output::Table,
                once: false,
                no_trunc: false
            }
        );
        assert_eq!(
            cmd("top --once --no-trunc"),
            Command::Top {
                output: Output::Table,
                once: true,
                no_trunc: true
            }
        );
        assert_eq!(
            cmd("top -o json"),
            Command::Top {
                output: Output::Json,
                once: false,
                no_trunc: false
            }
        );
        assert_eq!(
            cmd("completions zsh"),
            Command::Completions { shell: Shell::Zsh }
        );
        assert_eq!(
            cmd("seccomp-profile"),
            Command::SeccompProfile { install: None }
        );
        assert_eq!(
            cmd("seccomp-profile --install /d"),
            Command::SeccompProfile {
                install: Some("/d".into())
            }
        );
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let err = |s: &str| {
            let e = parse(args(s)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{s}: {e}");
            e.to_string()
        };
        let e = err("resize web");
        assert!(e.contains("--cpu <Q>|--memory <Q>|--cpuset <CPUS>"), "{e}");
        assert!(err("resize --cpu 1").contains("<ID>"));
        assert!(err("resize web --cpu").contains("--cpu <Q>"));
        assert!(err("resize web --cpu lots").contains("cpu \"lots\" is not a number"));
        assert!(err("resize web --memory 0").contains("greater than zero"));
        assert!(err("frobnicate").contains("unrecognized subcommand 'frobnicate'"));
        let e = err("ps -o yaml");
        assert!(e.contains("'yaml'") && e.contains("table, json"), "{e}");
        assert!(err("rollback web").contains("<REVISION>"));
        let e = err("rollback web x");
        assert!(e.contains("'x'") && e.contains("<REVISION>"), "{e}");
        assert!(err("history").contains("<ID>"));
        assert!(err("watch a b").contains("unexpected argument 'b'"));
        assert!(err("check").contains("<FILE>"));
        assert!(err("completions tcsh").contains("bash, zsh, fish"));
        let e = err("policy mode fast");
        assert!(
            e.contains("'fast'") && e.contains("enforce, dry-run"),
            "{e}"
        );
        assert!(err("policy").contains("status"));
        assert!(err("policy profile").contains("<ID>"));
        assert!(err("top --follow").contains("unexpected argument '--follow'"));
    }

    #[test]
    fn help_is_asked_for_not_refused() {
        for line in [
            "--help",
            "-h",
            "resize --help",
            "traits describe -h",
            "ps -h",
        ] {
            let e = parse(args(line)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{line}");
            assert_eq!(e.exit_code(), 0, "{line}");
        }
        let e = parse(args("--version")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayVersion);
        let help = Cli::command().render_help().to_string();
        for want in [
            "--state-dir <DIR>",
            "--socket <PATH>",
            "resize",
            "check",
            "NAMESPACE/POD/CONTAINER",
        ] {
            assert!(help.contains(want), "{want} missing:\n{help}");
        }
    }

    #[test]
    fn completions_know_the_commands_and_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for want in ["tidalctl", "resize", "rollback", "no-trunc", "state-dir"] {
                assert!(text.contains(want), "{shell:?}: {want} missing");
            }
        }
    }
}
