//! The readers' own log lines on stderr, one JSON object each (`{"level":…,"msg":…,…}`): their stdout is the log
//! stream itself, and a collector reading the container parses these like the rest.

use std::io::Write as _;

/// Writes one event line to stderr.
pub fn log(level: &str, msg: &str, fields: &[(&str, &str)]) {
    let mut object = serde_json::Map::with_capacity(fields.len() + 2);
    object.insert("level".into(), level.into());
    object.insert("msg".into(), msg.into());
    for (key, value) in fields {
        object.insert((*key).into(), (*value).into());
    }
    let mut line = serde_json::to_vec(&object).expect("strings serialise");
    line.push(b'\n');
    // Nowhere left to report a failure to write to stderr.
    let _ = std::io::stderr().lock().write_all(&line);
}

/// A warning: something the operator should fix; the reader goes on.
pub fn warn(msg: &str, fields: &[(&str, &str)]) {
    log("warn", msg, fields);
}

/// Information: something expected that explains the output (a rotation, a fresh start).
pub fn info(msg: &str, fields: &[(&str, &str)]) {
    log("info", msg, fields);
}
