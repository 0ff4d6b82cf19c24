//! The open-file limit, raised at start from its soft value to the hard one.
//!
//! Every connection is a file descriptor. Containers commonly start with a soft `RLIMIT_NOFILE`
//! of 1024 under a far larger hard limit; a server left at 1024 meets EMFILE long before its
//! connection caps ([`crate::serve::ConnectionLimits`]) would act, and then cannot accept the
//! well-behaved client either. Go's runtime raises the soft limit to the hard one in every
//! program (Go 1.19), so the official agent never sees 1024; ours do the same, once, at start.
//! Raising the soft limit up to the hard one needs no privilege. It never fails a start: a
//! refusal is logged as a warning and the server runs with what it has. The servers use epoll
//! and start no child processes, so a large limit changes nothing else.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The soft and hard limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl Limits {
    fn current() -> Self {
        let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
        Self {
            soft: current,
            hard: maximum,
        }
    }

    /// The soft limit to set, if it is below the hard one.
    pub fn raised(self) -> Option<Option<u64>> {
        match (self.soft, self.hard) {
            (Some(_), None) => Some(None),
            (Some(soft), Some(hard)) if soft < hard => Some(Some(hard)),
            _ => None,
        }
    }
}

/// What [`raise`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    pub before: Limits,
    pub after: Limits,
}

/// Raise this process's soft open-file limit to its hard limit. `Err` carries the limits found
/// and why they could not be raised.
pub fn raise() -> Result<Raised, (Limits, std::io::Error)> {
    let before = Limits::current();
    if let Some(soft) = before.raised() {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: soft,
                maximum: before.hard,
            },
        )
        .map_err(|e| (before, e.into()))?;
    }
    Ok(Raised {
        before,
        after: Limits::current(),
    })
}

/// [`raise`], logged: the limits before and after at info, a failure as a warning.
pub fn raise_and_log() {
    match raise() {
        Ok(Raised { before, after }) => tracing::info!(
            nofile.soft_before = %show(before.soft),
            nofile.soft = %show(after.soft),
            nofile.hard = %show(after.hard),
            "open-file limit"
        ),
        Err((before, e)) => tracing::warn!(
            nofile.soft = %show(before.soft),
            nofile.hard = %show(before.hard),
            error = %e,
            "open-file limit not raised: a flood of connections may meet EMFILE sooner"
        ),
    }
}

fn show(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(soft: Option<u64>, hard: Option<u64>) -> Limits {
        Limits { soft, hard }
    }

    #[test]
    fn the_soft_limit_goes_up_to_the_hard_one_and_never_down() {
        assert_eq!(
            limits(Some(1024), Some(1_048_576)).raised(),
            Some(Some(1_048_576))
        );
        assert_eq!(limits(Some(1024), None).raised(), Some(None));
        assert_eq!(limits(Some(4096), Some(4096)).raised(), None);
        assert_eq!(limits(None, None).raised(), None);
        // Not possible from the kernel, but never a lowering.
        assert_eq!(limits(Some(8192), Some(4096)).raised(), None);
    }

    #[test]
    fn raising_leaves_this_process_at_its_hard_limit() {
        let raised = raise().expect("raising the soft limit to the hard one needs no privilege");
        assert_eq!(raised.after.soft, raised.after.hard);
        assert_eq!(raised.after.hard, raised.before.hard);
        // Again: nothing left to do, nothing changes.
        let again = raise().unwrap();
        assert_eq!(again.before, again.after);
        assert_eq!(again.after, raised.after);
    }
}
