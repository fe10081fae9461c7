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

/// Tick { seq @0 :UInt64, payload @1 :Data } as one segment: root struct pointer (one data word,
/// one pointer), the struct, a byte-list pointer, the bytes.
fn encode_tick(seq: u64, payload: &[u8], words: &mut [u64]) -> usize {
    words[0] = (1u64 << 32) | (1u64 << 48); // struct pointer: offset 0, 1 data word, 1 pointer
    words[1] = seq;
    words[2] = 1 | (2u64 << 32) | ((payload.len() as u64) << 35); // byte list at offset 0
    let mut bytes = vec![0u8; (payload.len() + 7) / 8 * 8];
    bytes[..payload.len()].copy_from_slice(payload);
    for (i, chunk) in bytes.chunks(8).enumerate() {
        words[3 + i] = u64::from_le_bytes(chunk.try_into().unwrap());
    }
    (3 + bytes.len() / 8) * 8
}

#[test]
fn raw_messages_are_written_and_read_in_place() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let pub_client =
            Client::connect(&broker.options("rust-publisher", transport)).expect("connect");
        let sub_client =
            Client::connect(&broker.options("rust-subscriber", transport)).expect("connect");
        let mut publisher = pub_client
            .advertise("hms.test.rawticks", test_schema(), "Tick", 16)
            .expect("advertise");
        let mut raw =
            sub_client.subscribe("hms.test.rawticks", Duration::from_secs(5)).expect("subscribe");
        let mut json =
            sub_client.subscribe("hms.test.rawticks", Duration::from_secs(5)).expect("subscribe");
        assert!(wait_until(Duration::from_secs(10), || publisher.subscribers() == 2));

        for seq in 1..=3u64 {
            let mut loan = publisher.loan_raw().expect("loan");
            let size = encode_tick(seq * 10, &[1, 2, 3], loan.words_mut());
            loan.publish(size).expect("publish");
        }
        // A loan dropped unpublished publishes nothing.
        drop(publisher.loan_raw().expect("loan"));
        let err = publisher.loan_raw().expect("loan").publish(12).expect_err("not whole words");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err);

        for seq in 1..=3u64 {
            let msg = raw.next_raw(Duration::from_secs(10)).expect("next").expect("a message");
            assert_eq!(msg.sequence, seq);
            let word1 = u64::from_le_bytes(msg.data()[8..16].try_into().unwrap());
            assert_eq!(word1, seq * 10, "the seq field, read in place");
            let (_, j) = json.next(Duration::from_secs(10)).expect("next").expect("a message");
            assert_eq!(field(&j, "seq").as_u64(), Some(seq * 10), "{}", j);
            assert_eq!(field(&j, "payload").as_str(), Some("AQID"), "{}", j);
        }
        assert!(raw.next_raw(Duration::from_millis(50)).expect("next").is_none());
    }
}
