//! `tidalctl doctor`: what an operator runs first on a node. It reads
//! containerd's configuration as containerd itself resolves it (`containerd
//! config dump`, imports included) and checks, each with the fix when it
//! fails:
//! - containerd's version, and that its CRI plugin is on;
//! - a runtime handler of type `io.containerd.tidal.v2`, and that its
//!   `pod_annotations` let tidal's annotations through;
//! - the shim containerd will start for it (`runtime_path`, which containerd
//!   1.6.0-1.6.20 and 1.7.0 ignore, else containerd's `PATH` and its own
//!   directory), and the helper beside it, of the same version;
//! - the cgroup hierarchy and the handler's cgroup driver (against
//!   kubelet's, when its config file is there);
//! - tidald answering on its API socket;
//! - the trait catalogue and the policy file loading.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::cli::Output;

/// The runtime type tidal registers as.
const RUNTIME_TYPE: &str = "io.containerd.tidal.v2";
const SHIM: &str = "containerd-shim-tidal-v2";
/// systemd's `PATH` for services, which a containerd unit runs with unless
/// it sets its own.
const SYSTEMD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Pod annotation keys tidal reads, one per prefix it owns: the handler's
/// `pod_annotations` must let each through.
const ANNOTATIONS: [&str; 3] = [
    "tidal.dev/qos",
    "trait.tidal.dev/security-policy",
    "app.oam.dev/component",
];

/// One check's outcome.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do about it, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn problem(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Where to look.
pub struct Options {
    /// The containerd binary (looked up on `PATH` when bare).
    pub containerd: PathBuf,
    /// containerd's main config file.
    pub config: PathBuf,
    /// tidald's policy file, when it runs with one.
    pub policy: Option<PathBuf>,
    /// tidald's API socket.
    pub socket: PathBuf,
}

/// A containerd release, as `containerd --version` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// From `containerd --version`'s line: `containerd <module> <version>
    /// <revision>`, the version with or without a `v` and with a
    /// distribution's suffix (`1.6.20~ds1`).
    pub fn parse(line: &str) -> Option<Version> {
        let word = line.split_whitespace().nth(2)?;
        let digits: String = word
            .trim_start_matches('v')
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = digits.split('.').map(|p| p.parse::<u32>().ok());
        let (major, minor) = (parts.next()??, parts.next()??);
        Some(Version(major, minor, parts.next().flatten().unwrap_or(0)))
    }

    /// containerd 1.6.0 to 1.6.20 and 1.7.0 ignore a runtime's
    /// `runtime_path` (fixed in 1.6.21 and 1.7.1).
    pub fn honours_runtime_path(self) -> bool {
        match (self.0, self.1) {
            (1, 6) => self.2 >= 21,
            (1, 7) => self.2 >= 1,
            (1, minor) => minor > 7,
            (major, _) => major > 1,
        }
    }
}

/// A runtime handler of tidal's type in containerd's CRI config.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub runtime_path: Option<String>,
    pub pod_annotations: Vec<String>,
    /// `SystemdCgroup` in the handler's options table, if there.
    pub options_systemd: Option<bool>,
    /// The options table has keys (containerd 1.7+ then sends it whole).
    pub has_options: bool,
    /// `ConfigPath` in the options table: a TOML file of options.
    pub config_path: Option<String>,
}

/// What containerd's dumped config says of CRI and tidal.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cri {
    /// CRI is listed in `disabled_plugins`.
    pub disabled: bool,
    pub handlers: Vec<Handler>,
}

impl Cri {
    /// From `containerd config dump`'s TOML: version 2 (containerd 1.x,
    /// `io.containerd.grpc.v1.cri`) or 3 (2.x, `io.containerd.cri.v1.runtime`).
    pub fn of(config: &toml::Table) -> Cri {
        let disabled = config
            .get("disabled_plugins")
            .and_then(|d| d.as_array())
            .is_some_and(|d| {
                d.iter().filter_map(|p| p.as_str()).any(|p| {
                    matches!(
                        p,
                        "cri" | "io.containerd.grpc.v1.cri" | "io.containerd.cri.v1.runtime"
                    )
                })
            });
        let plugins = config.get("plugins").and_then(|p| p.as_table());
        let runtimes = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"]
            .iter()
            .filter_map(|name| {
                plugins?
                    .get(*name)?
                    .get("containerd")?
                    .get("runtimes")?
                    .as_table()
            });
        let mut handlers = Vec::new();
        for table in runtimes {
            for (name, rt) in table {
                if rt.get("runtime_type").and_then(|t| t.as_str()) != Some(RUNTIME_TYPE) {
                    continue;
                }
                let text = |key: &str| rt.get(key).and_then(|v| v.as_str()).map(String::from);
                let options = rt.get("options").and_then(|o| o.as_table());
                handlers.push(Handler {
                    name: name.clone(),
                    runtime_path: text("runtime_path").filter(|p| !p.is_empty()),
                    pod_annotations: rt
                        .get("pod_annotations")
                        .and_then(|a| a.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                    options_systemd: options
                        .and_then(|o| o.get("SystemdCgroup"))
                        .and_then(|s| s.as_bool()),
                    has_options: options.is_some_and(|o| !o.is_empty()),
                    config_path: options
                        .and_then(|o| o.get("ConfigPath"))
                        .and_then(|p| p.as_str())
                        .filter(|p| !p.is_empty())
                        .map(String::from),
                });
            }
        }
        Cri { disabled, handlers }
    }
}

/// Go's `path.Match` for the patterns `pod_annotations` holds: `*` is any
/// run of characters but `/`, `?` one such character, `\` escapes.
/// (Character classes are taken literally.)
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != '/')
                .any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => n.first().is_some_and(|&c| c != '/') && go(rest, &n[1..]),
            Some(('\\', rest)) if !rest.is_empty() => {
                n.first() == Some(&rest[0]) && go(&rest[1..], &n[1..])
            }
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// The check of a handler's `pod_annotations`.
pub fn check_handler(h: &Handler) -> Vec<Finding> {
    let mut found = Vec::new();
    let missing: Vec<&str> = ANNOTATIONS
        .iter()
        .copied()
        .filter(|key| !h.pod_annotations.iter().any(|p| glob(p, key)))
        .collect();
    if missing.is_empty() {
        found.push(ok(
            "annotations",
            format!(
                "handler {} passes tidal's pod annotations ({})",
                h.name,
                h.pod_annotations.join(", ")
            ),
        ));
    } else {
        found.push(problem(
            "annotations",
            format!(
                "handler {}'s pod_annotations [{}] do not let {} through: the pods' traits and QoS never reach tidal",
                h.name,
                h.pod_annotations.join(", "),
                missing.join(", ")
            ),
            format!(
                "set pod_annotations = [\"tidal.dev/*\", \"trait.tidal.dev/*\", \"app.oam.dev/*\"] in the runtimes.{} table and restart containerd",
                h.name
            ),
        ));
    }
    found
}

/// What to say of `h`'s `runtime_path`, given the shim containerd will
/// really start (`shim`): nothing without one or where containerd honours
/// it; where containerd ignores it, a problem only if that leaves no shim.
pub fn runtime_path_finding(
    h: &Handler,
    version: Option<Version>,
    shim: Option<&Path>,
) -> Option<Finding> {
    let path = h.runtime_path.as_ref()?;
    let v = version.filter(|v| !v.honours_runtime_path())?;
    Some(match shim {
        Some(found) => ok(
            "runtime_path",
            format!(
                "handler {} sets runtime_path = {path:?}, which containerd {v} ignores (fixed in 1.6.21 and 1.7.1); it starts {} instead",
                h.name,
                found.display()
            ),
        ),
        None => problem(
            "runtime_path",
            format!(
                "handler {} sets runtime_path = {path:?}, which containerd {v} ignores (fixed in 1.6.21 and 1.7.1), and {SHIM} is not on containerd's PATH: every RunPodSandbox fails with 'binary not installed \"{SHIM}\"'",
                h.name
            ),
            format!(
                "install {SHIM} and tidal-shim-helper into a directory on containerd's PATH (/usr/local/bin) or beside the containerd binary, or upgrade containerd"
            ),
        ),
    })
}

/// The `SystemdCgroup` the shim will be told for `h`, as containerd
/// `version` passes runtime options to a runtime that is not runc's: 1.7
/// and later send the options table whole, 1.6 only its `ConfigPath` file.
/// None: nothing said, and the shim follows the cgroupsPath kubelet gives.
pub fn told_systemd(h: &Handler, version: Option<Version>) -> Result<Option<bool>, String> {
    let whole_table = version.is_none_or(|v| v >= Version(1, 7, 0));
    if whole_table && h.has_options {
        return Ok(h.options_systemd);
    }
    match &h.config_path {
        None => Ok(None),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("ConfigPath {p}: {e}"))?;
            crate::shim::options::toml_bool(&text, "SystemdCgroup")
                .map_err(|e| format!("ConfigPath {p}: {e}"))
        }
    }
}

/// kubelet's `cgroupDriver` from its config file's text: what the line
/// says, else kubelet's default, cgroupfs.
pub fn kubelet_driver(config: &str) -> String {
    config
        .lines()
        .find_map(|l| {
            let l = l.split('#').next().unwrap_or("").trim();
            l.strip_prefix("cgroupDriver:")
                .map(|d| d.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        })
        .unwrap_or_else(|| "cgroupfs".into())
}

/// The shim containerd starts for `h`: its `runtime_path` when containerd
/// honours it, else `containerd-shim-tidal-v2` on `path` (containerd's
/// `PATH`), else beside the containerd binary.
pub fn resolve_shim(
    h: &Handler,
    version: Option<Version>,
    path: &str,
    containerd_dir: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(p) = &h.runtime_path {
        if version.is_some_and(Version::honours_runtime_path) {
            return Some(PathBuf::from(p)).filter(|p| is_executable(p));
        }
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(Path::new)
        .chain(containerd_dir)
        .map(|d| d.join(SHIM))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first line `bin args` prints, or why it could not run.
fn first_line(bin: &Path, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let line = String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if out.status.success() {
        Ok(line)
    } else {
        Err(format!("{} {}: {line}", bin.display(), args.join(" ")))
    }
}

/// The running containerd that reads `config`: its `PATH` and its binary
/// (where containerd also looks for shims), if one runs.
fn running_containerd(config: &Path) -> Option<(String, Option<PathBuf>)> {
    let default = Path::new("/etc/containerd/config.toml");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name();
        let proc = Path::new("/proc").join(&pid);
        if std::fs::read_to_string(proc.join("comm")).map_or(true, |c| c.trim() != "containerd") {
            continue;
        }
        let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let given = args
            .iter()
            .position(|a| a == "--config" || a == "-c")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .or_else(|| {
                args.iter()
                    .find_map(|a| a.strip_prefix("--config=").map(PathBuf::from))
            });
        if given.as_deref().unwrap_or(default) != config {
            continue;
        }
        let environ = std::fs::read(proc.join("environ")).unwrap_or_default();
        let path = environ
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(b"PATH="))
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let exe = std::fs::read_link(proc.join("exe")).ok();
        return Some((path.unwrap_or_else(|| SYSTEMD_PATH.to_string()), exe));
    }
    None
}

/// Where `bin` is: itself when it has a slash, else on this `PATH`.
fn which(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return Some(bin.to_path_buf());
    }
    std::env::var("PATH")
        .unwrap_or_else(|_| SYSTEMD_PATH.into())
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| is_executable(p))
}

/// Runs every check.
pub async fn run(opts: &Options) -> Vec<Finding> {
    let mut found = Vec::new();
    // The binary of the containerd that runs, else the one on PATH.
    let running = running_containerd(&opts.config);
    let containerd = running
        .as_ref()
        .and_then(|(_, exe)| exe.clone())
        .or_else(|| which(&opts.containerd));
    let version = match &containerd {
        None => {
            found.push(problem(
                "containerd",
                format!("{} is not on PATH", opts.containerd.display()),
                "install containerd 1.6 or later (apt-get install containerd)",
            ));
            None
        }
        Some(bin) => match first_line(bin, &["--version"]) {
            Err(e) => {
                found.push(problem(
                    "containerd",
                    e,
                    "check the containerd installation",
                ));
                None
            }
            Ok(line) => {
                let v = Version::parse(&line);
                match v {
                    Some(v) if v < Version(1, 6, 0) => found.push(problem(
                        "containerd",
                        format!("containerd {v} ({}) is older than 1.6", bin.display()),
                        "tidal needs containerd 1.6 or later",
                    )),
                    Some(v) => found.push(ok(
                        "containerd",
                        format!("{v} ({}), config {}", bin.display(), opts.config.display()),
                    )),
                    None => found.push(problem(
                        "containerd",
                        format!("cannot read a version in {line:?}"),
                        "check the containerd installation",
                    )),
                }
                v
            }
        },
    };
    let running_path = running.map(|(path, _)| path);
    if running_path.is_none() {
        found.push(problem(
            "containerd",
            format!("no running containerd reads {}", opts.config.display()),
            "start containerd (systemctl start containerd), or name its config with --containerd-config",
        ));
    }
    let cri = match &containerd {
        None => None,
        Some(bin) => {
            let config = opts.config.to_string_lossy().into_owned();
            match std::process::Command::new(bin)
                .args(["--config", &config, "config", "dump"])
                .output()
            {
                Ok(out) if out.status.success() => {
                    match toml::from_str::<toml::Table>(&String::from_utf8_lossy(&out.stdout)) {
                        Ok(t) => Some(Cri::of(&t)),
                        Err(e) => {
                            found.push(problem(
                                "config",
                                format!("containerd config dump is not TOML: {e}"),
                                "check containerd's config",
                            ));
                            None
                        }
                    }
                }
                Ok(out) => {
                    found.push(problem(
                        "config",
                        format!(
                            "containerd cannot read {config}: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                        "fix the file containerd names",
                    ));
                    None
                }
                Err(e) => {
                    found.push(problem("config", e.to_string(), "check containerd"));
                    None
                }
            }
        }
    };
    let node = super::node::Report::here();
    let kubelet = std::fs::read_to_string("/var/lib/kubelet/config.yaml")
        .ok()
        .map(|t| kubelet_driver(&t));
    if let Some(cri) = &cri {
        if cri.disabled {
            found.push(problem(
                "cri",
                "containerd's CRI plugin is disabled (disabled_plugins): kubelet cannot run pods through it",
                "remove \"cri\" from disabled_plugins in containerd's config and restart containerd",
            ));
        }
        if cri.handlers.is_empty() {
            found.push(problem(
                "runtime",
                format!("no runtime of type {RUNTIME_TYPE} in {}", opts.config.display()),
                "add the tables of config/containerd/tidal-config-v2.toml (containerd 1.x) or tidal-config-v3.toml (2.x) and restart containerd (docs/install.md, step 3)",
            ));
        }
        let containerd_dir = containerd.as_deref().and_then(Path::parent);
        let path = running_path.as_deref().unwrap_or(SYSTEMD_PATH);
        for h in &cri.handlers {
            found.push(ok(
                "runtime",
                format!("handler {} is {RUNTIME_TYPE}", h.name),
            ));
            found.extend(check_handler(h));
            let shim = resolve_shim(h, version, path, containerd_dir);
            found.extend(runtime_path_finding(h, version, shim.as_deref()));
            found.extend(binaries(h, shim));
            found.push(driver(
                h,
                told_systemd(h, version),
                kubelet.as_deref(),
                &node,
            ));
        }
    }
    found.push(cgroups(&node));
    found.push(tidald(&opts.socket).await);
    found.push(match crate::traits::Catalogue::node() {
        Ok(c) => ok("traits", format!("catalogue: {}", c.names().join(", "))),
        Err(e) => problem(
            "traits",
            e,
            "fix the file it names: until then the shim refuses every pod that carries a trait",
        ),
    });
    let policy = opts
        .policy
        .clone()
        .or_else(|| Some(PathBuf::from("/etc/tidal/policy.yaml")).filter(|p| p.exists()));
    if let Some(p) = policy {
        found.push(match crate::agent::policy::rules::Policy::load(&p) {
            Ok(_) => ok("policy", format!("{} loads", p.display())),
            Err(e) => problem(
                "policy",
                e.to_string(),
                "fix the file: tidald refuses to start with it",
            ),
        });
    }
    found
}

/// The shim containerd would start, and the helper beside it, of one
/// version.
fn binaries(h: &Handler, shim: Option<PathBuf>) -> Vec<Finding> {
    let Some(shim) = shim else {
        return vec![problem(
            "shim",
            format!(
                "containerd finds no {SHIM} for handler {} on its PATH or beside its own binary",
                h.name
            ),
            "install the four binaries into /usr/local/bin (docs/install.md, step 2)",
        )];
    };
    let helper = shim.with_file_name(crate::helper::HELPER_BIN);
    let shim_version = first_line(&shim, &["-v"]);
    let helper_version = first_line(&helper, &["--version"]);
    let version = |line: &str| line.split_whitespace().nth(1).unwrap_or("").to_string();
    match (shim_version, helper_version) {
        (Err(e), _) => vec![problem("shim", e, "reinstall the shim")],
        (Ok(_), Err(e)) => vec![problem(
            "helper",
            format!("{e} (the shim runs {} beside itself)", helper.display()),
            "install tidal-shim-helper into the shim's directory",
        )],
        (Ok(s), Ok(x)) if version(&s) != version(&x) => vec![problem(
            "helper",
            format!(
                "{} is {} but {} is {}",
                shim.display(),
                version(&s),
                helper.display(),
                version(&x)
            ),
            "install the shim and the helper from one build",
        )],
        (Ok(s), Ok(_)) => vec![ok(
            "shim",
            format!(
                "{} and {} beside it, {}",
                shim.display(),
                crate::helper::HELPER_BIN,
                version(&s)
            ),
        )],
    }
}

/// The hierarchy: tidal resizes through the cpu and memory controllers.
fn cgroups(node: &super::node::Report) -> Finding {
    let has = |c: &str| node.controllers.iter().any(|x| x == c);
    let detail = format!(
        "{} ({}), controllers: {}",
        node.cgroup,
        node.hierarchy,
        node.controllers.join(" ")
    );
    if has("cpu") && has("memory") {
        ok("cgroups", detail)
    } else {
        problem(
            "cgroups",
            format!("{detail}: no cpu or memory controller, so nothing can be resized"),
            "boot with the cpu and memory controllers enabled (cgroup v2: enable them in the root's cgroup.subtree_control)",
        )
    }
}

/// The handler's cgroup driver: what the shim will be told (`told`, see
/// [`told_systemd`]), against kubelet's (`kubelet`, when its config is
/// there) and what this node can do.
pub fn driver(
    h: &Handler,
    told: Result<Option<bool>, String>,
    kubelet: Option<&str>,
    node: &super::node::Report,
) -> Finding {
    let told = match told {
        Ok(t) => t,
        Err(e) => {
            return problem(
                "driver",
                format!("handler {}'s options: {e}", h.name),
                "fix the file it names: every container create fails on it",
            )
        }
    };
    let name = match (told, kubelet) {
        (Some(true), _) => "systemd",
        (Some(false), _) => "cgroupfs",
        (None, Some(k)) => k,
        (None, None) => {
            return ok(
                "driver",
                format!(
                    "handler {} follows the form of the cgroupsPath it is given (SystemdCgroup not set)",
                    h.name
                ),
            )
        }
    };
    if let Some(why) = node
        .drivers
        .iter()
        .find(|d| d.name == name)
        .and_then(|d| d.why_not.clone())
    {
        return problem(
            "driver",
            format!("handler {} gets the {name} cgroup driver: {why}", h.name),
            "use the driver this node can give (tidalctl node) in kubelet's cgroupDriver and the handler's SystemdCgroup",
        );
    }
    match (told, kubelet) {
        (Some(_), Some(k)) if k != name => problem(
            "driver",
            format!(
                "handler {} is told the {name} cgroup driver but kubelet's cgroupDriver is {k}",
                h.name
            ),
            format!(
                "make them agree: SystemdCgroup = {} for runtimes.{} (in its options table on containerd 1.7+, in its ConfigPath file on 1.6), or remove it to follow kubelet",
                k == "systemd",
                h.name
            ),
        ),
        (Some(_), _) => ok(
            "driver",
            format!("handler {} uses the {name} cgroup driver", h.name),
        ),
        (None, _) => ok(
            "driver",
            format!(
                "handler {} follows kubelet's cgroupDriver, {name} (SystemdCgroup not set)",
                h.name
            ),
        ),
    }
}

async fn tidald(socket: &Path) -> Finding {
    let listed = async {
        let mut api = crate::proto::connect(socket)
            .await
            .map_err(|e| super::CtlError::connect(socket, &e).to_string())?;
        api.list_containers(crate::proto::pb::ListContainersRequest::default())
            .await
            .map(|r| r.into_inner().containers.len())
            .map_err(|s| s.message().to_string())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), listed).await {
        Ok(Ok(n)) => ok(
            "tidald",
            format!("answers on {} ({n} containers)", socket.display()),
        ),
        Ok(Err(e)) => problem(
            "tidald",
            e,
            "start tidald (docs/install.md, step 4), or name its socket with --socket",
        ),
        Err(_) => problem(
            "tidald",
            format!("no answer on {} in 5 s", socket.display()),
            "check tidald's log",
        ),
    }
}

pub fn render(found: &[Finding], output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(found).unwrap_or_default() + "\n";
    }
    let mut s = String::new();
    for f in found {
        s += &format!(
            "{:<8} {:<12} {}\n",
            if f.ok { "ok" } else { "PROBLEM" },
            f.check,
            f.detail
        );
        if let Some(fix) = &f.fix {
            s += &format!("{:<8} {:<12} fix: {fix}\n", "", "");
        }
    }
    s
}

#[cfg(test)]
mod tests;
