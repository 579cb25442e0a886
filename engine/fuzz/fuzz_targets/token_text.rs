//! Token bytes to client text: UTF-8 reassembly across tokens and stop sequences across tokens.
//! Input: stop sequences (a request's `stop`), then token byte chunks, all separated by 0xff
//! (never a UTF-8 byte); the first chunk holds the stops separated by 0xfe.
//! Properties: the reassembled text is exactly `String::from_utf8_lossy` of all bytes; what is
//! sent is a prefix of it that contains no stop sequence; without a stop, everything is sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardbox_engine::text::{StopScanner, Utf8Assembler};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xff);
    let stops: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .split(|&b| b == 0xfe)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let tokens: Vec<&[u8]> = parts.collect();

    let mut utf8 = Utf8Assembler::default();
    let mut scanner = StopScanner::new(stops.clone());
    let mut text = String::new();
    let mut sent = String::new();
    let mut stopped = false;
    for t in &tokens {
        let piece = utf8.push(t);
        text.push_str(&piece);
        if !stopped {
            let scan = scanner.push(&piece);
            sent.push_str(&scan.emit);
            stopped = scan.stopped;
        }
    }
    let tail = utf8.finish();
    text.push_str(&tail);
    if !stopped {
        let scan = scanner.push(&tail);
        sent.push_str(&scan.emit);
        stopped = scan.stopped;
    }
    if !stopped {
        sent.push_str(&scanner.finish());
    }

    let all: Vec<u8> = tokens.concat();
    assert_eq!(text, String::from_utf8_lossy(&all), "reassembly differs from a lossy decode of the same bytes");
    assert!(text.starts_with(&sent), "sent text {sent:?} is not a prefix of {text:?}");
    for s in stops.iter().filter(|s| !s.is_empty()) {
        assert!(!sent.contains(s.as_str()), "stop {s:?} leaked in {sent:?}");
    }
    if stopped {
        assert!(stops.iter().any(|s| !s.is_empty() && text.contains(s.as_str())), "stopped without a stop sequence");
    } else {
        assert_eq!(sent, text, "no stop sequence, yet text was lost");
    }
});
