//! The JSON sink with multiline grouping, played the way the follower drives it: what grouping holds is never
//! reported done (the saved position stays before it), and handing it over again lets the quiet period end it.

use std::time::Duration;

use super::records::{RecordOptions, Records};
use super::sink::JsonSink;
use super::{Format, LineContext};
use crate::core::logformat::Multiline;
use crate::follow::Sink;

fn sink(quiet: Duration) -> JsonSink<Vec<u8>> {
    let options = RecordOptions {
        multiline: Some((Multiline::Java, quiet, 1 << 20)),
        ..RecordOptions::default()
    };
    JsonSink::new(Format::Plain, options, LineContext::new("f", &[]), Vec::new())
}

fn messages(s: &mut JsonSink<Vec<u8>>) -> Vec<String> {
    s.flush().unwrap();
    String::from_utf8(s.take_output())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Plays the follower: hands over what is held back plus `data`, keeps what is not done with.
fn feed(held: &mut Vec<u8>, s: &mut JsonSink<Vec<u8>>, data: &[u8]) -> usize {
    held.extend_from_slice(data);
    let done = s.consume(held).unwrap();
    held.drain(..done);
    done
}

#[test]
fn lines_held_by_grouping_are_not_done_until_their_record_is_written() {
    let (mut held, mut s) = (Vec::new(), sink(Duration::from_secs(60)));
    assert_eq!(
        feed(
            &mut held,
            &mut s,
            b"ERROR x\njava.lang.Error: y\n\tat a.B.c(B.java:1)\n"
        ),
        0
    );
    assert!(messages(&mut s).is_empty());
    let done = feed(&mut held, &mut s, b"INFO z\npart");
    assert_eq!(done, "ERROR x\njava.lang.Error: y\n\tat a.B.c(B.java:1)\n".len());
    assert_eq!(messages(&mut s), ["ERROR x\njava.lang.Error: y\n\tat a.B.c(B.java:1)"]);
    assert_eq!(held, b"INFO z\npart");
    // The file is left behind (rotation, exit): the open record and the partial line go out.
    s.finish(&held).unwrap();
    assert_eq!(messages(&mut s), ["INFO z", "part"]);
}

#[test]
fn held_lines_handed_over_again_after_the_quiet_period_are_written_and_done() {
    let (mut held, mut s) = (Vec::new(), sink(Duration::from_millis(20)));
    assert_eq!(feed(&mut held, &mut s, b"ERROR x\n\tat a.B.c(B.java:1)\n"), 0);
    assert_eq!(feed(&mut held, &mut s, b""), 0, "handed over again at once: still held");
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(feed(&mut held, &mut s, b""), 28);
    assert_eq!(messages(&mut s), ["ERROR x\n\tat a.B.c(B.java:1)"]);
    assert!(held.is_empty());
}

#[test]
fn any_split_of_the_input_gives_the_same_records() {
    let text = b"1 INFO a\n1 ERROR b\njava.lang.Error: c\n\tat d.E.f(E.java:1)\n\n1 INFO g\n\tmore";
    for cut in 0..text.len() {
        let (mut held, mut s) = (Vec::new(), sink(Duration::from_secs(60)));
        feed(&mut held, &mut s, &text[..cut]);
        feed(&mut held, &mut s, &text[cut..]);
        s.finish(&held).unwrap();
        assert_eq!(
            messages(&mut s),
            [
                "1 INFO a",
                "1 ERROR b\njava.lang.Error: c\n\tat d.E.f(E.java:1)",
                "",
                "1 INFO g\n\tmore"
            ],
            "cut at {cut}"
        );
    }
}

#[test]
fn records_without_options_pass_lines_straight_through() {
    let mut records = Records::new(Format::Plain, RecordOptions::default());
    assert_eq!(records.held_input(), 0);
    let mut out = Vec::new();
    records.line(
        b"\tat x",
        6,
        std::time::Instant::now(),
        &LineContext::new("f", &[]),
        &mut out,
    );
    assert_eq!(records.held_input(), 0);
    assert!(!out.is_empty());
}
