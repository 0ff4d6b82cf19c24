//! What each scenario must show, checked against what a run produced.

use serde_json::Value;

use crate::scenario::Scenario;
use crate::sts::{StsEvent, StsOutcome};

use crate::run::OTHER_ACCOUNT;
use crate::start::PodRun;

/// What a run produced, checked against what its scenario must show.
pub(crate) struct Facts<'a> {
    pub(crate) scenario: Scenario,
    pub(crate) first: &'a PodRun,
    pub(crate) second: Option<&'a PodRun>,
    pub(crate) agent_lines: &'a [Value],
    pub(crate) eks_lines: &'a [Value],
    pub(crate) sts_events: &'a [StsEvent],
    pub(crate) sts_is_lab: bool,
}

impl Facts<'_> {
    pub(crate) fn check(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        let mut expect = |ok: bool, what: &str| {
            if !ok {
                wrong.push(what.to_string());
            }
        };
        let winner = self.first.report["winner"].as_str();
        let arn = self.first.report["identity"]["arn"].as_str().unwrap_or("");
        let worked = self.first.exit_code == Some(0);
        let agent_status = self
            .agent_lines
            .first()
            .and_then(|l| l["http.status"].as_u64());
        let eks_code = self
            .eks_lines
            .first()
            .and_then(|l| l["error.code"].as_str());
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
            worked == self.scenario.expects_credentials(),
            &format!(
                "demo-app {} credentials (exit {:?})",
                if worked { "found" } else { "found no" },
                self.first.exit_code
            ),
        );
        match self.scenario {
            Scenario::HappyPath | Scenario::Cache => {
                expect(
                    winner == Some("container"),
                    "the container provider should win",
                );
                expect(
                    arn.contains(":assumed-role/lab-pod-role/") || !lab_sts,
                    "the identity should be the association's role",
                );
                expect(agent_status == Some(200), "the agent should answer 200");
                if lab_sts {
                    expect(assumes == 1, "exactly one AssumeRole should reach STS");
                }
            }
            Scenario::NoAssociation => {
                expect(agent_status == Some(404), "the agent should answer 404");
                expect(
                    eks_code == Some("ResourceNotFoundException"),
                    "eks-auth should answer ResourceNotFoundException",
                );
                expect(assumes == 0, "nothing should reach STS");
            }
            Scenario::ExpiredToken => {
                expect(agent_status == Some(400), "the agent should answer 400");
                expect(self.eks_lines.is_empty(), "eks-auth should not be asked");
                expect(assumes == 0, "nothing should reach STS");
            }
            Scenario::StaticKeysShadow => {
                expect(
                    winner == Some("environment"),
                    "the environment provider should win",
                );
                expect(
                    arn.ends_with(":user/ci-deployer") || !lab_sts,
                    "the identity should be the IAM user of the static keys",
                );
                // demo-app looks at the container step itself (one request); the SDK never asks.
                expect(
                    self.agent_lines.len() <= 1,
                    "only demo-app's own look should reach the agent, never the SDK",
                );
            }
            Scenario::AgentDown => {
                expect(winner.is_none(), "no provider should win");
                expect(self.agent_lines.is_empty(), "no agent should answer");
            }
            // Refused by eks-auth after the agent's own checks passed: the agent passes the 400 on.
            Scenario::WrongAudience
            | Scenario::LongLivedToken
            | Scenario::DeletedPod
            | Scenario::StolenTokenOtherNode
            | Scenario::UnauthenticatedCaller
            | Scenario::RoleOutsidePolicy => {
                let code = match self.scenario {
                    Scenario::StolenTokenOtherNode
                    | Scenario::UnauthenticatedCaller
                    | Scenario::RoleOutsidePolicy => "AccessDeniedException",
                    _ => "InvalidTokenException",
                };
                expect(
                    agent_status == Some(400),
                    "the agent should pass on eks-auth's 400",
                );
                expect(
                    eks_code == Some(code),
                    &format!("eks-auth should answer {code}"),
                );
                expect(assumes == 0, "nothing should reach STS");
            }
            Scenario::CrossAccount => {
                expect(
                    winner == Some("container"),
                    "the container provider should win",
                );
                expect(
                    arn.contains(&format!("{OTHER_ACCOUNT}:assumed-role/lab-cross-account/"))
                        || !lab_sts,
                    "the identity should be the target role in the other account",
                );
                if lab_sts {
                    expect(assumes == 2, "two AssumeRole calls should reach STS");
                }
            }
        }
        if self.scenario == Scenario::Cache {
            let second_ok = self.second.is_some_and(|s| s.exit_code == Some(0));
            expect(second_ok, "the second process should get credentials too");
            let first_miss = self
                .agent_lines
                .iter()
                .filter(|l| l["cache"] == "miss")
                .count();
            expect(first_miss == 1, "exactly one request should miss the cache");
        }
        wrong
    }
}
