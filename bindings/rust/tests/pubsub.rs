//! Publish/subscribe at the JSON level: `Tick` messages (tests/support/test.capnp) from a Rust
//! publisher to a Rust subscriber, over both client transports.

mod common;

use std::time::Duration;

use common::{field, test_schema, wait_until, Broker, TRANSPORTS};
use hms_ffi::{Client, Code};

#[test]
fn ticks_round_trip_in_order_over_both_transports() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let pub_client =
            Client::connect(&broker.options("rust-publisher", transport)).expect("connect");
        let sub_client =
            Client::connect(&broker.options("rust-subscriber", transport)).expect("connect");
        let publisher =
            pub_client.advertise("hms.test.ticks", test_schema(), "Tick", 16).expect("advertise");
        let mut sub =
            sub_client.subscribe("hms.test.ticks", Duration::from_secs(5)).expect("subscribe");
        assert!(
            wait_until(Duration::from_secs(10), || publisher.subscribers() == 1),
            "the publisher sees its subscriber ({:?})",
            transport
        );

        // Data is base64: [1], [1,2], [1,2,3].
        let payloads = ["AQ==", "AQI=", "AQID"];
        for (i, p) in payloads.iter().enumerate() {
            publisher
                .publish(&format!(r#"{{"seq": "{}", "payload": "{}"}}"#, i + 1, p))
                .expect("publish");
        }
        for (i, p) in payloads.iter().enumerate() {
            let (seq, msg) = sub.next(Duration::from_secs(10)).expect("next").expect("a message");
            assert_eq!(seq, i as u64 + 1);
            assert_eq!(field(&msg, "seq").as_u64(), Some(i as u64 + 1), "{}", msg);
            assert_eq!(field(&msg, "payload").as_str(), Some(*p), "{}", msg);
        }
        assert!(sub.next(Duration::from_millis(50)).expect("next").is_none(), "nothing more");

        let err = publisher.publish(r#"{"seq": "x"}"#).expect_err("does not fit Tick");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err);

        drop(publisher);
        let err = loop {
            match sub.next(Duration::from_secs(10)) {
                Ok(Some(m)) => panic!("nothing was published after the three: {:?}", m),
                Ok(None) => panic!("the publisher left and the subscription did not say so"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.code(), Code::Unavailable, "{}", err);
    }
}

#[test]
fn subscribe_to_a_topic_nobody_publishes_fails_after_the_wait() {
    let broker = Broker::start();
    let client = Client::connect(&broker.options("rust-subscriber", hms_ffi::Transport::Auto))
        .expect("connect");
    let start = std::time::Instant::now();
    let err =
        client.subscribe("hms.test.nobody", Duration::from_millis(200)).expect_err("no publisher");
    assert_ne!(err.code(), Code::Ok);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}
