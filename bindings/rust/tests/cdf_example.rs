//! The §4.1 provider, examples/hms_cdf.rs: HMS-CDF in Rust serving hms.cdf.debate 2.1.0, called
//! from Rust and from the C++ `hms-ffi` tool; its errors per the seed's §8.1; SIGTERM stops it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{example_binary, field, Broker, Process};
use hms_ffi::{Client, Code, Transport};

fn start_cdf(broker: &Broker) -> Process {
    let bin = example_binary("hms_cdf");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --offline --examples` first",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.arg("--socket").arg(&broker.socket);
    let mut p = Process::spawn(&mut cmd);
    p.expect_line("hms-cdf [rust]: ready", Duration::from_secs(20));
    p
}

fn params(policy: &str, facts: &[(&str, &str)]) -> String {
    let facts: Vec<String> =
        facts.iter().map(|(k, v)| format!(r#"{{"key":"{}","value":"{}"}}"#, k, v)).collect();
    format!(r#"{{"policyId":"{}","facts":[{}],"maxRounds":3}}"#, policy, facts.join(","))
}

#[test]
fn hms_cdf_decides_like_the_cpp_one_and_maps_errors() {
    let broker = Broker::start();
    let cdf = start_cdf(&broker);
    let client =
        Client::connect(&broker.options("hms-sys-test", Transport::Auto)).expect("connect");
    let stub = client.bind("hms.cdf.debate", "^2.0").expect("bind");
    assert_eq!(stub.version(), "2.1.0");

    // The three cases of examples/sys_policy_caller.cpp, with the C++ HMS-CDF's verdicts.
    let cases = [
        (
            &[("encounter", "emergency"), ("consent", "no"), ("dataClass", "sensitive")],
            "approve",
            0.6,
        ),
        (&[("encounter", "none"), ("consent", "no"), ("dataClass", "sensitive")], "deny", 0.65),
        (&[("encounter", "routine"), ("consent", "yes"), ("dataClass", "general")], "approve", 1.0),
    ];
    for (facts, decision, confidence) in cases {
        let reply =
            stub.call("evaluatePolicy", &params("records.release", facts)).expect("evaluatePolicy");
        assert_eq!(field(&reply, "decision").as_str(), Some(decision), "{}", reply);
        let c = field(&reply, "confidence").as_f64().expect("confidence");
        assert!((c - confidence).abs() < 1e-9, "{}", reply);
        assert_eq!(field(&reply, "rounds").as_u64(), Some(3));
        let args = field(&reply, "arguments");
        let agents: Vec<&str> = args
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.get("agent").and_then(|v| v.as_str()))
            .collect();
        assert_eq!(agents, vec!["privacy", "clinical", "compliance"]);
    }

    let err =
        stub.call("evaluatePolicy", &params("no-such-policy", &[])).expect_err("unknown policy");
    assert_eq!(err.code(), Code::NotFound, "{}", err);
    assert_eq!(err.source(), "hms.cdf.debate");
    assert_eq!(err.detail("policyId"), Some("no-such-policy"));

    let err = stub.call("evaluatePolicy", &params("", &[])).expect_err("empty policy");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err);
    assert_eq!(err.detail("field"), Some("policyId"));

    let err = stub.call("evaluatePolicy", &params("crash", &[])).expect_err("crash");
    assert_eq!(err.code(), Code::Internal, "{}", err);
    assert_eq!(err.source(), "hms.cdf.debate");

    let err = stub.call("createDebate", r#"{"topic":"t","policyId":"p"}"#).expect_err("not served");
    assert_eq!(err.code(), Code::Unimplemented, "{}", err);

    // A C++ caller (the hms-ffi tool) sees the same.
    let out = Command::new(common::cli_binary())
        .arg("--socket")
        .arg(&broker.socket)
        .args([
            "call",
            "hms.cdf.debate@^2.0",
            "evaluatePolicy",
            &params("records.release", &[("consent", "yes")]),
        ])
        .output()
        .expect("hms-ffi");
    assert!(out.status.success(), "{:?}", out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(field(&text, "decision").as_str(), Some("approve"), "{}", text);

    let (code, lines) = cdf.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "exits cleanly on SIGTERM: {:?}", lines);
    assert!(
        lines.iter().any(|l| l == "hms-cdf [rust]: evaluatePolicy records.release -> APPROVE"),
        "{:?}",
        lines
    );
    assert!(
        lines.iter().any(|l| l == "hms-cdf [rust]: evaluatePolicy no-such-policy -> NOT_FOUND"),
        "{:?}",
        lines
    );
    assert!(
        lines.iter().any(|l| l == "hms-cdf [rust]: evaluatePolicy crash -> INTERNAL"),
        "{:?}",
        lines
    );
}
