//! The verdict policy: when user space has seen enough of a flow, and what
//! then happens to it. A flow gets a verdict when a rule decides it (`drop`,
//! or `pass`/`bypass`), when it is classified (the policy maps protocol and
//! host to an action, else the default), or when it reaches the give-up limit
//! (default 10 packets for TCP, 8 for UDP, as in the original work).
//!
//! ```toml
//! give_up_tcp = 10
//! give_up_udp = 8
//! default = "allow"
//! rule_limit = "drop"       # a drop rule that runs out of inspection steps:
//!                           # drop the flow (default), or "ignore" (no match)
//! [[match]]
//! protocol = "TLS"          # nDPI's name; omit for any
//! host = "*.evil.test"      # '*' matches any run of characters; omit for any
//! action = "drop"           # allow | drop
//! ```

use std::{net::IpAddr, path::Path};

use serde::Deserialize;

use crate::{
    classify::{Classification, FlowClassifier, Protocol},
    flow::PROTO_TCP,
    rules::{Action, PacketView, RuleError, RuleSet},
};

/// What the data plane does with a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Let it through; the kernel handles the rest of it.
    Allow,
    /// Drop it, both directions, from the next packet on.
    Drop,
    /// Not decided yet: keep sending it to user space.
    InspectMore,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Drop => "drop",
            Verdict::InspectMore => "inspect-more",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchEntry {
    protocol: Option<String>,
    host: Option<String>,
    action: Verdict,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    give_up_tcp: Option<u32>,
    give_up_udp: Option<u32>,
    default: Option<Verdict>,
    rule_limit: Option<RuleLimit>,
    #[serde(default, rename = "match")]
    matches: Vec<MatchEntry>,
}

/// A loaded policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub give_up_tcp: u32,
    pub give_up_udp: u32,
    pub default: Verdict,
    pub rule_limit: RuleLimit,
    entries: Vec<(Option<Protocol>, Option<String>, Verdict)>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            give_up_tcp: crate::classify::GIVE_UP_TCP,
            give_up_udp: crate::classify::GIVE_UP_UDP,
            default: Verdict::Allow,
            rule_limit: RuleLimit::Drop,
            entries: Vec::new(),
        }
    }
}

/// What a `drop` rule whose matching ran out of steps
/// ([`crate::rules::INSPECTION_LIMIT`]) does to its flow. Such an input is
/// most likely crafted to get past the rule, so by default it is dropped
/// (fail closed); `ignore` treats it as no match, as Suricata does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleLimit {
    Drop,
    Ignore,
}

/// `*` matches any run of characters; case-insensitive.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    let first = parts[0];
    if !rest.starts_with(first) {
        return false;
    }
    rest = &rest[first.len()..];
    let last = parts[parts.len() - 1];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

impl Policy {
    /// Parses a policy file; errors name the line and the key.
    pub fn parse(text: &str, file: &Path) -> Result<Policy, RuleError> {
        let error = |line: usize, message: String| RuleError {
            file: file.into(),
            line,
            message,
        };
        let parsed: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            error(line, e.message().to_string())
        })?;
        let mut policy = Policy::default();
        if let Some(n) = parsed.give_up_tcp {
            policy.give_up_tcp = n.max(1);
        }
        if let Some(n) = parsed.give_up_udp {
            policy.give_up_udp = n.max(1);
        }
        if let Some(d) = parsed.default {
            policy.default = d;
        }
        if let Some(limit) = parsed.rule_limit {
            policy.rule_limit = limit;
        }
        for (i, m) in parsed.matches.into_iter().enumerate() {
            let protocol = match m.protocol {
                Some(name) => Some(Protocol::from_name(&name).ok_or_else(|| {
                    error(0, format!("[[match]] #{}: unknown protocol `{name}` (use nDPI's names: TLS, HTTP, DNS, QUIC...)", i + 1))
                })?),
                None => None,
            };
            if m.action == Verdict::InspectMore {
                return Err(error(
                    0,
                    format!("[[match]] #{}: action must be allow or drop", i + 1),
                ));
            }
            policy.entries.push((protocol, m.host, m.action));
        }
        Ok(policy)
    }

    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Policy, RuleError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuleError {
            file: path.into(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Policy::parse(&text, path)
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// The verdict for a classified flow: the first matching entry, else the default.
    pub fn decide(&self, c: &Classification) -> Verdict {
        self.entries
            .iter()
            .find(|(protocol, host, _)| {
                protocol.is_none_or(|p| p == c.protocol)
                    && host.as_deref().is_none_or(|h| {
                        c.host
                            .as_deref()
                            .is_some_and(|name| wildcard_match(h, name))
                    })
            })
            .map_or(self.default, |(_, _, verdict)| *verdict)
    }
}

/// Rules and policy, shared by every flow of a worker.
#[derive(Debug, Default)]
pub struct Engine {
    pub rules: Option<RuleSet>,
    pub policy: Policy,
}

/// One packet of a flow, for [`FlowInspector::on_packet`].
#[derive(Clone, Copy, Debug)]
pub struct FlowPacket<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub from_client: bool,
    pub payload: &'a [u8],
    /// TCP sequence number and SYN flag (None for other transports).
    pub tcp: Option<(u32, bool)>,
}

/// Inspection state of one flow: classifier, matched rules, verdict.
#[derive(Clone, Debug)]
pub struct FlowInspector {
    l4: u8,
    classifier: FlowClassifier,
    sids: Vec<u32>,
    verdict: Verdict,
    /// Why the verdict was reached: "rule", "rule-limit" (a drop rule ran
    /// out of inspection steps), "policy" or "give-up".
    pub decided_by: Option<&'static str>,
    /// Rules whose matching ran out of inspection steps on this flow.
    pub over_limit: u32,
    packets: u32,
    directions: [bool; 2],
}

impl FlowInspector {
    pub fn new(l4: u8, engine: &Engine) -> Self {
        let give_up = if l4 == PROTO_TCP {
            engine.policy.give_up_tcp
        } else {
            engine.policy.give_up_udp
        };
        FlowInspector {
            l4,
            classifier: FlowClassifier::new(l4, give_up),
            sids: Vec::new(),
            verdict: Verdict::InspectMore,
            decided_by: None,
            over_limit: 0,
            packets: 0,
            directions: [false; 2],
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    pub fn sids(&self) -> &[u32] {
        &self.sids
    }

    /// The classification so far (or, once `finish`ed, the final one).
    pub fn classification(&self) -> Option<&Classification> {
        self.classifier.result()
    }

    /// Ends the classification (port guess or Unknown if undecided).
    pub fn finish(&mut self) -> Classification {
        self.classifier.finish()
    }

    /// Packets seen in user space up to the verdict.
    pub fn packets(&self) -> u32 {
        self.packets
    }

    /// Looks at one packet; returns the verdict (which stays once reached).
    pub fn on_packet(&mut self, engine: &Engine, p: &FlowPacket<'_>) -> Verdict {
        if self.verdict != Verdict::InspectMore {
            return self.verdict;
        }
        self.packets += 1;
        self.directions[usize::from(!p.from_client)] = true;
        self.classifier
            .on_packet(p.payload, p.from_client, p.sport, p.dport);
        if let Some(rules) = &engine.rules {
            let app = self.classifier.result();
            let view = PacketView {
                l4: self.l4,
                src: p.src,
                dst: p.dst,
                sport: p.sport,
                dport: p.dport,
                to_server: p.from_client,
                established: self.directions == [true, true],
                payload: p.payload,
                app,
                ja4: app.and_then(|a| a.info.ja4.as_deref()),
            };
            let matched = rules.matches(&view);
            self.over_limit += matched.over_limit.len() as u32;
            if engine.policy.rule_limit == RuleLimit::Drop
                && matched.over_limit.iter().any(|h| h.action == Action::Drop)
            {
                self.verdict = Verdict::Drop;
                self.decided_by = Some("rule-limit");
            }
            for hit in matched.hits {
                if !self.sids.contains(&hit.sid) {
                    self.sids.push(hit.sid);
                }
                let decided = match hit.action {
                    Action::Drop => Some(Verdict::Drop),
                    Action::Pass | Action::Bypass => Some(Verdict::Allow),
                    Action::Alert => None,
                };
                if let Some(v) = decided
                    && self.verdict == Verdict::InspectMore
                {
                    self.verdict = v;
                    self.decided_by = Some("rule");
                }
            }
            if self.verdict != Verdict::InspectMore {
                return self.verdict;
            }
        }
        if !self.classifier.wants_more() {
            let c = self.classifier.result().expect("decided");
            self.verdict = engine.policy.decide(c);
            self.decided_by = Some("policy");
        } else if self.classifier.packets_seen() >= self.give_up(engine)
            || self.packets >= 2 * self.give_up(engine)
        {
            // Give up: packets with payload reached the limit, or twice as
            // many packets overall (a flow of empty segments decides too).
            let c = self.classifier.finish();
            self.verdict = engine.policy.decide(&c);
            self.decided_by = Some("give-up");
        }
        self.verdict
    }

    fn give_up(&self, engine: &Engine) -> u32 {
        if self.l4 == PROTO_TCP {
            engine.policy.give_up_tcp
        } else {
            engine.policy.give_up_udp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Vars;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.evil.test", "www.Evil.test"));
        assert!(!wildcard_match("*.evil.test", "evil.test"));
        assert!(wildcard_match("evil.test", "EVIL.TEST"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*c*e", "abcde"));
        assert!(!wildcard_match("a*c*e", "abcd"));
    }

    #[test]
    fn policy_file_and_its_errors() {
        let p = Policy::parse(
            "give_up_udp = 4\ndefault = \"allow\"\n[[match]]\nprotocol = \"TLS\"\nhost = \"*.evil.test\"\naction = \"drop\"\n",
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!((p.give_up_tcp, p.give_up_udp, p.entries()), (10, 4, 1));
        let tls = |host: &str| Classification {
            protocol: Protocol::Tls,
            host: Some(host.into()),
            ..Classification::default()
        };
        assert_eq!(p.decide(&tls("a.evil.test")), Verdict::Drop);
        assert_eq!(p.decide(&tls("good.test")), Verdict::Allow);
        let e = Policy::parse("give_up_tcp = 10\nbogus = 1\n", Path::new("p.toml")).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("bogus"), "{e}");
        let e = Policy::parse(
            "[[match]]\nprotocol = \"NOPE\"\naction = \"drop\"\n",
            Path::new("p.toml"),
        )
        .unwrap_err();
        assert!(e.message.contains("NOPE"), "{e}");
    }

    fn http_flow(engine: &Engine, host: &str) -> FlowInspector {
        let mut f = FlowInspector::new(PROTO_TCP, engine);
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let p = FlowPacket {
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            sport: 40000,
            dport: 80,
            from_client: true,
            payload: req.as_bytes(),
            tcp: None,
        };
        f.on_packet(engine, &p);
        f
    }

    #[test]
    fn rules_decide_before_the_policy() {
        let rules = RuleSet::parse(
            "drop http any any -> any any (http.host; content:\"blocked.test\"; sid:7;)\nalert tcp any any -> any any (content:\"GET\"; sid:8;)\n",
            Path::new("r"),
            &Vars::default(),
            false,
        )
        .unwrap();
        let engine = Engine {
            rules: Some(rules),
            policy: Policy::default(),
        };
        let blocked = http_flow(&engine, "blocked.test");
        assert_eq!(
            (blocked.verdict(), blocked.decided_by, blocked.sids()),
            (Verdict::Drop, Some("rule"), &[7, 8][..])
        );
        let fine = http_flow(&engine, "fine.test");
        assert_eq!(
            (fine.verdict(), fine.decided_by, fine.sids()),
            (Verdict::Allow, Some("policy"), &[8][..])
        );
    }

    /// A drop rule whose matching runs out of steps on a crafted request
    /// drops the flow (fail closed), unless the policy says to ignore it.
    #[test]
    fn a_drop_rule_out_of_steps_drops_unless_told_to_ignore() {
        let rules = || {
            RuleSet::parse(
                "drop http any any -> any any (content:\"../\"; content:\"../\"; distance:0; content:\"../\"; distance:0; content:\"../\"; distance:0; content:\"GET\"; distance:0; within:3; sid:9;)\n",
                Path::new("r"),
                &Vars::default(),
                false,
            )
            .unwrap()
        };
        let host = format!("x{}", "../".repeat(150));
        let engine = Engine {
            rules: Some(rules()),
            policy: Policy::default(),
        };
        let crafted = http_flow(&engine, &host);
        assert_eq!(
            (crafted.verdict(), crafted.decided_by, crafted.over_limit),
            (Verdict::Drop, Some("rule-limit"), 1)
        );
        let engine = Engine {
            rules: Some(rules()),
            policy: Policy::parse("rule_limit = \"ignore\"\n", Path::new("p.toml")).unwrap(),
        };
        let crafted = http_flow(&engine, &host);
        assert_eq!(
            (crafted.verdict(), crafted.decided_by, crafted.over_limit),
            (Verdict::Allow, Some("policy"), 1)
        );
    }

    #[test]
    fn unrecognisable_flows_are_decided_at_once_and_empty_ones_at_the_limit() {
        let engine = Engine::default();
        let packet = |payload: &'static [u8], sport| FlowPacket {
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            sport,
            dport: 80,
            from_client: true,
            payload,
            tcp: None,
        };
        // Every dissector rules itself out: Unknown, and the policy decides.
        let mut f = FlowInspector::new(17, &engine);
        assert_eq!(
            f.on_packet(
                &engine,
                &packet(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3], 40000)
            ),
            Verdict::Allow
        );
        assert_eq!(f.decided_by, Some("policy"));
        // Empty TCP segments give nothing to classify: decided at twice the limit.
        let mut f = FlowInspector::new(PROTO_TCP, &engine);
        let verdicts: Vec<Verdict> = (0..20)
            .map(|_| f.on_packet(&engine, &packet(&[], 40001)))
            .collect();
        assert_eq!(verdicts[..19], [Verdict::InspectMore; 19]);
        assert_eq!(
            (verdicts[19], f.decided_by),
            (Verdict::Allow, Some("give-up"))
        );
        assert_eq!(
            f.finish().protocol,
            Protocol::Http,
            "guessed by port: the flow carried no payload"
        );
    }
}
