//! The follower, in process, against a model of a log file's life (as Vector tests its file watcher): random
//! sequences of what apps and logrotate do to the followed path — the app writes, the file is renamed away
//! (logrotate's `create`), the app reopens its path, the file is truncated in place (`copytruncate`) or deleted
//! — and the reader restarting (stopped cleanly, then started again at its next round from its saved position;
//! `kill -9`, which may repeat up to a second of lines, is the process tests' part) — applied
//! to a real file in a temporary directory, with the follower driven one round at a time between them. The model
//! knows every line written and to which file; after the sequence the follower's output is checked against it:
//! - every line comes out at most once, and in the order written (line numbers only grow);
//! - every line comes out, except in the windows a polling tailer cannot see: lines written to a file and then
//!   truncated away before the follower's next round (logrotate documents this race for `copytruncate`), the
//!   lines of a file that was created and renamed or deleted away between two rounds, never at the path when the
//!   follower looked, and, across a restart, the lines written after the saved position to a file that was
//!   deleted (or rotated out of the directory) while the reader was down.
//!
//! The process tests (`tests/follow_readers.rs`) run the real binary with real timing; these run the state
//! machine through thousands of interleavings in a second.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::follow::monitor::Progress;

/// What happens to the followed path between two looks, or a look.
#[derive(Debug, Clone)]
enum Op {
    /// The app appends this many whole lines to the file it holds open (opening the path first if it holds none).
    Write(u8),
    /// logrotate renames the path to `<path>.1` (replacing the previous `.1`); the app still writes to it.
    Rotate,
    /// The app reopens its path (after a rotation or deletion, creating it).
    Reopen,
    /// `copytruncate`: the file at the path is emptied in place; the app's `O_APPEND` writes go on from 0.
    Truncate,
    /// The path is unlinked; the app, and the follower, keep their descriptors.
    Delete,
    /// The follower takes a round (started again first, from its saved position, if it was stopped).
    Poll,
    /// The reader is stopped (SIGTERM: what it read is saved); it starts again at the next `Poll`.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..12).prop_map(Op::Write),
        1 => Just(Op::Rotate),
        1 => Just(Op::Reopen),
        1 => Just(Op::Truncate),
        1 => Just(Op::Delete),
        4 => Just(Op::Poll),
        1 => Just(Op::Restart),
    ]
}

/// The sink: collects whole lines (and what `finish` hands over, which these whole-line writes never leave).
#[derive(Default)]
struct Collect {
    lines: Vec<Vec<u8>>,
}

impl Sink for Collect {
    fn consume(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(last) = data.iter().rposition(|b| *b == b'\n') else {
            return Ok(0);
        };
        self.lines
            .extend(data[..last].split(|b| *b == b'\n').map(<[u8]>::to_vec));
        Ok(last + 1)
    }

    fn finish(&mut self, rest: &[u8]) -> io::Result<()> {
        if !rest.is_empty() {
            self.lines.push(rest.to_vec());
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The model: every file the path has named, by index, with the numbers of the lines written to it.
struct World {
    dir: tempfile::TempDir,
    path: PathBuf,
    /// The app's descriptor (`O_APPEND`) and the file it names.
    writer: Option<(File, usize)>,
    /// The file at the path now, if any, and the one renamed to `<path>.1`.
    at_path: Option<usize>,
    rotated: Option<usize>,
    files: Vec<Vec<u64>>,
    /// Each file's inode, to tell which one the follower reads.
    inodes: Vec<u64>,
    /// Files the follower could have seen: at the path when it looked.
    seen: BTreeSet<usize>,
    /// Lines a truncation took before the follower could read them.
    excused: BTreeSet<u64>,
    /// Files the reader was in when it stopped and could not find again when it started: gone from the
    /// directory. What it had not read of them (then or since: the app may still be writing) is lost.
    unreachable: BTreeSet<usize>,
    next: u64,
}

/// A fixed-width numbered line: any 64 bytes of two different stretches differ, as real log lines do.
fn line(n: u64) -> Vec<u8> {
    format!("line {n:08} {}\n", "x".repeat((n % 7) as usize * 9)).into_bytes()
}

fn number(line: &[u8]) -> u64 {
    std::str::from_utf8(&line[5..13]).unwrap().parse().unwrap()
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        World {
            dir,
            path,
            writer: None,
            at_path: None,
            rotated: None,
            files: Vec::new(),
            inodes: Vec::new(),
            seen: BTreeSet::new(),
            excused: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            next: 0,
        }
    }

    fn reopen(&mut self) {
        let file = OpenOptions::new().create(true).append(true).open(&self.path).unwrap();
        let ino = file.metadata().unwrap().ino();
        let index = *self.at_path.get_or_insert_with(|| {
            self.files.push(Vec::new());
            self.inodes.push(ino);
            self.files.len() - 1
        });
        self.writer = Some((file, index));
    }

    /// Applies `op` to the file system and the model; `Poll` is the caller's.
    fn apply(&mut self, op: &Op, output: &[Vec<u8>]) {
        match op {
            Op::Write(count) => {
                if self.writer.is_none() {
                    self.reopen();
                }
                let (file, index) = self.writer.as_mut().unwrap();
                let mut data = Vec::new();
                for _ in 0..*count {
                    data.extend(line(self.next));
                    self.files[*index].push(self.next);
                    self.next += 1;
                }
                file.write_all(&data).unwrap();
            }
            Op::Rotate => {
                if let Some(index) = self.at_path.take() {
                    fs::rename(&self.path, self.dir.path().join("app.log.1")).unwrap();
                    self.rotated = Some(index);
                }
            }
            Op::Reopen => self.reopen(),
            Op::Truncate => {
                if let Some(index) = self.at_path {
                    OpenOptions::new()
                        .write(true)
                        .open(&self.path)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                    let read: BTreeSet<u64> = output.iter().map(|l| number(l)).collect();
                    self.excused
                        .extend(self.files[index].drain(..).filter(|n| !read.contains(n)));
                }
            }
            Op::Delete => {
                if self.at_path.take().is_some() {
                    // Only the path goes; `<path>.1` stays.
                    fs::remove_file(&self.path).unwrap();
                }
            }
            Op::Poll | Op::Restart => {}
        }
    }

    /// The reader starts again having stopped in file `stopped_in`: if that file is no longer in the directory,
    /// what was written to it after the saved position is lost.
    fn restarted(&mut self, stopped_in: Option<usize>) {
        let Some(index) = stopped_in else { return };
        if self.at_path != Some(index) && self.rotated != Some(index) {
            self.unreachable.insert(index);
        }
    }

    /// The lines the follower must have streamed: all, less the two windows.
    fn owed(&self) -> Vec<u64> {
        let mut owed: Vec<u64> = (0..self.files.len())
            .filter(|i| self.seen.contains(i) && !self.unreachable.contains(i))
            .flat_map(|i| self.files[i].iter().copied())
            .filter(|n| !self.excused.contains(n))
            .collect();
        owed.sort();
        owed
    }
}

fn args(path: PathBuf, position: PathBuf) -> FollowArgs {
    FollowArgs {
        file: path,
        position: Some(position),
        create: false,
        give_back: false,
        backlog_warn_bytes: None,
        drain_period: Duration::ZERO,
        exit_at_eof: false,
        poll_interval_ms: 10,
    }
}

/// One round, and the rounds it asks for at once (a file opened or replaced).
fn poll<S: Sink>(follower: &mut Follower<'_, S>, current: &mut Option<Reading>) {
    while let Round::Again = follower.round(current).unwrap() {}
}

/// Runs `ops`, then two last rounds, and returns the model and the line numbers streamed. The reader saves its
/// position (a keeper, as `--position` starts one) and starts at the first `Poll`; a `Restart` stops it, and the
/// operations up to the next `Poll` happen while it is down.
fn play(ops: &[Op]) -> (World, Vec<u64>) {
    let mut world = World::new();
    let state = tempfile::tempdir().unwrap();
    let args = args(world.path.clone(), state.path().join("position"));
    let stop = AtomicBool::new(false);
    let progress = Progress::default();
    let mut sink = Collect::default();
    let all: Vec<Op> = ops.iter().cloned().chain([Op::Poll, Op::Poll]).collect();
    let mut rest = &all[..];
    // The file the reader was in when it stopped last.
    let mut stopped_in: Option<usize> = None;
    loop {
        // Down.
        while let Some((op, more)) = rest.split_first() {
            if let Op::Poll = op {
                break;
            }
            world.apply(op, &sink.lines);
            rest = more;
        }
        if rest.is_empty() {
            break;
        }
        world.restarted(stopped_in);
        let keeper = Keeper::start(Checkpoint::new(args.position.clone().unwrap())).unwrap();
        let mut follower = Follower::new(&args, &stop, &mut sink, &progress, Some(keeper));
        let mut current = follower.resume().unwrap();
        // Up, until a restart.
        while let Some((op, more)) = rest.split_first() {
            rest = more;
            match op {
                Op::Poll => {
                    world.seen.extend(world.at_path);
                    poll(&mut follower, &mut current);
                }
                Op::Restart => break,
                op => world.apply(op, &follower.sink.lines),
            }
        }
        // The open file's inode cannot have been reused: the newest file with it is the one being read.
        stopped_in = current
            .as_ref()
            .and_then(|r| world.inodes.iter().rposition(|ino| *ino == r.ino));
        follower.close(&mut current).unwrap();
    }
    let streamed = sink.lines.iter().map(|l| number(l)).collect();
    (world, streamed)
}

fn check(ops: &[Op]) -> Result<(), String> {
    let (world, streamed) = play(ops);
    if let Some(pair) = streamed.windows(2).find(|w| w[0] >= w[1]) {
        return Err(format!(
            "line {} came out after line {}: {streamed:?}",
            pair[1], pair[0]
        ));
    }
    let got: BTreeSet<u64> = streamed.iter().copied().collect();
    let lost: Vec<u64> = world.owed().into_iter().filter(|n| !got.contains(n)).collect();
    if !lost.is_empty() {
        return Err(format!("lost lines {lost:?}; streamed {streamed:?}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_line_is_lost_or_repeated_whatever_happens_to_the_file(ops in proptest::collection::vec(op(), 1..40)) {
        if let Err(e) = check(&ops) {
            return Err(TestCaseError::fail(e));
        }
    }
}

#[test]
fn lines_written_to_the_old_file_after_a_rotation_are_read_before_the_new_file() {
    use Op::*;
    let ops = [Write(3), Poll, Write(2), Rotate, Write(2), Reopen, Write(2), Poll];
    check(&ops).unwrap();
    let (_, streamed) = play(&ops);
    assert_eq!(streamed, (0..9).collect::<Vec<_>>());
}

#[test]
fn a_truncated_file_is_read_again_from_its_start_even_when_refilled_past_the_old_offset() {
    use Op::*;
    let ops = [Write(5), Poll, Truncate, Write(9), Poll];
    check(&ops).unwrap();
    let (_, streamed) = play(&ops);
    assert_eq!(streamed, (0..14).collect::<Vec<_>>());
}

#[test]
fn a_deleted_file_is_read_to_its_end_while_the_path_is_missing() {
    use Op::*;
    let ops = [Write(2), Poll, Delete, Write(2), Poll, Write(1), Reopen, Write(1), Poll];
    let (_, streamed) = play(&ops);
    assert_eq!(streamed, (0..6).collect::<Vec<_>>());
}

/// The windows are real: a truncation before the follower looks takes the lines with it, and a file rotated
/// away before it ever looked is never read. The model excuses exactly these, nothing more.
#[test]
fn the_model_excuses_only_what_no_polling_tailer_can_see() {
    use Op::*;
    let (world, streamed) = play(&[Write(2), Poll, Write(3), Truncate, Write(1), Poll]);
    assert_eq!(streamed, [0, 1, 5]);
    assert_eq!(world.excused, BTreeSet::from([2, 3, 4]));
    let (world, streamed) = play(&[Write(2), Rotate, Reopen, Write(1), Poll]);
    assert_eq!(streamed, [2]);
    assert_eq!(world.owed(), [2]);
}

#[test]
fn a_file_truncated_and_rotated_while_the_reader_was_down_is_read_from_its_start() {
    use Op::*;
    let ops = [
        Write(2),
        Poll,
        Restart,
        Truncate,
        Write(2),
        Rotate,
        Reopen,
        Write(1),
        Poll,
    ];
    check(&ops).unwrap();
    let (_, streamed) = play(&ops);
    assert_eq!(streamed, (0..5).collect::<Vec<_>>());
}

#[test]
fn no_position_is_saved_over_a_file_truncated_since_the_last_read() {
    use Op::*;
    // Stopped after the truncation and a new line: a position saved then would name the new line's bytes and
    // resume in the middle of it.
    let ops = [Write(1), Poll, Truncate, Write(1), Restart, Write(1), Poll];
    check(&ops).unwrap();
    let (_, streamed) = play(&ops);
    assert_eq!(streamed, [0, 1, 2]);
}
