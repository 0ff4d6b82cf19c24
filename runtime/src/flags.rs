//! The flags every service has, spelled one way: `--log-level` (also `-v` and `--verbosity`,
//! the official agent's spelling, which the agent must keep), `--log-format`, and on the serving
//! subcommand `--shutdown-grace` (a Go duration, [`crate::duration`]). [`parse`] gives each a
//! fallback in the environment under the binary's prefix: `<PREFIX>_LOG_LEVEL`,
//! `<PREFIX>_LOG_FORMAT`, `<PREFIX>_SHUTDOWN_GRACE`.

use std::ffi::OsString;
use std::time::Duration;

use clap::Command;

use crate::logger::LogFormat;

/// How a service logs.
#[derive(Debug, Clone, clap::Args)]
pub struct LogFlags {
    /// Log level: panic, fatal, error, warn, info, debug, trace, or a tracing filter.
    #[arg(
        long = "log-level",
        short = 'v',
        visible_alias = "verbosity",
        global = true,
        default_value = "info"
    )]
    pub log_level: String,

    /// Log format: json (production) or text (a terminal).
    #[arg(long, global = true, default_value = "json")]
    pub log_format: LogFormat,
}

/// How long a service drains at shutdown.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ShutdownFlags {
    /// How long in-flight requests may take to finish after SIGTERM or SIGINT.
    #[arg(long, default_value = "20s", value_parser = crate::duration::parse)]
    pub shutdown_grace: Duration,
}

/// The common flags' ids, for their environment fallbacks.
const COMMON: [&str; 3] = ["log_level", "log_format", "shutdown_grace"];

/// Parse `args` (program name first) into `C`, each common flag falling back to
/// `<prefix>_<FLAG>`; on a bad flag print clap's message and exit 2, as `Parser::parse_from`.
pub fn parse<C, I, T>(prefix: &str, args: I) -> C
where
    C: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    try_parse(prefix, args).unwrap_or_else(|e| e.exit())
}

/// [`parse`], returning clap's error.
pub fn try_parse<C, I, T>(prefix: &str, args: I) -> Result<C, clap::Error>
where
    C: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut matches = with_env(C::command(), prefix).try_get_matches_from(args)?;
    C::from_arg_matches_mut(&mut matches)
}

fn with_env(mut cmd: Command, prefix: &str) -> Command {
    for id in COMMON {
        if cmd.get_arguments().any(|a| a.get_id() == id) {
            let var = format!("{prefix}_{}", id.to_ascii_uppercase());
            cmd = cmd.mut_arg(id, |a| a.env(var));
        }
    }
    cmd.mut_subcommands(|sub| with_env(sub, prefix))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser, Subcommand};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogFlags,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        Serve {
            #[command(flatten)]
            shutdown: ShutdownFlags,
        },
        Version,
    }

    fn grace(cli: &Cli) -> Duration {
        match &cli.command {
            Sub::Serve { shutdown } => shutdown.shutdown_grace,
            Sub::Version => panic!("not serve"),
        }
    }

    #[test]
    fn one_spelling_with_the_official_agents_as_aliases() {
        for args in [
            &["x", "--log-level", "debug", "serve"][..],
            &["x", "serve", "-v", "debug"],
            &["x", "--verbosity", "debug", "serve"],
        ] {
            let cli: Cli = try_parse("TEST_FLAGS_A", args).unwrap();
            assert_eq!(cli.log.log_level, "debug", "{args:?}");
            assert_eq!(cli.log.log_format, LogFormat::Json);
            assert_eq!(grace(&cli), Duration::from_secs(20));
        }
        let cli: Cli =
            try_parse("TEST_FLAGS_A", ["x", "serve", "--shutdown-grace", "1m30s"]).unwrap();
        assert_eq!(grace(&cli), Duration::from_secs(90));
        let err = try_parse::<Cli, _, _>("TEST_FLAGS_A", ["x", "serve", "--shutdown-grace", "20"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing unit"), "{err}");
    }

    /// The fallback itself is clap's (`env`); what is ours is that every common flag, on the
    /// root or a subcommand, gets its variable under the prefix (the process's environment is
    /// not set here: this workspace forbids the `unsafe` that `set_var` now needs).
    #[test]
    fn each_falls_back_to_a_variable_under_the_prefix() {
        let mut cmd = with_env(Cli::command(), "TEST_PREFIX");
        cmd.build();
        let env_of = |cmd: &Command, id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|v| v.to_string_lossy().into_owned())
        };
        assert_eq!(
            env_of(&cmd, "log_level").as_deref(),
            Some("TEST_PREFIX_LOG_LEVEL")
        );
        assert_eq!(
            env_of(&cmd, "log_format").as_deref(),
            Some("TEST_PREFIX_LOG_FORMAT")
        );
        let serve = cmd.find_subcommand("serve").unwrap();
        assert_eq!(
            env_of(serve, "shutdown_grace").as_deref(),
            Some("TEST_PREFIX_SHUTDOWN_GRACE")
        );
        assert_eq!(
            env_of(serve, "log_level").as_deref(),
            Some("TEST_PREFIX_LOG_LEVEL"),
            "global flags too"
        );
    }
}
