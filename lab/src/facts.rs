//! What each scenario must show, checked against what a run produced.

use pod_identity_contracts::log_schema::{AgentRequestLine, ExchangeAuditLine};

use crate::hops::Logged;
use crate::scenario::{AgentExpect, EksAuthExpect, Scenario, WinnerExpect};
use crate::sts::{StsEvent, StsOutcome};

use crate::start::PodRun;

/// What a run produced, checked against what its scenario must show.
pub(crate) struct Facts<'a> {
    pub(crate) scenario: Scenario,
    pub(crate) first: &'a PodRun,
    pub(crate) second: Option<&'a PodRun>,
    pub(crate) agent_lines: &'a [Logged<AgentRequestLine>],
    pub(crate) eks_lines: &'a [Logged<ExchangeAuditLine>],
    pub(crate) sts_events: &'a [StsEvent],
    pub(crate) sts_is_lab: bool,
}

impl Facts<'_> {
    /// What did not come out as the scenario's [`Expect`] says, in words.
    pub(crate) fn check(&self) -> Vec<String> {
        let want = self.scenario.expect();
        let mut wrong = Vec::new();
        let mut expect = |ok: bool, what: String| {
            if !ok {
                wrong.push(what);
            }
        };
        let report = &self.first.report;
        let winner = report["winner"].as_str();
        let arn = report["identity"]["arn"].as_str().unwrap_or("");
        let worked = self.first.exit_code == Some(0);
        let agent_status = self.agent_lines.first().and_then(|l| l.answer.http_status);
        let eks_code = self.eks_lines.first().and_then(|l| l.error.code.as_deref());
        let assumes = self
            .sts_events
            .iter()
            .filter(|e| {
                e.action.as_deref() == Some("AssumeRole")
                    && matches!(e.outcome, StsOutcome::Issued { .. })
            })
            .count();
        let lab_sts = self.sts_is_lab;
        expect(
            worked == want.credentials,
            format!(
                "demo-app {} credentials (exit {:?})",
                if worked { "found" } else { "found no" },
                self.first.exit_code
            ),
        );
        match want.winner {
            WinnerExpect::Unchecked => {}
            WinnerExpect::Provider(p) => {
                expect(winner == Some(p), format!("the {p} provider should win"));
            }
            WinnerExpect::Nobody => expect(winner.is_none(), "no provider should win".into()),
        }
        // Only the lab's STS names identities as the lab set them up.
        if let Some(part) = want.identity {
            expect(
                arn.contains(part) || !lab_sts,
                format!("the identity should be {part}… (it is {arn:?})"),
            );
        }
        match want.agent {
            AgentExpect::Answers(status) => expect(
                agent_status == Some(status),
                format!("the agent should answer {status}"),
            ),
            AgentExpect::AtMostOneLook => expect(
                self.agent_lines.len() <= 1,
                "only demo-app's own look should reach the agent, never the SDK".into(),
            ),
            AgentExpect::Unreached => {
                expect(self.agent_lines.is_empty(), "no agent should answer".into());
            }
        }
        match want.eks_auth {
            EksAuthExpect::Unchecked => {}
            EksAuthExpect::Answers(code) => {
                expect(
                    eks_code == Some(code),
                    format!("eks-auth should answer {code}"),
                );
            }
            EksAuthExpect::NotAsked => expect(
                self.eks_lines.is_empty(),
                "eks-auth should not be asked".into(),
            ),
        }
        // Nothing reaching STS shows with any STS; a count of calls only with the lab's.
        match want.assumes {
            Some(0) => expect(assumes == 0, "nothing should reach STS".into()),
            Some(n) if lab_sts => expect(
                assumes == n,
                format!("exactly {n} AssumeRole call(s) should reach STS, not {assumes}"),
            ),
            _ => {}
        }
        if self.scenario.change().second_process {
            let second_ok = self.second.is_some_and(|s| s.exit_code == Some(0));
            expect(
                second_ok,
                "the second process should get credentials too".into(),
            );
        }
        if let Some(n) = want.misses {
            let missed = self
                .agent_lines
                .iter()
                .filter(|l| l.cache.as_deref() == Some("miss"))
                .count();
            expect(
                missed == n,
                format!("exactly {n} request(s) should miss the cache, not {missed}"),
            );
        }
        wrong
    }
}
