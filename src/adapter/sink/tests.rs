//! Unit tests of the JSON sink: alone, and with multiline grouping played the way the follower drives it: what grouping holds is never
//! reported done (the saved position stays before it), and handing it over again lets the quiet period end it.

use std::time::Duration;

use super::*;
use crate::adapter::records::{RecordOptions, Records};
use crate::adapter::{Format, LineContext};
use crate::core::logformat::Multiline;
use crate::follow::Sink;

fn sink(quiet: Duration) -> JsonSink<Vec<u8>> {
    let options = RecordOptions {
        multiline: Some((Multiline::Java, quiet, 1 << 20)),
        ..RecordOptions::default()
    };
    JsonSink::new(Format::Plain, options, LineContext::new("f", &[]), Vec::new())
}

/// The `message` of every record written since the last call .
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
    // One object, the line as its message: exactly what the format alone writes for it (the read time aside).
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    assert!(text.ends_with('\n'), "{text:?}");
    let mut record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["message"], "\tat x");
    assert_eq!(record["file"], "f");
    let mut alone = Vec::new();
    crate::adapter::render_line(&Format::Plain, b"\tat x", &LineContext::new("f", &[]), &mut alone);
    let mut alone: serde_json::Value = serde_json::from_slice(&alone).unwrap();
    for object in [&mut record, &mut alone] {
        assert!(object.as_object_mut().unwrap().remove("time").is_some(), "{object}");
    }
    assert_eq!(record, alone);
}

proptest::proptest! {
    /// Whatever the chunks the follower hands over, and whenever it hands held bytes over again, the records hold
    /// every line once, in order; and what is reported done is exactly what was written.
    #[test]
    fn any_chunking_and_any_quiet_flush_keep_every_line_once_in_order(
        lines in proptest::collection::vec(
            proptest::sample::select(vec![
                "", "1 INFO a", "1 ERROR b", "java.lang.Error: c", "\tat d.E.f(E.java:1)", "Caused by: x.Y: z",
                "\t... 3 more", "plain", "  indented",
            ]),
            0..30,
        ),
        cuts in proptest::collection::vec(0usize..400, 0..8),
        pauses in proptest::collection::vec(proptest::bool::ANY, 8),
    ) {
        let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        let mut cuts = cuts.into_iter().map(|c| c.min(text.len())).collect::<Vec<_>>();
        cuts.push(text.len());
        cuts.sort_unstable();
        let (mut held, mut s) = (Vec::new(), sink(Duration::from_millis(1)));
        let (mut at, mut done) = (0, 0);
        let mut all: Vec<String> = Vec::new();
        for (i, cut) in cuts.into_iter().enumerate() {
            done += feed(&mut held, &mut s, &text.as_bytes()[at..cut]);
            at = cut;
            if pauses[i % pauses.len()] {
                std::thread::sleep(Duration::from_millis(2));
                done += feed(&mut held, &mut s, b"");
            }
            all.extend(messages(&mut s));
            // Done is exactly what reached the output: the saved position never passes a held line.
            proptest::prop_assert_eq!(all.iter().map(|m| m.len() + 1).sum::<usize>(), done);
        }
        s.finish(&held).unwrap();
        all.extend(messages(&mut s));
        let joined = all.iter().map(|m| format!("{m}\n")).collect::<String>();
        proptest::prop_assert_eq!(joined, text);
    }
}

// The sink alone, without grouping.

fn plain() -> JsonSink<Vec<u8>> {
    JsonSink::new(
        Format::Plain,
        RecordOptions::default(),
        LineContext::new("f", &[]),
        Vec::new(),
    )
}

#[test]
fn partial_line_is_held_until_its_newline_arrives() {
    let (mut held, mut s) = (Vec::new(), plain());
    feed(&mut held, &mut s, b"one\ntw");
    assert_eq!(messages(&mut s), ["one"]);
    feed(&mut held, &mut s, b"o\nthree");
    assert_eq!(messages(&mut s), ["two"]);
    s.finish(&held).unwrap();
    assert_eq!(messages(&mut s), ["three"]);
}

#[test]
fn long_line_is_emitted_in_pieces_of_at_most_max_line_bytes() {
    let (mut held, mut s) = (Vec::new(), plain());
    let chunk = vec![b'x'; MAX_LINE / 2];
    for _ in 0..6 {
        feed(&mut held, &mut s, &chunk);
    }
    feed(&mut held, &mut s, b"\n");
    let got = messages(&mut s);
    assert_eq!(
        got.iter().map(String::len).collect::<Vec<_>>(),
        [MAX_LINE, MAX_LINE, MAX_LINE]
    );
}

#[test]
fn long_line_arriving_with_its_newline_is_split_too() {
    let (mut held, mut s) = (Vec::new(), plain());
    let mut data = vec![b'y'; MAX_LINE + 10];
    data.extend_from_slice(b"\nz\n");
    feed(&mut held, &mut s, &data);
    let got = messages(&mut s);
    assert_eq!(got.iter().map(String::len).collect::<Vec<_>>(), [MAX_LINE, 10, 1]);
}

#[test]
fn any_split_of_the_input_gives_the_same_lines() {
    let text = b"alpha\nbeta\n\ngamma delta\nepsilon";
    for cut in 0..text.len() {
        let (mut held, mut s) = (Vec::new(), plain());
        feed(&mut held, &mut s, &text[..cut]);
        feed(&mut held, &mut s, &text[cut..]);
        s.finish(&held).unwrap();
        assert_eq!(
            messages(&mut s),
            ["alpha", "beta", "", "gamma delta", "epsilon"],
            "cut at {cut}"
        );
    }
}

#[test]
fn pieces_are_cut_between_utf8_characters() {
    let mut data = vec![b'a'; MAX_LINE - 1];
    data.extend_from_slice("é".as_bytes());
    assert_eq!(utf8_cut(&data, MAX_LINE), MAX_LINE - 1);
    assert_eq!(utf8_cut(&[b'a'; 10], 4), 4);
}
