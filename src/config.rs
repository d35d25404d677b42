//! The resolved settings of `mcpvisor run`, with defaults applied and values checked.

use std::time::Duration;

use crate::child::{ChildSpec, StopTimings};
use crate::cli::{OnFailure, RunArgs};
use crate::policy::PolicyConfig;

/// How long a child counts as having started well: a crash after this resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub spec: ChildSpec,
    pub stop: StopTimings,
    pub max_message_size: usize,
    /// `--max-memory`: resident bytes of the server's process group that trigger a restart.
    pub max_memory: Option<usize>,
    pub policy: PolicyConfig,
    pub on_failure: OnFailure,
    pub queue_limit: usize,
    /// Most client requests outstanding at the child (`--max-inflight`); `None`: no limit.
    pub max_inflight: Option<usize>,
    pub retry: bool,
    /// `None` when liveness checks are off.
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Duration,
    pub ping_failures: u32,
    pub request_timeout: Option<Duration>,
    pub drain_timeout: Duration,
}

impl RunConfig {
    pub fn from_args(args: &RunArgs) -> Result<RunConfig, String> {
        let (program, rest) = args.command.split_first().ok_or("no server command given after `--`")?;
        if program.is_empty() {
            return Err("the server command is empty".into());
        }
        if args.ping_interval > Duration::ZERO && args.ping_timeout.is_zero() {
            return Err("--ping-timeout must be greater than zero".into());
        }
        if args.backoff_max < args.backoff_initial {
            return Err("--backoff-max must not be smaller than --backoff-initial".into());
        }
        if args.restart_window.is_zero() {
            return Err("--restart-window must be greater than zero".into());
        }
        Ok(RunConfig {
            spec: ChildSpec {
                program: program.clone(),
                args: rest.to_vec(),
                cwd: args.cwd.clone(),
                env: args.env.clone(),
                limit_nofile: args.limit_nofile,
                limit_as: args.limit_as.map(|b| b as u64),
            },
            stop: StopTimings { grace: args.stop_grace, kill_after: args.kill_after },
            max_message_size: args.max_message_size,
            max_memory: args.max_memory,
            policy: PolicyConfig {
                max_restarts: args.max_restarts,
                window: args.restart_window,
                backoff_initial: args.backoff_initial,
                backoff_max: args.backoff_max,
                stable_after: STABLE_AFTER,
            },
            on_failure: args.on_failure,
            queue_limit: args.queue_limit,
            max_inflight: (args.max_inflight > 0).then_some(args.max_inflight),
            retry: !args.no_retry,
            ping_interval: (!args.ping_interval.is_zero()).then_some(args.ping_interval),
            ping_timeout: args.ping_timeout,
            ping_failures: args.ping_failures,
            request_timeout: args.request_timeout.filter(|d| !d.is_zero()),
            drain_timeout: args.drain_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Result<RunConfig, String> {
        let mut argv = vec!["mcpvisor", "run"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--", "server", "arg"]);
        let crate::cli::Command::Run(run) = crate::cli::Cli::try_parse_from(argv).expect("parse").command else {
            panic!("not run")
        };
        RunConfig::from_args(&run)
    }

    #[test]
    fn defaults() {
        let c = config(&[]).expect("config");
        assert_eq!(c.spec.program, "server");
        assert_eq!(c.ping_interval, Some(Duration::from_secs(30)));
        assert_eq!(c.policy.max_restarts, 10);
        assert_eq!(c.policy.window, Duration::from_secs(3600));
        assert_eq!(c.max_message_size, 64 << 20);
        assert!(c.retry);
        assert_eq!(c.request_timeout, None);
    }

    #[test]
    fn zero_ping_interval_disables_liveness() {
        assert_eq!(config(&["--ping-interval", "0"]).expect("config").ping_interval, None);
    }

    #[test]
    fn inconsistent_values_are_refused() {
        assert!(config(&["--backoff-initial", "10s", "--backoff-max", "1s"]).is_err());
        assert!(config(&["--restart-window", "0"]).is_err());
        assert!(config(&["--ping-timeout", "0"]).is_err());
    }
}
