//! tidald's command line, declared with clap: `--help` and `-h` print the
//! usage and exit 0; a mistake names the argument and exits 2.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use super::{AgentError, Config, LogFormat, DEFAULT_METRICS_ADDR, DEFAULT_POLICY};

#[derive(Debug, Parser)]
#[command(
    name = "tidald",
    version,
    about = "tidal's node agent: the resize API on a root-only unix socket, and \
             Prometheus metrics of tidal's containers on a loopback address",
    after_help = "The state directory defaults to $TIDAL_STATE_DIR, /run/tidal when unset."
)]
pub struct Args {
    /// tidal's state directory (shims' state, the API socket's default place)
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where /metrics is served; a loopback address only
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,
    /// The API socket [default: DIR/.api/tidald.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// A uid besides root that may call the API (repeatable)
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allowed_uids: Vec<u32>,
    /// Threads serving the API (1: a single-threaded runtime)
    #[arg(long, value_name = "N", default_value_t = super::default_threads(), value_parser = positive)]
    pub threads: usize,
    /// How logs are written to standard error
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    pub log_format: Format,
    /// The policy engine's rules, or `off` [default: /etc/tidal/policy.yaml when it exists, else off]
    #[arg(long, value_name = "FILE|off")]
    pub policy: Option<String>,
    /// Whether the engine applies its decisions, over the policy file's mode
    #[arg(long, value_name = "MODE")]
    pub policy_mode: Option<super::policy::rules::Mode>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

fn positive(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| "not a positive number".to_string())
}

/// tidald's configuration from its command line (program name excluded).
/// `--help` and `--version` print to stdout and end the process with 0, as
/// a program's own parse would; a mistake comes back as `Usage` with
/// clap's words and usage line.
pub fn parse(args: &[String]) -> Result<Config, AgentError> {
    let a = match Args::try_parse_from(
        std::iter::once("tidald").chain(args.iter().map(String::as_str)),
    ) {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            return Err(AgentError::Usage(
                text.strip_prefix("error: ")
                    .unwrap_or(&text)
                    .trim_end()
                    .to_string(),
            ));
        }
    };
    let state_dir = a.state_dir.unwrap_or_else(crate::paths::state_dir);
    if !a.metrics_addr.ip().is_loopback() {
        return Err(AgentError::NotLoopback(a.metrics_addr));
    }
    let policy = super::policy_file(
        a.policy.as_deref(),
        std::path::Path::new(DEFAULT_POLICY).exists(),
    );
    if policy.is_none() && a.policy_mode.is_some() {
        return Err(AgentError::Usage(format!(
            "--policy-mode needs a policy file: --policy FILE, or {DEFAULT_POLICY}"
        )));
    }
    Ok(Config {
        policy,
        policy_mode: a.policy_mode,
        socket: a
            .socket
            .unwrap_or_else(|| crate::paths::default_socket(&state_dir)),
        state_dir,
        metrics_addr: a.metrics_addr,
        allowed_uids: a.allowed_uids,
        threads: a.threads,
        log_format: match a.log_format {
            Format::Text => LogFormat::Text,
            Format::Json => LogFormat::Json,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_is_printed_not_refused() {
        Args::command().debug_assert();
        for flag in ["--help", "-h"] {
            let e = Args::try_parse_from(["tidald", flag]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
            assert_eq!(e.exit_code(), 0);
        }
        let help = Args::command().render_help().to_string();
        for want in [
            "--state-dir <DIR>",
            "--metrics-addr <ADDR>",
            "--socket <PATH>",
            "--allow-uid <UID>",
            "--threads <N>",
            "--log-format <FORMAT>",
            "--policy <FILE|off>",
            "--policy-mode <MODE>",
        ] {
            assert!(help.contains(want), "{want} missing:\n{help}");
        }
    }

    #[test]
    fn mistakes_name_the_argument() {
        let err = |s: &str| {
            let args: Vec<String> = s.split_whitespace().map(String::from).collect();
            match parse(&args) {
                Err(AgentError::Usage(m)) => m,
                other => panic!("{s}: {other:?}"),
            }
        };
        assert!(err("--frob").contains("'--frob'"));
        assert!(err("--threads 0").contains("'0'"));
        assert!(err("--log-format xml").contains("text, json"));
        assert!(err("--allow-uid bob").contains("'bob'"));
        assert!(err("--metrics-addr nope").contains("'nope'"));
        let cfg = parse(&["--log-format".into(), "json".into()]).unwrap();
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.threads, super::super::default_threads());
    }
}
