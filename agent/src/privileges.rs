//! Dropping privileges once the listeners are bound.
//!
//! The agent needs one capability for one moment: `CAP_NET_BIND_SERVICE`, to bind port 80. After
//! that it drops every capability from every set (effective, permitted, inheritable, ambient, and
//! bounding where the kernel lets it) and sets `no_new_privs`, before it serves a request and
//! before it starts any thread (capabilities are per thread; the tokio runtime and the log writer
//! are started afterwards, so they never hold any).

use std::collections::BTreeSet;

use caps::{CapSet, Capability};
use serde::Serialize;

/// Capability sets of the current thread, as canonical names (`CAP_NET_BIND_SERVICE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CapSets {
    pub effective: BTreeSet<String>,
    pub permitted: BTreeSet<String>,
    pub inheritable: BTreeSet<String>,
    pub ambient: BTreeSet<String>,
    pub bounding: BTreeSet<String>,
}

impl CapSets {
    pub fn read() -> Result<Self, PrivilegeError> {
        let names = |set| -> Result<BTreeSet<String>, PrivilegeError> {
            Ok(caps::read(None, set)
                .map_err(|e| PrivilegeError::Read(e.to_string()))?
                .into_iter()
                .map(|c| c.to_string())
                .collect())
        };
        Ok(Self {
            effective: names(CapSet::Effective)?,
            permitted: names(CapSet::Permitted)?,
            inheritable: names(CapSet::Inheritable)?,
            // Ambient capabilities need Linux 4.3; an older kernel has none to hold.
            ambient: names(CapSet::Ambient).unwrap_or_default(),
            bounding: names(CapSet::Bounding)?,
        })
    }

    /// True when the thread can use or pass on no capability at all.
    pub fn holds_none(&self) -> bool {
        self.effective.is_empty()
            && self.permitted.is_empty()
            && self.inheritable.is_empty()
            && self.ambient.is_empty()
    }
}

/// What was dropped, for the startup log.
#[derive(Debug, Clone, Serialize)]
pub struct DropReport {
    pub before: CapSets,
    pub after: CapSets,
    pub no_new_privs: bool,
    /// Why the bounding set was left as it was (it needs CAP_SETPCAP to shrink; with
    /// no_new_privs and nothing permitted it cannot be used to regain anything).
    pub bounding_note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot read capabilities: {0}")]
    Read(String),
    #[error("cannot drop capabilities from the {set} set: {reason}")]
    Drop { set: &'static str, reason: String },
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] std::io::Error),
    #[error("capabilities remain after dropping them: {0:?}")]
    Remaining(Box<CapSets>),
}

/// Drop every capability and set `no_new_privs`. Call before any thread is started.
pub fn drop_all() -> Result<DropReport, PrivilegeError> {
    let before = CapSets::read()?;
    let clear = |set, name| {
        caps::clear(None, set).map_err(|e| PrivilegeError::Drop {
            set: name,
            reason: e.to_string(),
        })
    };
    // Ambient first: it is only cleared while the capabilities are still permitted.
    if caps::clear(None, CapSet::Ambient).is_err() && !before.ambient.is_empty() {
        return Err(PrivilegeError::Drop {
            set: "ambient",
            reason: "the kernel refused".into(),
        });
    }
    let bounding_note = if before
        .effective
        .contains(&Capability::CAP_SETPCAP.to_string())
    {
        for cap in
            caps::read(None, CapSet::Bounding).map_err(|e| PrivilegeError::Read(e.to_string()))?
        {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| PrivilegeError::Drop {
                set: "bounding",
                reason: e.to_string(),
            })?;
        }
        None
    } else if before.bounding.is_empty() {
        None
    } else {
        Some("bounding set left as is: shrinking it needs CAP_SETPCAP; with no_new_privs and an empty permitted set nothing in it can be regained".into())
    };
    clear(CapSet::Inheritable, "inheritable")?;
    clear(CapSet::Effective, "effective")?;
    clear(CapSet::Permitted, "permitted")?;
    rustix::thread::set_no_new_privs(true).map_err(|e| PrivilegeError::NoNewPrivs(e.into()))?;
    let after = CapSets::read()?;
    if !after.holds_none() {
        return Err(PrivilegeError::Remaining(Box::new(after)));
    }
    let no_new_privs = rustix::thread::no_new_privs().unwrap_or(false);
    Ok(DropReport {
        before,
        after,
        no_new_privs,
        bounding_note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in its own thread: dropping is per thread and must not affect other tests.
    #[test]
    fn drop_all_leaves_nothing_and_sets_no_new_privs() {
        let report = std::thread::spawn(drop_all).join().unwrap().unwrap();
        assert!(report.after.holds_none(), "{:?}", report.after);
        assert!(report.no_new_privs);
        // A second drop is a no-op, not an error.
        let again = std::thread::spawn(|| {
            drop_all().unwrap();
            drop_all()
        })
        .join()
        .unwrap()
        .unwrap();
        assert!(again.before.holds_none());
    }
}
