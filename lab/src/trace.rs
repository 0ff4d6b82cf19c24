//! The numbered trace: one entry per hop a reviewer must follow, printed as it happens, in
//! text for a terminal or as JSON lines (`--json`). Every entry carries the run's correlation id
//! (the pod's uid, which the token, the agent's and eks-auth's log lines and the STS session tag
//! `kubernetes-pod-uid` all carry too), and where a component logged the hop itself, its own log
//! line is attached.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

/// How a hop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A check passed or a step did what it should.
    Ok,
    /// A check refused, or a step failed.
    Refused,
    /// Context: what was started, what was configured.
    Info,
    /// Nothing happened at this hop (and why is in the details).
    Skipped,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✔",
            Status::Refused => "✘",
            Status::Info => "•",
            Status::Skipped => "–",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Status::Ok => "32",
            Status::Refused => "31",
            Status::Info => "36",
            Status::Skipped => "33",
        }
    }
}

/// One entry of the trace.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub n: usize,
    pub correlation_id: String,
    /// Who acted: `lab`, `issuer`, `webhook`, `kubelet`, `pod`, `sdk`, `agent`, `eks-auth`,
    /// `sts`, `outcome`.
    pub component: String,
    pub status: Status,
    pub title: String,
    pub details: Vec<String>,
    /// The component's own log line for this hop, as it wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Value>,
}

/// The trace of one run.
pub struct Trace {
    correlation_id: String,
    json: bool,
    colour: bool,
    hops: Vec<Hop>,
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("correlation_id", &self.correlation_id)
            .field("hops", &self.hops.len())
            .finish()
    }
}

impl Trace {
    pub fn new(
        correlation_id: String,
        json: bool,
        colour: bool,
        out: Box<dyn Write + Send>,
    ) -> Self {
        Self {
            correlation_id,
            json,
            colour,
            hops: Vec::new(),
            out,
        }
    }

    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    /// Record and print one hop.
    pub fn hop(
        &mut self,
        component: &str,
        status: Status,
        title: impl Into<String>,
        details: Vec<String>,
        log: Option<Value>,
    ) {
        let hop = Hop {
            n: self.hops.len() + 1,
            correlation_id: self.correlation_id.clone(),
            component: component.to_string(),
            status,
            title: title.into(),
            details,
            log,
        };
        let text = if self.json {
            let mut line = serde_json::to_string(&hop).unwrap_or_default();
            line.push('\n');
            line
        } else {
            render(&hop, self.colour)
        };
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
        self.hops.push(hop);
    }

    /// A line of text outside the numbered hops (text mode only): headings, the explanation.
    pub fn say(&mut self, text: &str) {
        if !self.json {
            let _ = writeln!(self.out, "{text}");
            let _ = self.out.flush();
        }
    }
}

/// One hop in text: `NN  component  ✔ title`, then indented details and the log line.
pub fn render(hop: &Hop, colour: bool) -> String {
    let paint = |code: &str, s: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = format!(
        "{:>3}  {:<9} {} {}\n",
        hop.n,
        hop.component,
        paint(hop.status.colour(), hop.status.mark()),
        paint("1", &hop.title)
    );
    for d in &hop.details {
        out.push_str(&format!("{:16}{d}\n", ""));
    }
    if let Some(log) = &hop.log {
        out.push_str(&format!(
            "{:16}{}\n",
            "",
            paint("2", &format!("{} log: {log}", hop.component))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hops_are_numbered_and_carry_the_correlation_id_in_both_formats() {
        let sink = Sink::default();
        let mut trace = Trace::new("uid-1".into(), true, false, Box::new(sink.clone()));
        trace.hop(
            "webhook",
            Status::Ok,
            "injected",
            vec!["add /spec/volumes".into()],
            None,
        );
        trace.say("not in json");
        trace.hop(
            "agent",
            Status::Refused,
            "400",
            vec![],
            Some(serde_json::json!({"message": "credentials refused"})),
        );
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["n"], 1);
        assert_eq!(lines[1]["n"], 2);
        assert_eq!(lines[1]["status"], "refused");
        assert!(lines.iter().all(|l| l["correlation_id"] == "uid-1"));
        assert_eq!(lines[1]["log"]["message"], "credentials refused");

        let shown = render(&trace.hops()[1], false);
        assert!(shown.starts_with("  2  agent     ✘ 400\n"), "{shown}");
        assert!(shown.contains("agent log: {\"message\":\"credentials refused\"}"));
        assert!(render(&trace.hops()[0], true).contains("\x1b[32m✔"));
    }
}
