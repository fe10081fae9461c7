//! The first call of the README: HMS-SYS's question to HMS-CDF (`hms.cdf.debate`), and the
//! NOT_FOUND an unknown policy gets. Usage: `first_call [SOCKET]` (default: `$HMS_FFI_SOCKET`,
//! else the per-user default).
use hms_ffi::{Client, Code, Options};

fn main() -> hms_ffi::Result<()> {
    let mut options = Options::new().name("first-call");
    if let Some(socket) = std::env::args().nth(1) {
        options = options.socket_path(socket);
    }
    let client = Client::connect(&options)?;
    let cdf = client.bind("hms.cdf.debate", "^2.0")?;
    println!("bound {} {}", cdf.service_id(), cdf.version());

    let params = r#"{"policyId": "records.release", "maxRounds": 3,
                     "facts": [{"key": "encounter", "value": "emergency"},
                               {"key": "consent", "value": "no"},
                               {"key": "dataClass", "value": "sensitive"}]}"#;
    let verdict = cdf.call("evaluatePolicy", params)?;
    println!("{}", verdict);

    match cdf.call("evaluatePolicy", r#"{"policyId": "no-such-policy"}"#) {
        Err(e) if e.code() == Code::NotFound => {
            println!("{} from {}: details {:?}", e.code(), e.source(), e.details())
        }
        other => println!("unexpected: {:?}", other),
    }
    Ok(())
}
