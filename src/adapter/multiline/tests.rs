//! Unit tests of the grouper. The traces are copies of what the runtimes print; tests/adapt_multiline.rs runs
//! the runtimes themselves.

use super::presets::*;
use super::*;
use proptest::prelude::*;

const QUIET: Duration = Duration::from_secs(1);

/// Groups `text`'s lines, all read at one instant, and returns each record's text and cut flag.
fn group(preset: &str, text: &str) -> Vec<String> {
    group_with(preset, text, usize::MAX)
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

fn group_with(preset: &str, text: &str, max_bytes: usize) -> Vec<(String, bool)> {
    let mut g = Grouper::new(&preset.parse().unwrap(), QUIET, max_bytes);
    let mut out = Vec::new();
    let mut emit = |r: Record<'_>| {
        assert_eq!(r.continuation().is_some(), r.text.len() > r.first_len);
        out.push((String::from_utf8(r.text.to_vec()).unwrap(), r.cut));
    };
    let now = Instant::now();
    for line in text.split('\n') {
        g.push(line.as_bytes(), line.len() + 1, now, &mut emit);
    }
    g.finish(&mut emit);
    out
}

const JAVA: &str = "2024-05-01 12:00:00.001 INFO  [main] c.e.Shop - started
2024-05-01 12:00:01.002 ERROR [pool-1-thread-2] c.e.Shop - checkout failed
java.lang.IllegalStateException: cart 7 is closed
\tat com.example.Shop.checkout(Shop.java:42)
\tat com.example.Shop.lambda$main$0(Shop.java:17)
\tat java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1136)
\tSuppressed: java.io.IOException: rollback failed
\t\tat com.example.Shop.rollback(Shop.java:60)
\t\t... 3 more
Caused by: java.io.UncheckedIOException: disk full
\tat com.example.Store.write(Store.java:9)
\t... 4 more
Caused by: java.io.IOException
\t... 5 more
2024-05-01 12:00:01.003 INFO  [main] c.e.Shop - next";

#[test]
fn java_exception_with_causes_and_suppressed_is_one_record_with_its_message_line() {
    let records = group("java", JAVA);
    assert_eq!(records.len(), 3, "{records:#?}");
    assert!(records[1].starts_with("2024-05-01 12:00:01.002 ERROR"));
    assert!(records[1].ends_with("Caused by: java.io.IOException\n\t... 5 more"));
    assert_eq!(records[2], "2024-05-01 12:00:01.003 INFO  [main] c.e.Shop - next");
}

#[test]
fn java_uncaught_exception_starts_its_own_record() {
    let text = "12:00 INFO ok\nException in thread \"main\" java.lang.RuntimeException: boom\n\tat A.main(A.java:3)";
    assert_eq!(
        group("java", text),
        [
            "12:00 INFO ok",
            "Exception in thread \"main\" java.lang.RuntimeException: boom\n\tat A.main(A.java:3)"
        ]
    );
}

#[test]
fn java_header_needs_a_package_and_a_class_name() {
    for header in [
        "java.lang.Error",
        "com.example.App$Failure: x",
        "a.B:",
        "x.y.Z: with: colons",
    ] {
        assert!(is_java_exception_header(header.as_bytes()), "{header}");
    }
    for line in [
        "INFO started",
        "Error: x",
        "java.lang.error: x",
        "10.0.0.1 GET",
        "a.B:x",
        "see a.B here",
    ] {
        assert!(!is_java_exception_header(line.as_bytes()), "{line}");
    }
}

const PYTHON: &str = "2024-05-01 12:00:00,001 INFO shop: started
2024-05-01 12:00:01,002 ERROR shop: checkout failed
Traceback (most recent call last):
  File \"/app/shop.py\", line 12, in checkout
    cart[\"items\"]
KeyError: 'items'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File \"/app/shop.py\", line 14, in checkout
    raise ValueError(\"no items\") from None
ValueError: no items

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File \"/app/shop.py\", line 20, in main
    checkout()
RuntimeError: checkout failed

2024-05-01 12:00:01,003 INFO shop: next";

#[test]
fn python_chained_tracebacks_are_one_record_and_the_blank_line_after_stays_alone() {
    let records = group("python", PYTHON);
    assert_eq!(records.len(), 4, "{records:#?}");
    assert!(records[1].starts_with("2024-05-01 12:00:01,002 ERROR shop: checkout failed\nTraceback"));
    assert!(records[1].ends_with("RuntimeError: checkout failed"));
    assert_eq!(records[1].matches("Traceback (most recent call last):").count(), 3);
    assert_eq!(records[2], "");
    assert_eq!(records[3], "2024-05-01 12:00:01,003 INFO shop: next");
}

#[test]
fn python_exception_group_ends_at_the_first_line_that_is_not_indented() {
    let text = "ERROR failed\n  + Exception Group Traceback (most recent call last):\n  |   File \"x.py\", line 1\n  \
                | ExceptionGroup: two (2 sub-exceptions)\n  +-+---------------- 1 ----------------\n    \
                | ValueError: a\n    +------------------------------------\nINFO next";
    let records = group("python", text);
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[1], "INFO next");
}

const GO: &str = "2024/05/01 12:00:00 started
2024/05/01 12:00:01 worker 3 recovered: boom
goroutine 7 [running]:
runtime/debug.Stack()
\t/usr/lib/go-1.19/src/runtime/debug/stack.go:24 +0x65
main.worker.func1()
\t/app/main.go:15 +0x45
panic({0x4a5b20, 0x4e2b10})
\t/usr/lib/go-1.19/src/runtime/panic.go:884 +0x212
main.worker(0x3)
\t/app/main.go:20 +0x5d
created by main.main
\t/app/main.go:30 +0x4c
2024/05/01 12:00:02 shutting down
panic: runtime error: invalid memory address or nil pointer dereference
[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x45a1b2]

goroutine 1 [running]:
main.main()
\t/app/main.go:40 +0x12

goroutine 9 [chan receive]:
main.(*Pool).wait(0xc000010000)
\t/app/pool.go:8 +0x1d
created by main.main in goroutine 1
\t/app/main.go:33 +0x88";

#[test]
fn go_recovered_stack_joins_its_message_and_a_panic_takes_every_goroutine() {
    let records = group("go", GO);
    assert_eq!(records.len(), 4, "{records:#?}");
    assert!(records[1].starts_with("2024/05/01 12:00:01 worker 3 recovered: boom\ngoroutine 7 [running]:"));
    assert!(records[1].ends_with("\t/app/main.go:30 +0x4c"));
    assert_eq!(records[2], "2024/05/01 12:00:02 shutting down");
    assert!(records[3].starts_with("panic: runtime error"));
    assert!(records[3].ends_with("created by main.main in goroutine 1\n\t/app/main.go:33 +0x88"));
}

#[test]
fn go_fatal_error_starts_a_record_and_a_log_line_ends_it() {
    let text = "fatal error: concurrent map writes\n\ngoroutine 5 [running]:\nmain.write()\n\t/a.go:3\n2024/05/01 ok";
    let records = group("go", text);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1], "2024/05/01 ok");
}

#[test]
fn go_stack_overflow_with_its_runtime_lines_and_runtime_stack_is_one_record() {
    let text = "2024/05/01 ok\nruntime: goroutine stack exceeds 1000000000-byte limit\nruntime: sp=0xc020160398 \
                stack=[0xc020160000, 0xc040160000]\nfatal error: stack overflow\n\nruntime stack:\n\
                runtime.throw({0x4a3c3a?, 0x5ae4c0?})\n\t/usr/lib/go/src/runtime/panic.go:1047 +0x5d\n\n\
                goroutine 1 [running]:\nmain.f(0x0)\n\t/a.go:3\n2024/05/01 next";
    let records = group("go", text);
    assert_eq!(records.len(), 3, "{records:#?}");
    assert!(records[1].starts_with("runtime: goroutine stack exceeds"));
    assert!(records[1].ends_with("\t/a.go:3"));
}

#[test]
fn java_logback_root_cause_first_wrapped_by_continues() {
    let text = "ERROR x\njava.io.IOException: disk\n\tat a.B.c(B.java:1)\nWrapped by: java.lang.IllegalStateException: y\n\tat d.E.f(E.java:2)";
    assert_eq!(group("java", text).len(), 1);
}

#[test]
fn regex_first_line_pattern_starts_records_and_everything_else_continues() {
    let text = "[12:00] a\nmore\n  more\n[12:01] b\n[12:02] c\ntail";
    assert_eq!(
        group(r"regex:^\[\d\d:\d\d\]", text),
        ["[12:00] a\nmore\n  more", "[12:01] b", "[12:02] c\ntail"]
    );
}

#[test]
fn continuation_at_the_start_of_the_file_starts_a_record() {
    assert_eq!(
        group("java", "\tat A.b(A.java:1)\nINFO x"),
        ["\tat A.b(A.java:1)", "INFO x"]
    );
}

#[test]
fn record_at_the_size_cap_is_cut_marked_and_the_rest_starts_the_next_record() {
    let text = "ERROR x\n\tat a\n\tat b\n\tat c";
    let records = group_with("java", text, 14);
    assert_eq!(
        records,
        [
            ("ERROR x\n\tat a".to_string(), true),
            ("\tat b\n\tat c".to_string(), false)
        ]
    );
}

#[test]
fn open_record_is_emitted_after_the_quiet_period_and_not_before() {
    let mut g = Grouper::new(&Multiline::Java, Duration::from_millis(500), 1 << 20);
    let mut out: Vec<String> = Vec::new();
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    {
        let mut emit = |r: Record<'_>| out.push(String::from_utf8_lossy(r.text).into_owned());
        g.push(b"ERROR failed", 13, t0, &mut emit);
        g.push(b"java.lang.Error: x", 19, ms(100), &mut emit);
        g.push(b"", 1, ms(200), &mut emit);
        assert_eq!(g.held_input(), 33);
        g.poll(ms(699), &mut emit);
    }
    assert!(out.is_empty(), "emitted before the quiet period: {out:?}");
    {
        let mut emit = |r: Record<'_>| out.push(String::from_utf8_lossy(r.text).into_owned());
        g.poll(ms(700), &mut emit);
    }
    assert_eq!(out, ["ERROR failed\njava.lang.Error: x", ""]);
    assert_eq!(g.held_input(), 0);
    // A continuation after the flush starts a record of its own: nothing is appended to what was sent.
    let mut emit = |r: Record<'_>| out.push(String::from_utf8_lossy(r.text).into_owned());
    g.push(b"\tat A.b(A.java:1)", 18, ms(800), &mut emit);
    g.finish(&mut emit);
    assert_eq!(out.last().unwrap(), "\tat A.b(A.java:1)");
}

/// Pushes `lines` one at a time (all read at `now`) and returns the records each push completed.
fn push_each(g: &mut Grouper, lines: &[&str], now: Instant) -> Vec<Vec<String>> {
    lines
        .iter()
        .map(|line| {
            let mut out = Vec::new();
            g.push(line.as_bytes(), line.len() + 1, now, &mut |r: Record<'_>| {
                out.push(String::from_utf8_lossy(r.text).into_owned())
            });
            out
        })
        .collect()
}

const JAVA_MESSAGES: &str = "2024-05-01 12:00:00.123 ERROR [main] c.e.App - request failed
java.lang.IllegalStateException: first line of the message
second line of the message
third line
\tat com.example.App.run(App.java:10)
\tat com.example.App.main(App.java:3)
Caused by: java.io.IOException: disk
said twice

and after a blank line
\t... 2 more
2024-05-01 12:00:00.124 INFO  [main] c.e.App - next";

#[test]
fn java_message_over_several_lines_stays_with_its_trace_and_its_causes_message_too() {
    let records = group("java", JAVA_MESSAGES);
    let (trace, next) = JAVA_MESSAGES.rsplit_once('\n').unwrap();
    assert_eq!(records, [trace, next]);
}

#[test]
fn java_suppressed_exception_and_indented_message_lines_stay_in_the_record() {
    let text = "ERROR x\njava.lang.IllegalArgumentException: bad body {\n  \"a\": 1\n}\n\tat a.B.c(B.java:1)\n\
                \tSuppressed: java.io.IOException: close\nfailed twice\n\t\tat a.B.d(B.java:2)\nINFO next";
    let records = group("java", text);
    assert_eq!(records, [text.strip_suffix("\nINFO next").unwrap(), "INFO next"]);
}

#[test]
fn java_message_lines_without_frames_after_them_are_not_joined() {
    // Nothing confirms them: a message printed without its trace, or lines of another kind.
    let text = "ERROR x\njava.lang.IllegalStateException: first\nsecond\n2024-05-01 12:00:01 INFO next";
    assert_eq!(
        group("java", text),
        [
            "ERROR x\njava.lang.IllegalStateException: first",
            "second",
            "2024-05-01 12:00:01 INFO next"
        ]
    );
}

#[test]
fn java_exception_logged_without_a_trace_never_swallows_the_lines_after_it() {
    // `log.error("failed\n" + e)`: the header ends the record; the lines after it are held, then released as they
    // would be without tentative lines, even when a trace follows them.
    let lines = [
        "2024-05-01 12:00:00 ERROR failed",
        "java.lang.IllegalStateException: closed",
        "GET /a 200",
        "GET /b 200",
        "2024-05-01 12:00:01 ERROR again",
        "java.lang.IllegalStateException: still closed",
        "\tat a.B.c(B.java:1)",
    ];
    let mut g = Grouper::new(&Multiline::Java, QUIET, 1 << 20);
    let emitted = push_each(&mut g, &lines, Instant::now());
    let none: [&str; 0] = [];
    assert_eq!(emitted[2..4], [none, none], "held while the message may go on");
    assert_eq!(
        emitted[4],
        [
            "2024-05-01 12:00:00 ERROR failed\njava.lang.IllegalStateException: closed",
            "GET /a 200",
            "GET /b 200"
        ]
    );
    let mut rest = Vec::new();
    g.finish(&mut |r: Record<'_>| rest.push(String::from_utf8_lossy(r.text).into_owned()));
    assert_eq!(rest, [lines[4..].join("\n")]);

    // A header after held lines ends their run too: they are released, then read as before tentative lines.
    let text = "java.lang.Error: a\nplain\njava.lang.Error: b\n\tat a.B.c(B.java:1)";
    assert_eq!(
        group("java", text),
        ["java.lang.Error: a", "plain\njava.lang.Error: b\n\tat a.B.c(B.java:1)"]
    );
}

#[test]
fn tentative_lines_are_released_at_the_bound_and_read_again_as_records() {
    let mut lines = vec!["ERROR x".to_string(), "java.lang.Error: boom".to_string()];
    lines.extend((0..=MAX_TENTATIVE).map(|i| format!("line {i}")));
    lines.push("\tat a.B.c(B.java:1)".into());
    let records = group("java", &lines.join("\n"));
    assert_eq!(records.len(), 2 + MAX_TENTATIVE, "{records:#?}");
    assert_eq!(records[0], "ERROR x\njava.lang.Error: boom");
    assert_eq!(records[1], "line 0");
    assert_eq!(
        records.last().unwrap(),
        &format!("line {MAX_TENTATIVE}\n\tat a.B.c(B.java:1)")
    );

    // The size cap bounds them too: a line that would not fit is not held.
    let text = "java.lang.Error: a\nbbbbbbbbbb\ncccccccccc\n\tat x";
    assert_eq!(
        group_with("java", text, 30),
        [
            ("java.lang.Error: a".to_string(), false),
            ("bbbbbbbbbb".to_string(), false),
            ("cccccccccc\n\tat x".to_string(), false)
        ]
    );
}

#[test]
fn blank_lines_held_after_a_record_stay_within_the_size_cap() {
    let text = format!("ERROR x{}\n\tat a", "\n".repeat(6));
    let records = group_with("java", &text, 12);
    let texts: Vec<&str> = records.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, ["ERROR x", "", "", "", "", "", "", "\tat a"]);
    assert!(records.iter().all(|(_, cut)| !cut));
}

#[test]
fn quiet_period_releases_tentative_lines_as_records_of_their_own() {
    let mut g = Grouper::new(&Multiline::Java, Duration::from_millis(500), 1 << 20);
    let t0 = Instant::now();
    let emitted = push_each(&mut g, &["ERROR x", "java.lang.Error: a", "b", "c"], t0);
    assert!(emitted.iter().all(Vec::is_empty));
    // Held lines are held input: the follower keeps them.
    assert_eq!(g.held_input(), 8 + 19 + 2 + 2);
    let mut out = Vec::new();
    let mut emit = |r: Record<'_>| out.push(String::from_utf8_lossy(r.text).into_owned());
    g.poll(t0 + Duration::from_millis(499), &mut emit);
    g.poll(t0 + Duration::from_millis(500), &mut emit);
    assert_eq!(out, ["ERROR x\njava.lang.Error: a", "b", "c"]);
    assert_eq!(g.held_input(), 0);
}

const PY_LOGGED_MESSAGE: &str = "2024-05-01 12:00:01,002 ERROR shop: checkout failed
Traceback (most recent call last):
  File \"/app/shop.py\", line 12, in checkout
    raise ValueError(\"cart 7\\nhas no items\\n\\n  at all\")
ValueError: cart 7
has no items

  at all
2024-05-01 12:00:01,003 INFO shop: next";

#[test]
fn python_logged_final_exception_message_over_several_lines_joins_when_the_next_record_starts() {
    let records = group("python", PY_LOGGED_MESSAGE);
    let (trace, next) = PY_LOGGED_MESSAGE.rsplit_once('\n').unwrap();
    assert_eq!(records, [trace, next]);
}

#[test]
fn python_uncaught_final_exception_message_lines_are_records_of_their_own() {
    // The interpreter printed it to stderr: lines of another kind may follow it, and nothing says which.
    let text = "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nValueError: a\nb\n\
                2024-05-01 12:00:01,003 INFO next";
    assert_eq!(
        group("python", text),
        [
            "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nValueError: a",
            "b",
            "2024-05-01 12:00:01,003 INFO next"
        ]
    );
}

#[test]
fn python_chained_exception_message_over_several_lines_stays_in_the_record() {
    let trace = "Traceback (most recent call last):\n  File \"a.py\", line 3, in <module>\nKeyError: 'items'\n\
                 first\nsecond\n\nDuring handling of the above exception, another exception occurred:\n\n\
                 Traceback (most recent call last):\n  File \"a.py\", line 5, in <module>\nValueError: cart 7\n\
                 has no items\n\nThe above exception was the direct cause of the following exception:\n\n\
                 Traceback (most recent call last):\n  File \"a.py\", line 7, in <module>\nRuntimeError: done";
    assert_eq!(group("python", &format!("{trace}\nINFO next")), [trace, "INFO next"]);
    let logged = format!("ERROR failed\n{trace}\nmore of the message\nINFO next");
    let (record, next) = logged.rsplit_once('\n').unwrap();
    assert_eq!(group("python", &logged), [record, next]);
}

#[test]
fn python_traceback_after_held_lines_is_read_as_without_them() {
    let text = "ERROR a\nTraceback (most recent call last):\nValueError: x\nprinted\n\
                Traceback (most recent call last):\nKeyError: y";
    assert_eq!(
        group("python", text),
        [
            "ERROR a\nTraceback (most recent call last):\nValueError: x",
            "printed\nTraceback (most recent call last):\nKeyError: y"
        ]
    );
}

#[test]
fn go_panic_value_over_several_lines_stays_with_its_goroutine_dump() {
    let panic = "panic: first line\nsecond line\n\ngoroutine 1 [running]:\nmain.main()\n\t/a.go:3 +0x27";
    let text = format!("2024/05/01 12:00:00 ok\n{panic}\n2024/05/01 12:00:05 restarted");
    assert_eq!(
        group("go", &text),
        ["2024/05/01 12:00:00 ok", panic, "2024/05/01 12:00:05 restarted"]
    );
    // Without a dump after it (GOTRACEBACK=none), the next log line releases what was held.
    let text = "panic: boom\nnot a dump\n2024/05/01 12:00:05 restarted";
    assert_eq!(
        group("go", text),
        ["panic: boom", "not a dump", "2024/05/01 12:00:05 restarted"]
    );
}

#[test]
fn record_start_looks_like_a_time_or_a_level_first() {
    for line in [
        "2024-05-01 12:00:00,001 INFO x",
        "12:00:00.123 [main] x",
        "[2024-05-01T12:00:00Z] x",
        "May  1 12:00:00 host app: x",
        "INFO:root:x",
        "[WARN] x",
        "ERROR",
        "Exception in thread \"main\" java.lang.Error",
    ] {
        assert!(looks_like_record_start(line.as_bytes()), "{line}");
    }
    for line in [
        "second line",
        "3 items",
        "INFORMATION x",
        "ERRORS: 2",
        "[SQL: SELECT 1]",
        "May I?",
    ] {
        assert!(!looks_like_record_start(line.as_bytes()), "{line}");
    }
}

fn presets() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("java"), Just("python"), Just("go"), Just(r"regex:^\d")]
}

/// Lines drawn from the shapes the presets look at, so that groups of every kind form.
fn trace_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"".to_vec()),
        Just(b"  ".to_vec()),
        Just(b"\tat a.B.c(B.java:1)".to_vec()),
        Just(b"Caused by: java.io.IOException: x".to_vec()),
        Just(b"java.lang.Error: y".to_vec()),
        Just(PY_TRACEBACK.to_vec()),
        Just(b"ValueError: z".to_vec()),
        Just(PY_CHAINS[0].to_vec()),
        Just(b"panic: boom".to_vec()),
        Just(b"goroutine 1 [running]:".to_vec()),
        Just(b"main.main()".to_vec()),
        Just(b"1 INFO ok".to_vec()),
        Just(b"2024-05-01 12:00:00 INFO ok".to_vec()),
        Just(b"second line of a message".to_vec()),
        Just(b"\t... 3 more".to_vec()),
        Just(PY_CHAINS[1].to_vec()),
        proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..20),
    ]
}

proptest! {
    #[test]
    fn grouping_never_drops_or_reorders_a_byte(
        preset in presets(),
        lines in proptest::collection::vec(trace_line(), 0..40),
        max_bytes in 1usize..200,
        polls in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let mut g = Grouper::new(&preset.parse().unwrap(), QUIET, max_bytes);
        let mut records: Vec<Vec<u8>> = Vec::new();
        let t0 = Instant::now();
        let mut pushed = 0;
        for (i, line) in lines.iter().enumerate() {
            let now = t0 + QUIET * (i as u32);
            let mut emit = |r: Record<'_>| records.push(r.text.to_vec());
            g.push(line, line.len() + 1, now, &mut emit);
            if polls[i] {
                g.poll(now + QUIET, &mut emit);
            }
            pushed += line.len() + 1;
            // What is held is exactly what was pushed and not emitted: the follower's position relies on it.
            let emitted: usize = records.iter().map(|r| r.len() + 1).sum();
            prop_assert_eq!(g.held_input(), pushed - emitted);
        }
        g.finish(&mut |r: Record<'_>| records.push(r.text.to_vec()));
        prop_assert_eq!(records.join(&b'\n'), lines.join(&b'\n'));
        prop_assert_eq!(records.len() <= lines.len(), true);
        // Over the size cap only as one line that is longer on its own.
        for r in &records {
            prop_assert!(r.len() <= max_bytes || !r.contains(&b'\n'), "{:?}", String::from_utf8_lossy(r));
        }
    }

    #[test]
    fn java_never_joins_a_line_that_starts_like_a_log_record(
        lines in proptest::collection::vec(trace_line(), 0..40),
        polls in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let mut g = Grouper::new(&Multiline::Java, QUIET, 1 << 20);
        let mut records: Vec<Vec<u8>> = Vec::new();
        let t0 = Instant::now();
        for (i, line) in lines.iter().enumerate() {
            let now = t0 + QUIET * (i as u32);
            let mut emit = |r: Record<'_>| records.push(r.text.to_vec());
            g.push(line, line.len() + 1, now, &mut emit);
            if polls[i] {
                g.poll(now + QUIET, &mut emit);
            }
        }
        g.finish(&mut |r: Record<'_>| records.push(r.text.to_vec()));
        for r in &records {
            for line in r.split(|&b| b == b'\n').skip(1) {
                prop_assert!(!looks_like_record_start(line), "{:?}", String::from_utf8_lossy(r));
            }
        }
    }
}
