//! HMS-CDF in Rust: serves `hms.cdf.debate` 2.1.0 (`DebateService`,
//! schemas/hms/cdf/debate.capnp) for HMS-SYS (the seed's §4.1). `evaluatePolicy` runs a small
//! deterministic debate: each agent of the policy weighs the facts and takes a position, and the
//! weighted majority decides. Errors follow the seed's §8.1:
//!
//! - a policy id not in the table (e.g. `no-such-policy`) → `NOT_FOUND`, details `{"policyId"}`;
//! - an empty policy id → `INVALID_ARGUMENT`, details `{"field":"policyId","reason"}`;
//! - policy id `crash` → the engine panics; the panic is caught and answered `INTERNAL`;
//! - any other method → `UNIMPLEMENTED`.
//!
//! Usage: `hms_cdf [--socket PATH] [--schema PATH]`. Prints `hms-cdf [rust]: ready` once
//! registered and one line per request; SIGTERM or SIGINT stops it cleanly.
//!
//! The same policy `records.release` gives the same verdicts as the C++ HMS-CDF
//! (examples/cdf_debate_service.cpp).

use std::os::raw::c_int;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hms_ffi::{Client, Code, Error, Options, Request, ServiceOptions};

#[path = "support/json.rs"]
mod json;

const SERVICE_ID: &str = "hms.cdf.debate";
const VERSION: &str = "2.1.0";
const DEFAULT_SCHEMA: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/hms/cdf/debate.capnp");

// ---- stopping on SIGTERM/SIGINT, std only ------------------------------------------------------

static STOP: AtomicBool = AtomicBool::new(false);
const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;

extern "C" {
    // glibc's signal(): BSD semantics (the handler stays installed, SA_RESTART).
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
}

extern "C" fn on_stop_signal(_: c_int) {
    // An atomic store is async-signal-safe; the serving loop polls the flag.
    STOP.store(true, Ordering::Release);
}

// ---- the debate ---------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Decision {
    Approve,
    Deny,
    Escalate,
}

impl Decision {
    /// The enumerant's name, as the JSON level writes and reads it.
    fn name(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
            Decision::Escalate => "escalate",
        }
    }
    const ALL: [Decision; 3] = [Decision::Approve, Decision::Deny, Decision::Escalate];
}

/// The facts of a request, by key ("" for a key not given).
struct Facts(Vec<(String, String)>);

impl Facts {
    fn get(&self, key: &str) -> &str {
        self.0.iter().rev().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
    }
}

struct Argument {
    agent: &'static str,
    position: Decision,
    rationale: String,
    weight: f64,
}

/// An agent: its name, its weight in the vote, and how it reads the facts.
type Agent = (&'static str, f64, fn(&Facts) -> (Decision, String));

fn agent(name: &'static str, weight: f64, rule: fn(&Facts) -> (Decision, String)) -> Agent {
    (name, weight, rule)
}

/// The policies this HMS-CDF knows, each with its agents.
fn policy(id: &str) -> Option<Vec<Agent>> {
    match id {
        // Release of patient records (the demo's HMS-SYS asks this one); the same weights and
        // rules as the C++ HMS-CDF.
        "records.release" => Some(vec![
            agent("privacy", 0.4, |f| {
                let consent = f.get("consent") == "yes";
                let sensitive = f.get("dataClass") == "sensitive";
                let why = if consent {
                    "patient consent on file"
                } else {
                    "no consent for sensitive data"
                };
                (if consent || !sensitive { Decision::Approve } else { Decision::Deny }, why.into())
            }),
            agent("clinical", 0.35, |f| {
                let emergency = f.get("encounter") == "emergency";
                let consent = f.get("consent") == "yes";
                let why = if emergency {
                    "emergency care needs the record"
                } else {
                    "no clinical urgency"
                };
                (
                    if emergency || consent { Decision::Approve } else { Decision::Escalate },
                    why.into(),
                )
            }),
            agent("compliance", 0.25, |f| {
                let deny = f.get("dataClass") == "sensitive"
                    && f.get("consent") != "yes"
                    && f.get("encounter") != "emergency";
                (
                    if deny { Decision::Deny } else { Decision::Approve },
                    "HIPAA minimum-necessary test".into(),
                )
            }),
        ]),
        // Export of de-identified data for research: privacy weighs most.
        "research.export" => Some(vec![
            agent("privacy", 0.5, |f| {
                if f.get("deidentified") == "yes" {
                    (Decision::Approve, "the data set is de-identified".into())
                } else {
                    (Decision::Deny, "identifiable data leaves the care setting".into())
                }
            }),
            agent("research", 0.3, |f| {
                if f.get("irbApproved") == "yes" {
                    (Decision::Approve, "IRB approval on file".into())
                } else {
                    (Decision::Escalate, "no IRB approval yet".into())
                }
            }),
            agent("compliance", 0.2, |f| {
                if f.get("dataUseAgreement") == "yes" {
                    (Decision::Approve, "data use agreement signed".into())
                } else {
                    (Decision::Escalate, "a data use agreement is needed".into())
                }
            }),
        ]),
        // Break-the-glass access by a clinician outside the care team.
        "emergency.override" => Some(vec![
            agent("clinical", 0.5, |f| {
                if f.get("encounter") == "emergency" {
                    (Decision::Approve, "life-threatening situation".into())
                } else {
                    (Decision::Deny, "no emergency".into())
                }
            }),
            agent("audit", 0.5, |f| {
                if f.get("justification").is_empty() {
                    (Decision::Escalate, "no justification given: review afterwards".into())
                } else {
                    (Decision::Approve, "justification recorded".into())
                }
            }),
        ]),
        _ => None,
    }
}

/// The verdict of a debate: the stance with the most weight (ties go to the first of approve,
/// deny, escalate), its share of the weight, and every agent's argument.
fn debate(agents: &[Agent], facts: &Facts, max_rounds: u32) -> (Decision, f64, Vec<Argument>, u32) {
    let arguments: Vec<Argument> = agents
        .iter()
        .map(|&(agent, weight, rule)| {
            let (position, rationale) = rule(facts);
            Argument { agent, position, rationale, weight }
        })
        .collect();
    let total: f64 = arguments.iter().map(|a| a.weight).sum();
    let mut best = (Decision::Escalate, -1.0);
    for d in Decision::ALL {
        let score: f64 = arguments.iter().filter(|a| a.position == d).map(|a| a.weight).sum();
        if score > best.1 {
            best = (d, score);
        }
    }
    let confidence = if total > 0.0 { best.1 / total } else { 0.0 };
    let rounds = (if max_rounds == 0 { 1 } else { max_rounds }).min(3);
    (best.0, confidence, arguments, rounds)
}

/// evaluatePolicy: params {policyId, facts:[{key,value}], maxRounds} → results
/// {decision, confidence, arguments, rounds}; the policy id is returned beside it for the log.
fn evaluate_policy(params: &str) -> (String, Result<(Decision, String), Error>) {
    let p = match json::parse(params) {
        Ok(p) => p,
        Err(e) => return (String::new(), Err(Error::new(Code::InvalidArgument, e))),
    };
    let policy_id = p.get("policyId").and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let result = evaluate(&policy_id, &p);
    (policy_id, result)
}

fn evaluate(policy_id: &str, p: &json::Value) -> Result<(Decision, String), Error> {
    if policy_id.is_empty() {
        return Err(Error::new(Code::InvalidArgument, "policyId is required")
            .with_detail("field", "policyId")
            .with_detail("reason", "empty"));
    }
    if policy_id == "crash" {
        // The engine fails (a bug, as far as the caller can tell): answered INTERNAL.
        panic!("the debate engine failed on policy '{}'", policy_id);
    }
    let agents = policy(policy_id).ok_or_else(|| {
        Error::new(
            Code::NotFound,
            format!(
                "no policy '{}'; hms-cdf knows records.release, research.export and emergency.override",
                policy_id
            ),
        )
        .with_detail("policyId", policy_id)
    })?;
    let mut facts = Vec::new();
    for (i, f) in p.get("facts").and_then(|v| v.as_array()).unwrap_or(&[]).iter().enumerate() {
        let key = f.get("key").and_then(|v| v.as_str()).unwrap_or("");
        if key.is_empty() {
            return Err(Error::new(Code::InvalidArgument, format!("facts[{}].key is empty", i))
                .with_detail("field", format!("facts[{}].key", i))
                .with_detail("reason", "empty"));
        }
        let value = f.get("value").and_then(|v| v.as_str()).unwrap_or("");
        facts.push((key.to_owned(), value.to_owned()));
    }
    let max_rounds =
        p.get("maxRounds").and_then(|v| v.as_u64()).unwrap_or(0).min(u32::MAX as u64) as u32;
    let (decision, confidence, arguments, rounds) = debate(&agents, &Facts(facts), max_rounds);
    let args: Vec<String> = arguments
        .iter()
        .map(|a| {
            format!(
                "{{\"agent\":{},\"position\":\"{}\",\"rationale\":{},\"weight\":{}}}",
                json::quote(a.agent),
                a.position.name(),
                json::quote(&a.rationale),
                a.weight
            )
        })
        .collect();
    let results = format!(
        "{{\"decision\":\"{}\",\"confidence\":{},\"arguments\":[{}],\"rounds\":{}}}",
        decision.name(),
        confidence,
        args.join(","),
        rounds
    );
    Ok((decision, results))
}

/// Answers one request, and says what happened on stdout.
fn handle(req: Request) {
    if req.method() != "evaluatePolicy" {
        let method = req.method().to_owned();
        println!("hms-cdf [rust]: {} -> UNIMPLEMENTED", method);
        let message = format!(
            "hms-cdf [rust] serves evaluatePolicy only; {} is served by the C++ HMS-CDF",
            method
        );
        let _ = req.reply_error(Code::Unimplemented, &message, &[("method", &method)]);
        return;
    }
    let params = match req.params_json() {
        Ok(p) => p,
        Err(e) => {
            println!("hms-cdf [rust]: evaluatePolicy (unreadable) -> {}", e.code());
            let _ = req.reply_err(&e);
            return;
        }
    };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| evaluate_policy(&params)));
    let (policy_id, result) = match outcome {
        Ok(r) => r,
        Err(cause) => {
            let what = cause
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| cause.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            let id = json::parse(&params)
                .ok()
                .and_then(|p| p.get("policyId").and_then(|v| v.as_str()).map(str::to_owned))
                .unwrap_or_default();
            (id, Err(Error::new(Code::Internal, format!("evaluatePolicy failed: {}", what))))
        }
    };
    match result {
        Ok((decision, results)) => {
            println!(
                "hms-cdf [rust]: evaluatePolicy {} -> {}",
                policy_id,
                decision.name().to_uppercase()
            );
            if let Err(e) = req.reply_json(&results) {
                eprintln!("hms-cdf [rust]: the reply did not fit: {}", e);
            }
        }
        Err(e) => {
            println!("hms-cdf [rust]: evaluatePolicy {} -> {}", policy_id, e.code());
            let _ = req.reply_err(&e);
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: hms_cdf [--socket PATH] [--schema PATH]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut options = Options::new().name("hms-cdf");
    let mut schema = DEFAULT_SCHEMA.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--socket", Some(v)) => options = options.socket_path(v),
            ("--schema", Some(v)) => schema = v,
            _ => return usage(),
        }
    }
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        signal(SIGTERM, on_stop_signal);
        signal(SIGINT, on_stop_signal);
    }
    // The engine's panics are answered INTERNAL; log them on one line instead of a backtrace.
    panic::set_hook(Box::new(|info| eprintln!("hms-cdf [rust]: handler panicked: {}", info)));

    // A broker started just before may not serve its socket yet: try for up to 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        match Client::connect(&options) {
            Ok(c) => break c,
            Err(e)
                if e.code() == Code::Unavailable
                    && Instant::now() < deadline
                    && !STOP.load(Ordering::Acquire) =>
            {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => {
                eprintln!("hms-cdf [rust]: {}", e);
                return ExitCode::from(1);
            }
        }
    };
    let service_options = ServiceOptions::new()
        .display_name("Policy debate (Rust)")
        .description("Multi-agent policy evaluation (HMS-CDF, Rust)");
    let service =
        match client.serve(SERVICE_ID, VERSION, &schema, "DebateService", &service_options) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "hms-cdf [rust]: serving {} {} from {}: {}",
                    SERVICE_ID, VERSION, schema, e
                );
                return ExitCode::from(1);
            }
        };
    println!("hms-cdf [rust]: ready");
    while !STOP.load(Ordering::Acquire) {
        match service.next(Duration::from_millis(200)) {
            Ok(Some(req)) => handle(req),
            Ok(None) => {}
            Err(e) => {
                eprintln!("hms-cdf [rust]: {}", e);
                return ExitCode::from(1);
            }
        }
    }
    drop(service); // leaves the registry
    drop(client);
    println!("hms-cdf [rust]: stopped");
    ExitCode::SUCCESS
}
