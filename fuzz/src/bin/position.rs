//! The log readers' restart: a saved position (garbled, or crafted to point into the file and then damaged) and a
//! log file, both from the input; the follower (`entourage::follow`) runs to the end of the file. It must never
//! panic, must stream a contiguous tail of the file byte for byte (repeat rather than lose: from its start, or from
//! the saved offset when the position really is that file's), and a position it renders must parse back to itself.
//!
//! Input: `[mode, cut, at, ...rest]`; `rest[..cut]` is the file, `rest[cut..]` the position text (mode bit 0 clear)
//! or the damage to a real position (bit 0 set: `at` picks the offset; bit 1 flips a byte of `before`; bit 2 shrinks
//! the file after saving); bit 3 asks for giving back disk space.
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use entourage::follow::{self, position::Position, FollowArgs, Sink};

struct Recorded(Vec<u8>);

impl Sink for Recorded {
    fn consume(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(data);
        Ok(data.len())
    }
    fn finish(&mut self, rest: &[u8]) -> io::Result<()> {
        self.0.extend_from_slice(rest);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("entourage-fuzz-position-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let log = dir.join("app.log");
    let saved = dir.join("reader.pos");
    afl::fuzz!(|data: &[u8]| {
        let [mode, cut, at, rest @ ..] = data else {
            return;
        };
        let cut = usize::from(*cut).min(rest.len());
        let (content, tail) = rest.split_at(cut);
        fs::write(&log, content).unwrap();
        let name = log.display().to_string();
        let mut expected_start = None;
        if mode & 1 == 0 {
            fs::write(&saved, tail).unwrap();
            if let Ok(p) = Position::parse(tail) {
                assert_eq!(Position::parse(&p.render()), Ok(p), "render then parse is the identity");
            }
        } else {
            let meta = fs::metadata(&log).unwrap();
            let offset = usize::from(*at).min(content.len());
            let mut p = Position::new(&name, meta.dev(), meta.ino(), offset as u64, &content[..offset]);
            let mut damaged = false;
            if mode & 2 != 0 && !p.before.is_empty() {
                let flipped = if p.before.starts_with('0') { "1" } else { "0" };
                p.before.replace_range(0..1, flipped);
                damaged = true;
            }
            assert_eq!(Position::parse(&p.render()), Ok(p.clone()));
            fs::write(&saved, p.render()).unwrap();
            if mode & 4 != 0 && offset > 0 {
                fs::write(&log, &content[..offset - 1]).unwrap();
                damaged = true;
            }
            if !damaged {
                expected_start = Some(offset);
            }
        }
        let args = FollowArgs {
            file: log.clone(),
            position: Some(saved.clone()),
            create: false,
            give_back: mode & 8 != 0,
            backlog_warn_bytes: None,
            drain_period: Duration::ZERO,
            exit_at_eof: true,
            poll_interval_ms: 10,
        };
        let now = fs::read(&log).unwrap();
        let mut out = Recorded(Vec::new());
        follow::follow(&args, &AtomicBool::new(false), &mut out).unwrap();
        let start = now.len() - out.0.len();
        assert_eq!(out.0, now[start..], "a contiguous tail of the file, byte for byte");
        match expected_start {
            Some(offset) => assert_eq!(start, offset, "the saved offset of this very file is resumed"),
            None => assert_eq!(start, 0, "anything else starts the file again"),
        }
        let _ = fs::remove_file(&saved);
    });
}
