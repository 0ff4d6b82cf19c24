//! `/go-runner` of the agent's image: the official image starts the agent through Kubernetes'
//! go-runner (`['/go-runner', '/eks-pod-identity-agent', 'server']` in the official chart), so
//! an operator who only swaps the image needs that path to work.
//!
//! Kubernetes' go-runner keeps running as the parent of its command, copying its output to an
//! optional log file. Ours replaces itself with the command (`execve`): the agent becomes the
//! container's only process, receives the kubelet's signals directly, and no second process
//! keeps the `CAP_NET_BIND_SERVICE` the agent drops after binding. Its flags are accepted as
//! go-runner spells them (`-flag`, `--flag`, `-flag=value`, `-flag value`) up to the first
//! argument that is not one, or `--`. `-log-file` is refused: copying output needs a parent
//! process, and the agent logs to standard output, which the kubelet keeps.

use std::ffi::{OsStr, OsString};

/// Why the command line cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GoRunnerError {
    #[error(
        "no command to run (usage: go-runner [-also-stdout] [-redirect-stderr] COMMAND [ARGS...])"
    )]
    NoCommand,
    #[error(
        "-log-file is not supported by this image: the agent logs to standard output (read it with kubectl logs)"
    )]
    LogFile,
    #[error("flag provided but not defined: {0}")]
    UnknownFlag(String),
    #[error("invalid boolean value {value:?} for -{flag}")]
    BadBool { flag: String, value: String },
}

/// The command go-runner would start: `args` without the program name.
pub fn command(args: impl IntoIterator<Item = OsString>) -> Result<Vec<OsString>, GoRunnerError> {
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.peek() {
        let Some(flag) = flag_of(arg) else { break };
        let flag = flag.to_string();
        args.next();
        if flag.is_empty() {
            break; // `--`: what follows is the command.
        }
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        match name.as_str() {
            "also-stdout" | "redirect-stderr" => {
                if let Some(v) = value {
                    parse_bool(&name, &v)?;
                }
            }
            "log-file" => {
                let value = match value {
                    Some(v) => v,
                    None => args
                        .next()
                        .map(|v| v.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                };
                if !value.is_empty() {
                    return Err(GoRunnerError::LogFile);
                }
            }
            _ => return Err(GoRunnerError::UnknownFlag(name)),
        }
    }
    let command: Vec<OsString> = args.collect();
    if command.is_empty() {
        return Err(GoRunnerError::NoCommand);
    }
    Ok(command)
}

/// `-x` or `--x` → `x` (`--` alone → empty); `-` alone, anything else, and an argument that is
/// not UTF-8 are no flag (go-runner's flags are all ASCII).
fn flag_of(arg: &OsStr) -> Option<&str> {
    let rest = arg.to_str()?.strip_prefix('-')?;
    if rest.is_empty() {
        return None;
    }
    Some(rest.strip_prefix('-').unwrap_or(rest))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(flag: &str, value: &str) -> Result<bool, GoRunnerError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(GoRunnerError::BadBool {
            flag: flag.to_string(),
            value: value.to_string(),
        }),
    }
}

/// The binary's `main`: replaces this process with the command; returns only on failure.
pub fn main(args: impl IntoIterator<Item = OsString>) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let command = match command(args.into_iter().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("go-runner: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let err = std::process::Command::new(&command[0])
        .args(&command[1..])
        .exec();
    eprintln!(
        "go-runner: cannot run {}: {err}",
        command[0].to_string_lossy()
    );
    // As a shell says it: 127 when there is no such file, 126 when it cannot be run.
    std::process::ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Vec<String>, GoRunnerError> {
        command(args.iter().map(OsString::from))
            .map(|c| c.iter().map(|a| a.to_string_lossy().into_owned()).collect())
    }

    #[test]
    fn the_official_charts_command_runs_the_agent() {
        assert_eq!(
            run(&["/eks-pod-identity-agent", "server", "-v", "trace"]).unwrap(),
            ["/eks-pod-identity-agent", "server", "-v", "trace"]
        );
    }

    #[test]
    fn go_runner_flags_are_taken_in_every_spelling_and_only_before_the_command() {
        for flags in [
            &["-also-stdout", "--redirect-stderr=false"][..],
            &["--also-stdout=true", "-redirect-stderr"],
            &["-log-file=", "-also-stdout"],
            &["-log-file", "", "--"],
        ] {
            let mut args = flags.to_vec();
            args.extend(["/eks-pod-identity-agent", "initialize", "-v", "trace"]);
            assert_eq!(
                run(&args).unwrap(),
                ["/eks-pod-identity-agent", "initialize", "-v", "trace"],
                "{flags:?}"
            );
        }
        assert_eq!(run(&["--", "-x"]).unwrap(), ["-x"]);
        assert_eq!(run(&["-", "a"]).unwrap(), ["-", "a"]);
    }

    #[test]
    fn what_it_cannot_do_is_refused_by_name() {
        assert_eq!(run(&[]), Err(GoRunnerError::NoCommand));
        assert_eq!(run(&["-also-stdout"]), Err(GoRunnerError::NoCommand));
        assert_eq!(
            run(&["-log-file=/var/log/agent.log", "/a"]),
            Err(GoRunnerError::LogFile)
        );
        assert_eq!(
            run(&["-log-file", "/var/log/agent.log", "/a"]),
            Err(GoRunnerError::LogFile)
        );
        assert_eq!(
            run(&["-verbose", "/a"]),
            Err(GoRunnerError::UnknownFlag("verbose".into()))
        );
        assert!(matches!(
            run(&["-also-stdout=maybe", "/a"]),
            Err(GoRunnerError::BadBool { .. })
        ));
    }
}
