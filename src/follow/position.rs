//! The saved position of a reader: which file (its identity, not only its name) and how far its lines reached
//! stdout; and the pure decision of whether a file found at restart is that file.
//!
//! A name is not an identity: logrotate renames `access.log` to `access.log.1` and the app re-creates the name,
//! copytruncate keeps the inode and empties it, an app may delete and re-create its file. The identity is the
//! device and inode, plus the bytes just before the offset: an inode number can be reused by a new file, and a
//! truncated file refilled past the old offset has the same inode and size; only its content tells. Those bytes
//! are never given back to the filesystem (`super::keeper` punches holes only up to the block that holds them),
//! so they can be read again after a restart.
//!
//! The format is one JSON object, written whole (a temporary file renamed over the old one) by
//! `super::disk::Checkpoint`, which the keeper calls:
//! `{"version":1,"file":"/var/log/nginx/access.log","dev":2049,"ino":1234,"offset":5678,"before":"0a…"}`.

use serde::{Deserialize, Serialize};

/// How many bytes before the offset are kept to recognise the file (and compared while following).
pub const BEFORE_LEN: usize = 64;

/// The only version this build writes and reads.
const VERSION: u32 = 1;

/// Where a reader's lines reached stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// The format's version.
    pub version: u32,
    /// The path the reader follows (`--file`): a position saved for another path is not resumed.
    pub file: String,
    /// Device of the file that was being read (it may have been renamed since).
    pub dev: u64,
    /// Inode of that file.
    pub ino: u64,
    /// Bytes of it whose lines reached stdout.
    pub offset: u64,
    /// The (at most [`BEFORE_LEN`]) bytes just before `offset`, in hex.
    pub before: String,
}

/// Why a position file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    /// Not the JSON object above.
    #[error("not a position: {0}")]
    Garbled(String),
    /// A version this build does not know.
    #[error("position version {0} is not {VERSION}")]
    Version(u32),
    /// `before` is not hex, too long, or longer than the offset.
    #[error("position bytes {0:?} are not at most {BEFORE_LEN} hex-encoded bytes before the offset")]
    Before(String),
}

impl Position {
    /// A position `offset` bytes into the file `(dev, ino)` followed as `file`, whose bytes before the offset
    /// are `before` (only the last [`BEFORE_LEN`] are kept).
    pub fn new(file: &str, dev: u64, ino: u64, offset: u64, before: &[u8]) -> Position {
        let before = &before[before.len().saturating_sub(BEFORE_LEN)..];
        Position {
            version: VERSION,
            file: file.to_string(),
            dev,
            ino,
            offset,
            before: hex(before),
        }
    }

    /// Parses and checks a saved position.
    pub fn parse(text: &[u8]) -> Result<Position, PositionError> {
        let position: Position = serde_json::from_slice(text).map_err(|e| PositionError::Garbled(e.to_string()))?;
        if position.version != VERSION {
            return Err(PositionError::Version(position.version));
        }
        match unhex(&position.before) {
            Some(bytes) if bytes.len() <= BEFORE_LEN && bytes.len() as u64 <= position.offset => Ok(position),
            _ => Err(PositionError::Before(position.before.clone())),
        }
    }

    /// The text [`Position::parse`] reads back.
    pub fn render(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec(self).expect("a position serialises");
        text.push(b'\n');
        text
    }

    /// The bytes before the offset (checked by [`Position::parse`]).
    pub fn before_bytes(&self) -> Vec<u8> {
        unhex(&self.before).unwrap_or_default()
    }

    /// Whether the file described by `seen` is the one this position was saved for, and may be resumed at
    /// `offset`.
    pub fn assess(&self, seen: &Seen) -> Assessment {
        if (seen.dev, seen.ino) != (self.dev, self.ino) {
            return Assessment::OtherFile;
        }
        if seen.size < self.offset {
            return Assessment::Shrunk;
        }
        match &seen.before {
            Some(bytes) if *bytes == self.before_bytes() => Assessment::Resume(self.offset),
            _ => Assessment::Rewritten,
        }
    }
}

/// A file as found at restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// Its size.
    pub size: u64,
    /// Its bytes just before the saved offset (as many as the position keeps), if they could be read.
    pub before: Option<Vec<u8>>,
}

/// What a restart does with a file, given the saved position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assessment {
    /// The same file, with the same bytes before the offset: resume there.
    Resume(u64),
    /// Another inode: this is not the file that was being read.
    OtherFile,
    /// The same inode, now shorter than the offset: truncated (copytruncate) while the reader was down.
    Shrunk,
    /// The same inode and long enough, but other bytes before the offset: truncated and written again, or the
    /// inode number was reused by a new file.
    Rewritten,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(p: &Position, size: u64, before: &[u8]) -> Seen {
        Seen {
            dev: p.dev,
            ino: p.ino,
            size,
            before: Some(before.to_vec()),
        }
    }

    #[test]
    fn a_rendered_position_parses_back_to_itself_keeping_only_the_last_64_bytes() {
        let long: Vec<u8> = (0..=255u8).collect();
        let p = Position::new("/var/log/a b.log", 7, 42, 1000, &long);
        assert_eq!(p.before_bytes(), &long[256 - BEFORE_LEN..]);
        assert_eq!(Position::parse(&p.render()), Ok(p));
    }

    #[test]
    fn garbled_positions_are_refused_with_the_reason() {
        assert!(matches!(Position::parse(b""), Err(PositionError::Garbled(_))));
        assert!(matches!(
            Position::parse(b"{\"version\":1"),
            Err(PositionError::Garbled(_))
        ));
        let mut p = Position::new("/f", 1, 2, 3, b"abc");
        p.version = 2;
        assert_eq!(Position::parse(&p.render()), Err(PositionError::Version(2)));
        for before in ["zz", "abc", &"00".repeat(65)] {
            p = Position::new("/f", 1, 2, 100, b"");
            p.before = before.to_string();
            assert!(
                matches!(Position::parse(&p.render()), Err(PositionError::Before(_))),
                "{before}"
            );
        }
        // More bytes before the offset than the offset itself.
        p = Position::new("/f", 1, 2, 1, b"ab");
        assert!(matches!(Position::parse(&p.render()), Err(PositionError::Before(_))));
    }

    #[test]
    fn only_the_same_inode_with_the_same_bytes_before_the_offset_is_resumed() {
        let p = Position::new("/f", 1, 2, 10, b"line 0001\n");
        assert_eq!(p.assess(&seen(&p, 10, b"line 0001\n")), Assessment::Resume(10));
        assert_eq!(p.assess(&seen(&p, 99, b"line 0001\n")), Assessment::Resume(10));
        assert_eq!(p.assess(&seen(&p, 9, b"line 0001\n")), Assessment::Shrunk);
        assert_eq!(p.assess(&seen(&p, 20, b"other 001\n")), Assessment::Rewritten);
        let mut other = seen(&p, 10, b"line 0001\n");
        other.ino = 3;
        assert_eq!(p.assess(&other), Assessment::OtherFile);
        other = seen(&p, 10, b"");
        other.before = None;
        assert_eq!(p.assess(&other), Assessment::Rewritten);
    }
}
